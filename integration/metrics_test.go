package integration

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Request accounting and Prometheus metrics: `tempfs status --json` counts FUSE requests by opcode
// and failures by errno, and `tempfs mount --metrics ADDR` serves them with the rest of the status at /metrics.

// statusJSON runs `tempfs status --json` on dir from a separate process and decodes what it printed.
func statusJSON(t testing.TB, dir string) map[string]any {
	t.Helper()
	r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", "--json", dir)
	if r.code != 0 {
		t.Fatalf("status --json: exit %d, stderr %q", r.code, r.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json printed %q: %v", r.stdout, err)
	}
	return st
}

// jsonPath follows keys through nested JSON objects; a missing key gives nil.
func jsonPath(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// jsonCount is the number at keys, 0 when it is missing (an opcode never seen is not listed).
func jsonCount(t testing.TB, v any, keys ...string) float64 {
	t.Helper()
	switch n := jsonPath(v, keys...).(type) {
	case nil:
		return 0
	case float64:
		return n
	default:
		t.Fatalf("%v is %v (%T), not a number", keys, n, n)
		return 0
	}
}

// TestStatusCountsRequests: a stat of a name that does not exist moves LOOKUP and its ENOENT; writing a new file
// moves CREATE and WRITE; removing it counts as unlink; every opcode's histogram holds all its requests.
func TestStatusCountsRequests(t *testing.T) {
	m := startMount(t)
	before := statusJSON(t, m.Dir)
	sh(t, m.Dir, "! test -e no-such-name")
	sh(t, m.Dir, "echo data > new && rm new")
	after := statusJSON(t, m.Dir)

	for _, tc := range []struct {
		keys []string
		min  float64
	}{
		{[]string{"requests", "by_opcode", "LOOKUP", "count"}, 2},
		{[]string{"requests", "by_opcode", "LOOKUP", "errors"}, 1},
		{[]string{"requests", "errors_by_errno", "ENOENT"}, 1},
		{[]string{"requests", "by_opcode", "CREATE", "count"}, 1},
		{[]string{"requests", "by_opcode", "WRITE", "count"}, 1},
		{[]string{"requests", "by_opcode", "UNLINK", "count"}, 1},
		{[]string{"removed", "unlink"}, 1},
		{[]string{"bytes_written"}, 5},
	} {
		if d := jsonCount(t, after, tc.keys...) - jsonCount(t, before, tc.keys...); d < tc.min {
			t.Errorf("%v moved by %v, want at least %v", tc.keys, d, tc.min)
		}
	}
	bounds, _ := jsonPath(after, "requests", "bucket_bounds_us").([]any)
	ops, _ := jsonPath(after, "requests", "by_opcode").(map[string]any)
	var total float64
	for op := range ops {
		count := jsonCount(t, ops, op, "count")
		total += count
		hist, _ := jsonPath(ops, op, "histogram").([]any)
		var inHist float64
		for _, n := range hist {
			inHist += n.(float64)
		}
		if len(hist) != len(bounds)+1 || inHist != count {
			t.Errorf("%s: %v requests, histogram %v over %d bounds", op, count, hist, len(bounds))
		}
	}
	if total != jsonCount(t, after, "requests", "total") || total == 0 {
		t.Errorf("opcodes add up to %v requests, total says %v", total, jsonCount(t, after, "requests", "total"))
	}
	if _, ok := jsonPath(after, "metrics_address").(string); ok {
		t.Errorf("metrics_address shown without --metrics: %v", after["metrics_address"])
	}
}

// scrape GETs http://addr/metrics and returns its samples: "name{labels}" -> value, as the exposition prints
// them (client_golang puts le after the other labels).
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v\n%s", resp.Status, err, body)
	}
	samples := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape: bad line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

// TestMetricsScrape: a mount with --metrics 127.0.0.1:0 says where it serves (status --json and its log), and a
// scrape over HTTP sees the counters and gauges move with work done through the mount by another process.
func TestMetricsScrape(t *testing.T) {
	m := startMount(t, "--metrics", "127.0.0.1:0", "--max-size", "64KiB")
	addr, _ := statusJSON(t, m.Dir)["metrics_address"].(string)
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("metrics_address = %q, want the bound 127.0.0.1:PORT", addr)
	}
	if !strings.Contains(m.Log(), "http://"+addr+"/metrics") {
		t.Errorf("the daemon's log does not name http://%s/metrics:\n%s", addr, m.Log())
	}
	before := scrape(t, addr)
	for _, name := range []string{`tempfs_ram_cap_bytes`, `tempfs_names_removed_total{cause="owner_gone"}`, `process_open_fds`} {
		if _, ok := before[name]; !ok {
			t.Errorf("the first scrape lacks %s", name)
		}
	}

	sh(t, m.Dir, `
		! test -e missing
		head -c 100000 /dev/zero > big         # past --max-size: rolled over to disk
		echo hello > kept && cat kept >/dev/null
		mkdir d && rmdir d
		exec 3>jobXXXXXX; exec 3>&-             # a template file, gone at its last close
	`)
	eventually(t, 10*time.Second, "the template file goes at its last close", func() bool {
		return scrape(t, addr)[`tempfs_names_removed_total{cause="last_close"}`] >= 1
	})
	after := scrape(t, addr)

	for _, tc := range []struct {
		name string
		min  float64
	}{
		{`tempfs_fuse_request_duration_seconds_count{opcode="LOOKUP"}`, 1},
		{`tempfs_fuse_request_duration_seconds_bucket{opcode="LOOKUP",le="+Inf"}`, 1},
		{`tempfs_fuse_request_duration_seconds_count{opcode="CREATE"}`, 3},
		{`tempfs_fuse_request_duration_seconds_count{opcode="WRITE"}`, 2},
		{`tempfs_fuse_request_duration_seconds_count{opcode="MKDIR"}`, 1},
		{`tempfs_fuse_request_errors_total{opcode="LOOKUP"}`, 1},
		{`tempfs_fuse_errors_total{errno="ENOENT"}`, 1},
		{`tempfs_written_bytes_total`, 100006},
		{`tempfs_entries_created_total`, 4},
		{`tempfs_names_removed_total{cause="unlink"}`, 1},
		{`tempfs_names_removed_total{cause="last_close"}`, 1},
		{`tempfs_rollovers_total`, 1},
		{`tempfs_entries{kind="file"}`, 2},
		{`tempfs_files{tier="disk"}`, 1},
		{`tempfs_disk_bytes`, 100000},
	} {
		if d := after[tc.name] - before[tc.name]; d < tc.min {
			t.Errorf("%s moved by %v (from %v to %v), want at least %v", tc.name, d, before[tc.name], after[tc.name], tc.min)
		}
	}
	for name := range after {
		if strings.Contains(name, "big") || strings.Contains(name, "kept") || strings.Contains(name, "job") {
			t.Errorf("a file name in a label: %s", name)
		}
	}
}

// TestMetricsBadAddress: a busy or malformed --metrics address fails the mount before anything is mounted, with
// one line on stderr and exit status 2. With --daemon, so that a mount made by mistake cannot hang the test.
func TestMetricsBadAddress(t *testing.T) {
	requireFUSE(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		addr, want string
	}{
		{busy.Addr().String(), "address already in use"},
		{"http://localhost:9100", "not an address"},
		{"70000", "port"},
		{"", "empty address"},
	} {
		dir := t.TempDir()
		r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "mount", "--daemon", "--metrics", tc.addr, "--store", t.TempDir(), dir)
		if isMounted(dir) {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Errorf("--metrics %q: mounted", tc.addr)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--metrics") {
			t.Errorf("--metrics %q: exit %d, stderr %q; want 2 and one line about --metrics with %q", tc.addr, r.code, r.stderr, tc.want)
		}
	}
}
