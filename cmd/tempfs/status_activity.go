package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

// busiestShown is how many opcodes the human status lists; --json has them all.
const busiestShown = 6

// writeActivity adds the rows of what the daemon did since it mounted: names removed by cause, bytes read, and
// FUSE requests with the busiest opcodes. row writes one tab-separated line.
func writeActivity(row func(label, format string, args ...any), a tempfs.Activity) {
	row("names removed", "%d at last close, %d by --max-age, %d by unlink or rmdir, %d with their owner",
		a.Removed["last_close"], a.Removed["max_age"], a.Removed["unlink"], a.Removed["owner_gone"])
	row("read", "%s (served by the daemon)", naming.FormatSize(a.BytesRead))
	r := a.Requests
	failures := map[string]uint64{}
	for name, n := range r.ErrorsByErrno {
		if n > r.ExpectedByErrno[name] {
			failures[name] = n - r.ExpectedByErrno[name]
		}
	}
	expected := ""
	if r.Expected > 0 {
		expected = fmt.Sprintf("; %d expected answers%s (ENOENT to a lookup, ENODATA or ERANGE to a getxattr, a first ENOSYS)",
			r.Expected, errnoSummary(r.ExpectedByErrno))
	}
	row("requests", "%d since mount, %d failed%s%s", r.Total, r.Errors-r.Expected, errnoSummary(failures), expected)
	for _, op := range busiestOpcodes(r.ByOpcode, busiestShown) {
		s := r.ByOpcode[op]
		row("  "+op, "%d, %d failed, %d expected, median %s, p99 %s, %s in all", s.Count, s.Errors-s.Expected, s.Expected,
			micros(s.P50Micros), micros(s.P99Micros), (time.Duration(s.HandlerSeconds * float64(time.Second))).Round(time.Microsecond))
	}
	if a.MetricsAddress != "" {
		row("metrics", "http://%s/metrics", a.MetricsAddress)
	}
}

// busiestOpcodes are the n opcodes with the most requests, busiest first (by name on a tie).
func busiestOpcodes(by map[string]tempfs.OpcodeStats, n int) []string {
	ops := slices.Collect(maps.Keys(by))
	slices.SortFunc(ops, func(a, b string) int {
		return cmp.Or(cmp.Compare(by[b].Count, by[a].Count), strings.Compare(a, b))
	})
	return ops[:min(n, len(ops))]
}

// errnoSummary is " (ENOENT 12, ENODATA 3)", the most frequent first, or "" when nothing failed.
func errnoSummary(by map[string]uint64) string {
	if len(by) == 0 {
		return ""
	}
	names := slices.Collect(maps.Keys(by))
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(by[b], by[a]), strings.Compare(a, b)) })
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %d", name, by[name])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// micros shows a duration given in microseconds: 3µs, 1.5ms.
func micros(us float64) string {
	d := time.Duration(us * float64(time.Microsecond))
	if d >= time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(100 * time.Nanosecond).String()
}
