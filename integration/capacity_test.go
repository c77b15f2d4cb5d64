package integration

// Capacity (docs/guarantees.md, The spool): more files than the daemon has descriptors, ENOSPC (never
// EMFILE) at a real limit, sparse files under --disk, disk_bytes that follows passthrough writes, a store
// deleted while mounted, and a default --memory that follows the cgroup limit.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// limitDescriptors sets the running daemon's RLIMIT_NOFILE, as a user's hard limit would bound it (the
// daemon runs as root here and would raise a limit given at its start to fs.nr_open).
func limitDescriptors(t testing.TB, m *mount, n uint64) {
	t.Helper()
	lim := unix.Rlimit{Cur: n, Max: n}
	if err := unix.Prlimit(m.Pid(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("prlimit --nofile=%d on the daemon: %v", n, err)
	}
}

// daemonFds counts the descriptors the daemon has open.
func daemonFds(t testing.TB, m *mount) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", m.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// python runs a Python script from a separate process and returns its output.
func python(t testing.TB, script string, args ...string) string {
	t.Helper()
	out, err := exec.Command("python3", append([]string{"-c", script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return string(out)
}

// manyFilesScript makes, checks and removes N files of 1 byte to 4 KiB in DIR, one phase per call:
// "create", "check" (read back and list) or "remove".
const manyFilesScript = `
import os, sys
d, n, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def content(i):
    return bytes([i % 251 + 1]) * (1 + (i * 7919) % 4096)
if phase == "create":
    os.mkdir(d)
    for i in range(n):
        with open("%s/f%07d" % (d, i), "wb") as f:
            f.write(content(i))
elif phase == "check":
    for i in range(n):
        with open("%s/f%07d" % (d, i), "rb") as f:
            if f.read() != content(i):
                sys.exit("f%07d: wrong content" % i)
    names = os.listdir(d)
    if len(names) != n:
        sys.exit("listed %d names, want %d" % (len(names), n))
elif phase == "remove":
    for i in range(n):
        os.unlink("%s/f%07d" % (d, i))
    os.rmdir(d)
print("ok")
`

// TestManyFilesFewDescriptors is the scaled-down form of the million-file run: 30,000 files of 1 byte to
// 4 KiB under a daemon whose descriptor limit is 1,024 are created, read back, listed and removed, with
// every file in RAM, the daemon's descriptors far under the limit and nothing refused.
func TestManyFilesFewDescriptors(t *testing.T) {
	const n, limit = 30000, 1024
	m := startMount(t)
	limitDescriptors(t, m, limit)
	var sfs unix.Statfs_t
	if err := unix.Statfs(m.Dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Ffree < n || sfs.Files < sfs.Ffree {
		t.Fatalf("statfs: f_files %d, f_ffree %d; want room for %d files", sfs.Files, sfs.Ffree, n)
	}
	dir := m.Path("many")
	for _, phase := range []string{"create", "check"} {
		if out := python(t, manyFilesScript, dir, strconv.Itoa(n), phase); strings.TrimSpace(out) != "ok" {
			t.Fatalf("%s: %s", phase, out)
		}
	}
	s := spoolGetStats(t, m)
	fds := daemonFds(t, m)
	t.Logf("%d files: daemon holds %d descriptors (%d arena memfds), ram_bytes %d", n, fds, s.ArenaMemfds, s.RAMBytes)
	if s.Files != n || s.ArenaFiles != n || s.DescriptorLimitHits != 0 || s.DescriptorLimit != limit {
		t.Errorf("status with %d small files: %+v", n, s)
	}
	if fds > 100 {
		t.Errorf("the daemon holds %d descriptors for %d small files, want a few dozen", fds, n)
	}
	if err := unix.Statfs(m.Dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if used := sfs.Files - sfs.Ffree; used < n {
		t.Errorf("statfs with %d files: f_files %d - f_ffree %d = %d used", n, sfs.Files, sfs.Ffree, used)
	}
	if out := python(t, manyFilesScript, dir, strconv.Itoa(n), "remove"); strings.TrimSpace(out) != "ok" {
		t.Fatalf("remove: %s", out)
	}
	eventually(t, 10*time.Second, "RAM and the arena empty after removing every file", func() bool {
		s := spoolGetStats(t, m)
		return s.Files == 0 && s.ArenaFiles == 0 && s.RAMBytes == 0
	})
}

// TestDescriptorLimitAnswersENOSPC: when the daemon is really out of descriptors, a write that needs one
// (a RAM file larger than the arena's) fails with ENOSPC, not EMFILE; the cause is logged once and
// counted; small files still fit; and room comes back when files go.
func TestDescriptorLimitAnswersENOSPC(t *testing.T) {
	m := startMount(t)
	if err := os.WriteFile(m.Path("warm"), []byte("x"), 0o600); err != nil { // the smallest slots' memfd
		t.Fatal(err)
	}
	limitDescriptors(t, m, uint64(daemonFds(t, m)+8))
	big := make([]byte, 100<<10)
	var made []string
	var lastErr error
	for i := range 64 {
		name := m.Path(fmt.Sprintf("big%02d", i))
		if lastErr = os.WriteFile(name, big, 0o600); lastErr != nil {
			break
		}
		made = append(made, name)
	}
	if !errors.Is(lastErr, syscall.ENOSPC) {
		t.Fatalf("after %d files of 100 KiB under a low descriptor limit: %v, want ENOSPC", len(made), lastErr)
	}
	if err := os.WriteFile(m.Path("small"), []byte("still fits"), 0o600); err != nil {
		t.Errorf("a small file with the daemon out of descriptors: %v", err)
	}
	// More refusals are counted but not logged again.
	for range 3 {
		if err := os.WriteFile(m.Path("big-again"), big, 0o600); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("again: %v, want ENOSPC", err)
		}
	}
	s := spoolGetStats(t, m)
	if s.DescriptorLimitHits < 4 {
		t.Errorf("descriptor_limit_hits = %d after 4 refusals", s.DescriptorLimitHits)
	}
	if got := strings.Count(m.LogWith("out of descriptors"), "out of descriptors"); got != 1 {
		t.Errorf("the log says %d times that the daemon is out of descriptors, want once:\n%s", got, m.Log())
	}
	for _, name := range append(made, m.Path("big-again")) {
		os.Remove(name)
	}
	eventually(t, 10*time.Second, "a 100 KiB file fits again once the others are gone", func() bool {
		return os.WriteFile(m.Path("big-last"), big, 0o600) == nil
	})
}

// TestSparseFilesUnderDiskCap: --disk counts allocated bytes, as tmpfs's size= does: a 1-byte write at
// 10 GiB and a truncate to 5 GiB fit under --disk 1MiB, disk_bytes shows a few KiB, and data past the cap
// is still refused.
func TestSparseFilesUnderDiskCap(t *testing.T) {
	m := startMount(t, "--max-size", "4K", "--disk", "1MiB")
	f, err := os.OpenFile(m.Path("sparse"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{1}, 10<<30); err != nil {
		t.Fatalf("1-byte pwrite at 10 GiB under --disk 1MiB: %v", err)
	}
	if err := os.Truncate(m.Path("sparse"), 5<<30); err != nil {
		t.Fatalf("ftruncate to 5 GiB under --disk 1MiB: %v", err)
	}
	if err := os.WriteFile(m.Path("truncated"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.Path("truncated"), 5<<30); err != nil {
		t.Fatalf("truncate -s 5G of a new file under --disk 1MiB: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(m.Path("truncated"), &st); err != nil || st.Size != 5<<30 || st.Blocks > 16 {
		t.Errorf("stat of the truncated file: size %d, blocks %d, %v", st.Size, st.Blocks, err)
	}
	s := spoolGetStats(t, m)
	if s.DiskBytes > 64<<10 {
		t.Errorf("disk_bytes = %d for two sparse files with one byte of data; want a few KiB", s.DiskBytes)
	}
	if _, err := f.WriteAt(make([]byte, 2<<20), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("2 MiB of data under --disk 1MiB: %v, want ENOSPC", err)
	}
}

// TestDiskBytesFollowPassthroughWrites: a disk file reopened with O_APPEND and written through passthrough
// (the daemon never sees the writes) shows up in disk_bytes, peak_disk_bytes and disk_written_bytes.
func TestDiskBytesFollowPassthroughWrites(t *testing.T) {
	m := startMount(t, "--max-size", "64KiB")
	if err := os.WriteFile(m.Path("log"), make([]byte, 128<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if !*spoolGetStats(t, m).Passthrough {
		t.Skip("passthrough is off on this kernel: every write is the daemon's")
	}
	f, err := os.OpenFile(m.Path("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i%250 + 1)
	}
	for range 10 {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// Still open: status must see the writes without waiting for the close.
	s := spoolGetStats(t, m)
	if s.DiskBytes < 10<<20 || s.PeakDiskBytes < s.DiskBytes || s.DiskWrittenBytes < 10<<20 {
		t.Errorf("after 10 MiB appended by passthrough: disk_bytes %d, peak %d, written %d; want all >= 10 MiB",
			s.DiskBytes, s.PeakDiskBytes, s.DiskWrittenBytes)
	}
	f.Close()
	os.Remove(m.Path("log"))
	eventually(t, 10*time.Second, "disk_bytes back to 0 after removing the file", func() bool {
		return spoolGetStats(t, m).DiskBytes == 0
	})
	if s := spoolGetStats(t, m); s.PeakDiskBytes < 10<<20 {
		t.Errorf("peak_disk_bytes = %d after the file went, want the 10 MiB it reached", s.PeakDiskBytes)
	}
}

// TestStoreDeletedWhileMounted: a store directory removed under a live mount is made again (private,
// under the same parent) when a file next needs the disk; with its parent gone too, such a write fails
// with ENOSPC (never EPERM), once logged, and status says why. Files already on disk keep working.
func TestStoreDeletedWhileMounted(t *testing.T) {
	dir, parent := t.TempDir(), t.TempDir()
	storeParent := filepath.Join(parent, "store")
	if err := os.Mkdir(storeParent, 0o700); err != nil {
		t.Fatal(err)
	}
	m := startMountAt(t, dir, storeParent, "--max-size", "4K")
	onDisk := make([]byte, 8<<10)
	if err := os.WriteFile(m.Path("early"), onDisk, 0o600); err != nil {
		t.Fatal(err)
	}
	first := spoolGetStats(t, m).Store
	if err := os.RemoveAll(first); err != nil {
		t.Fatal(err)
	}
	if s := spoolGetStats(t, m); s.StoreError == "" {
		t.Errorf("status says nothing of a deleted store: %+v", s)
	}
	if err := os.WriteFile(m.Path("after-delete"), onDisk, 0o600); err != nil {
		t.Fatalf("rollover after the store was deleted: %v", err)
	}
	s := spoolGetStats(t, m)
	if s.StoreRecreated != 1 || s.Store == first || s.StoreError != "" {
		t.Errorf("after the store was made again: %+v (first %s)", s, first)
	}
	if st, err := os.Stat(s.Store); err != nil || st.Mode().Perm() != 0o700 || filepath.Dir(s.Store) != storeParent {
		t.Errorf("new store %s: %v, %v; want a 0700 directory in %s", s.Store, st, err, storeParent)
	}

	// Now the parent goes too: nothing safe to make a store in.
	if err := os.RemoveAll(storeParent); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := os.WriteFile(m.Path(fmt.Sprintf("no-store-%d", i)), onDisk, 0o600)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("rollover with no store possible: %v, want ENOSPC", err)
		}
	}
	if s := spoolGetStats(t, m); s.StoreError == "" {
		t.Errorf("status says nothing of an unusable store: %+v", s)
	}
	if got := strings.Count(m.LogWith("disk store is unusable"), "disk store is unusable"); got != 1 {
		t.Errorf("logged %d times that the store is unusable, want once:\n%s", got, m.Log())
	}
	// Files on disk before keep working, and small files fit in RAM.
	if err := os.WriteFile(m.Path("after-delete"), onDisk[:6<<10], 0o600); err != nil {
		t.Errorf("rewriting a disk file with the store gone: %v", err)
	}
	if err := os.WriteFile(m.Path("small"), []byte("ram"), 0o600); err != nil {
		t.Errorf("a small file with the store gone: %v", err)
	}
	// The harness checks that no store is left under the parent: give it back an empty one.
	if err := os.Mkdir(storeParent, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultMemoryFollowsCgroup: a daemon started in a cgroup v1 memory cgroup limited to 256 MiB takes a
// quarter of that as its default --memory, and status says so. (Made with the hybrid hierarchy of this
// machine kind; where no v1 memory hierarchy is mounted, the unit tests of package limits cover v2.)
func TestDefaultMemoryFollowsCgroup(t *testing.T) {
	requireFUSE(t)
	memRoot := cgroupV1MemoryMount(t)
	cg := filepath.Join(memRoot, fmt.Sprintf("tempfs-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		eventually(t, 10*time.Second, "the test cgroup can be removed", func() bool { return syscall.Rmdir(cg) == nil })
	})
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte("268435456"), 0); err != nil {
		t.Skipf("cannot limit the test cgroup: %v", err)
	}
	// The daemon (tempfs run, which serves the mount itself) joins the cgroup before it starts, and runs
	// tempfs status on its own scratch directory.
	cmd := exec.Command("sh", "-ec", `echo $$ > "$1/cgroup.procs"; exec "$2" run -- sh -c '"$0" status --json "$TMPDIR"' "$2"`, "sh", cg, tempfsBin)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tempfs run in a limited cgroup: %v\n%s", err, out)
	}
	var s spoolStats
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("status JSON %q: %v", out, err)
	}
	if s.RAMCap != 64<<20 || !strings.Contains(s.RAMCapSource, "cgroup") {
		t.Errorf("ram_cap %d from %q in a 256 MiB cgroup; want 64 MiB from the cgroup limit", s.RAMCap, s.RAMCapSource)
	}
}

// cgroupV1MemoryMount finds the v1 memory hierarchy in /proc/self/mountinfo (never assuming its path).
func cgroupV1MemoryMount(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			if f == "-" && i+3 < len(fields) && fields[i+1] == "cgroup" && strings.Contains(","+fields[i+3]+",", ",memory,") && fields[3] == "/" {
				return fields[4]
			}
		}
	}
	t.Skip("no cgroup v1 memory hierarchy mounted at its root")
	return ""
}

// TestRunReportShowsDiskUse: tempfs run --report says how much went to disk and the peak, so that --disk can
// be sized from a run (it said "spilled 0 B" for 8 MiB written past --max-size).
func TestRunReportShowsDiskUse(t *testing.T) {
	requireFUSE(t)
	cmd := exec.Command(tempfsBin, "run", "--report", "--max-size", "4K", "--", "sh", "-c", `head -c 8388608 /dev/urandom > "$TMPDIR/x"`)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tempfs run: %v\n%s", err, out)
	}
	for _, label := range []string{"peak disk", "written to disk"} {
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), label) {
				line = l
			}
		}
		if !strings.Contains(line, "8 MiB") && !strings.Contains(line, "8.0 MiB") {
			t.Errorf("report's %q line %q does not show the 8 MiB written:\n%s", label, line, out)
		}
	}
}
