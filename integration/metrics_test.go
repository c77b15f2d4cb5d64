package integration

import (
	"encoding/json"
	"testing"
)

// Request accounting and Prometheus metrics (issue 13): `tempfs status --json` counts FUSE requests by opcode
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
