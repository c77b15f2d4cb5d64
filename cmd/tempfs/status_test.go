package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	tempfs "github.com/tempfs/tempfs/fs"
)

func TestWriteStatus(t *testing.T) {
	st := tempfs.Stats{
		Entries: 6, Files: 4, Dirs: 1, Others: 1, EphemeralFiles: 2, TemplateEntries: 9, OpenHandles: 3,
		RAMBytes: 3 << 20, RAMCap: 1 << 30, PeakRAMBytes: 5 << 20, DiskBytes: 7 << 20, DiskCap: 0,
		MemoryFiles: 3, DiskFiles: 1, Rollovers: 4, SpilledBytes: 8 << 20, Passthrough: true, DirectWrites: true,
		MaxSize: 1 << 20, Store: "/tmp/tempfs-store-abc", UptimeSeconds: 3723.4,
		PeakDiskBytes: 9 << 20, DiskWrittenBytes: 11 << 20, RAMCapSource: "a quarter of host RAM 24 GiB",
		ArenaFiles: 2, ArenaMemfds: 1, Descriptors: 2, DescriptorLimit: 1024, DescriptorLimitHits: 5,
	}
	out := wantStatusLines(t, st, map[string]string{
		"mountpoint":      "/scratch",
		"entries":         "6 (4 files, 1 directory, 1 other)",
		"ephemeral files": "2",
		"open handles":    "3",
		"RAM":             "3 MiB of 1 GiB (1021 MiB free, peak 5 MiB), 3 files",
		"disk":            "7 MiB, no cap (up to the store's free space), 1 file",
		"rollovers":       "4 (8 MiB spilled to disk)",
		"passthrough":     "on, not used yet",
		"direct writes":   "on (write-only handles bypass the page cache)",
		"store":           "/tmp/tempfs-store-abc",
		"uptime":          "1h2m3s",
		"disk peak":       "9 MiB (11 MiB written to disk in all",
		"RAM cap":         "a quarter of host RAM 24 GiB",
		"small files":     "2 RAM files kept together in 1 shared memfd",
		"descriptors":     "2 held by files, limit 1024; 5 operations refused",
	})
	if strings.Contains(out, "store problem") {
		t.Errorf("a store problem shown without one:\n%s", out)
	}
	st.Passthrough, st.DiskCap = false, 10<<30
	st.StoreError = "spool: store parent /tmp: no such file or directory"
	wantStatusLines(t, st, map[string]string{
		"store problem": st.StoreError,
		"passthrough":   "off (--disk is set",
		"disk":          "7 MiB of 10 GiB (10 GiB free)",
	})
	// Almost full: the few bytes left must not read as none.
	st.RAMBytes = st.RAMCap - 8752
	wantStatusLines(t, st, map[string]string{"RAM": "1 GiB of 1 GiB (8.5 KiB free"})
}

func TestStatusJSONNoDiskCap(t *testing.T) {
	for _, tc := range []struct {
		cap  tempfs.Cap
		want string
	}{{0, `"disk_cap":null`}, {10 << 30, `"disk_cap":10737418240`}} {
		raw, err := json.Marshal(tempfs.Stats{DiskCap: tc.cap})
		if err != nil || !strings.Contains(string(raw), tc.want) {
			t.Errorf("disk cap %d: %s, %v; want %s", tc.cap, raw, err, tc.want)
		}
		var back tempfs.Stats
		if err := json.Unmarshal(raw, &back); err != nil || back.DiskCap != tc.cap {
			t.Errorf("disk cap %d read back as %d, %v", tc.cap, back.DiskCap, err)
		}
	}
}

func TestStatusOfPlainDirectoryIsUsageError(t *testing.T) {
	err := runStatus(&statusOptions{}, t.TempDir(), &bytes.Buffer{})
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != exitUsage {
		t.Fatalf("status of a plain directory: %v, want exit status 2", err)
	}
	if !strings.Contains(exit.err.Error(), "not a tempfs mount") {
		t.Errorf("message %q does not say it is not a tempfs mount", exit.err)
	}
}

func TestWriteStatusActivity(t *testing.T) {
	var st tempfs.Stats
	st.Removed = map[string]int64{"last_close": 7, "max_age": 2, "unlink": 5, "owner_gone": 0}
	st.BytesRead = 3 << 20
	st.Requests = tempfs.RequestStats{Total: 115, Errors: 12, Expected: 9,
		ByOpcode: map[string]tempfs.OpcodeStats{
			"LOOKUP": {Count: 50, Errors: 10, Expected: 8, P50Micros: 3.2, P99Micros: 1500, HandlerSeconds: 0.002},
			"CREATE": {Count: 40}, "WRITE": {Count: 10}, "GETATTR": {Count: 5}, "OPEN": {Count: 4}, "READ": {Count: 3},
			"FLUSH": {Count: 2, Errors: 2, Expected: 1}, "STATFS": {Count: 1},
		},
		ErrorsByErrno:   map[string]uint64{"ENOENT": 10, "ENOSYS": 2},
		ExpectedByErrno: map[string]uint64{"ENOENT": 8, "ENOSYS": 1},
	}
	st.MetricsAddress = "127.0.0.1:9123"
	out := wantStatusLines(t, st, map[string]string{
		"names removed": "7 at last close, 2 by --max-age, 5 by unlink or rmdir, 0 with their owner",
		"read":          "3 MiB",
		"requests":      "115 since mount, 3 failed (ENOENT 2, ENOSYS 1); 9 expected answers (ENOENT 8, ENOSYS 1) (ENOENT to a lookup, ENODATA or ERANGE to a getxattr, a first ENOSYS)",
		"  LOOKUP":      "50, 2 failed, 8 expected, median 3.2µs, p99 1.5ms, 2ms in all",
		"metrics":       "http://127.0.0.1:9123/metrics",
	})
	// The busiest six, in order; the rest only in --json.
	lookup, create, read := strings.Index(out, "  LOOKUP"), strings.Index(out, "  CREATE"), strings.Index(out, "  READ ")
	if lookup < 0 || create < lookup || read < create || strings.Contains(out, "FLUSH") || strings.Contains(out, "STATFS") {
		t.Errorf("busiest opcodes not listed busiest first, six at most:\n%s", out)
	}
}

// wantStatusLines writes the status of st and checks that the line of each label holds what is wanted; it
// returns the status.
func wantStatusLines(t *testing.T, st tempfs.Stats, want map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	writeStatus(&buf, "/scratch", st)
	out := buf.String()
	for label, w := range want {
		if line := lineWith(out, label); !strings.Contains(line, w) {
			t.Errorf("%s line %q lacks %q:\n%s", label, line, w, out)
		}
	}
	return out
}

func TestWriteOwners(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report tempfs.OwnersReport
		want   []string
	}{
		{"none", tempfs.OwnersReport{Scope: "none"}, []string{"/scratch has no owners (mounted without --owner)"}},
		{"some", tempfs.OwnersReport{Scope: "session", Omitted: 3, Owners: []tempfs.OwnerUsage{
			{Owner: "session 4100 bash", Entries: 12, RAMBytes: 3 << 20, DiskBytes: 1 << 30},
			{Owner: "session 77 cron", Entries: 1, RAMBytes: 4096},
		}}, []string{
			"OWNER              ENTRIES  RAM    DISK",
			"session 4100 bash  12       3 MiB  1 GiB",
			"session 77 cron    1        4 KiB  0 B",
			"(3 more owners with fewer bytes not listed)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			writeOwners(&buf, "/scratch", tc.report)
			got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestWriteStatusOwners(t *testing.T) {
	var buf bytes.Buffer
	writeStatus(&buf, "/scratch", tempfs.Stats{OwnerScope: "cgroup", OwnersLive: 2, OwnersGone: 5, EntriesRemovedWithOwner: 31, NamesRemovedWithOwner: 33})
	if line := lineWith(buf.String(), "owners"); !strings.Contains(line, "cgroup: 2 live, 5 gone, 31 entries (33 names) removed with their owner") {
		t.Errorf("owners line %q", line)
	}
	buf.Reset()
	writeStatus(&buf, "/scratch", tempfs.Stats{OwnerScope: "none"})
	if strings.Contains(buf.String(), "owners") {
		t.Errorf("an owners line without owners:\n%s", buf.String())
	}
}
