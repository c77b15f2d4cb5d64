package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Requests per operation: the tempfs daemon counts the FUSE requests it serves by opcode
// (user.tempfs.stats, requests.by_opcode). Read before and after each run of a workload on the tempfs target,
// they give the requests one operation costs, a figure that does not depend on how fast or busy the machine is.

// asyncOpcodes are answered without a caller waiting for them (the kernel sends them in the background).
var asyncOpcodes = map[string]bool{"RELEASE": true, "RELEASEDIR": true, "FORGET": true}

// workloadRequests are the requests counted over the runs of one workload, and the operations those runs did.
type workloadRequests struct {
	what, unit string
	ops        float64
	counts     map[string]float64
}

// requestTally holds workloadRequests in the order the workloads ran.
type requestTally struct {
	order []*workloadRequests
}

func (r *requestTally) of(what, unit string) *workloadRequests {
	for _, w := range r.order {
		if w.what == what {
			return w
		}
	}
	w := &workloadRequests{what: what, unit: unit, counts: map[string]float64{}}
	r.order = append(r.order, w)
	return w
}

// operations is what one operation of a workload is, and how many one run does; a workload not named here is
// counted per run.
func (b *bench) operations(what string) (unit string, n int) {
	c := b.cfg
	switch what {
	case "small cycle, template", "small cycle, ordinary names":
		return "cycle", c.smallN
	case "sequential file":
		return "MiB (written once, read twice)", int(c.bigSize / mib)
	case "RAM-sized files":
		return fmt.Sprintf("%s file (written, read, unlinked)", size(int64(c.ramSize))), c.ramFiles
	case "empty files":
		return "file (created, listed, stat'ed, unlinked)", c.emptyN
	}
	return "run", 1
}

// countRequests runs fn; on the tempfs target it adds the requests the daemon served meanwhile to the tally of
// what.
func (b *bench) countRequests(t *target, what string, fn func()) {
	var c requestCounter
	c.around(t, fn)
	unit, n := b.operations(what)
	c.addTo(&b.requests, what, unit, n)
}

// requestCounter adds up the requests the tempfs daemon serves while functions run (on other targets it only
// runs them).
type requestCounter struct {
	counts map[string]float64
	// missing: the counters could not be read (an older tempfs without them), so there is nothing to show.
	missing bool
}

// around runs fn and, on tempfs, counts the requests served meanwhile. The getxattr that reads the counters
// before is itself counted after: one GETXATTR is taken off.
func (c *requestCounter) around(t *target, fn func()) {
	if !t.tempfs {
		fn()
		return
	}
	before, err := readTempfsStats(t.dir)
	fn()
	after, err2 := readTempfsStats(t.dir)
	if err != nil || err2 != nil || after.Requests.ByOpcode == nil {
		c.missing = true
		return
	}
	if c.counts == nil {
		c.counts = map[string]float64{}
	}
	for op, s := range after.Requests.ByOpcode {
		c.counts[op] += s.Count - before.Requests.ByOpcode[op].Count
	}
	c.counts["GETXATTR"]--
}

// addTo adds what was counted, as ops operations, to the tally of what.
func (c *requestCounter) addTo(r *requestTally, what, unit string, ops int) {
	if c.missing || c.counts == nil {
		return
	}
	w := r.of(what, unit)
	w.ops += float64(ops)
	for op, n := range c.counts {
		w.counts[op] += n
	}
}

// print prints, for each workload, the synchronous requests per operation and the opcodes that make
// them up (those of at least 0.05 per operation), then the asynchronous ones.
func (r *requestTally) print(out io.Writer) {
	if len(r.order) == 0 {
		return
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "FUSE requests per operation on tempfs, from the daemon's counters before and after each run (synchronous:")
	fmt.Fprintln(out, "the caller waits for them; RELEASE, RELEASEDIR and FORGET are sent in the background):")
	for _, w := range r.order {
		if w.ops == 0 {
			continue
		}
		var sync float64
		var syncOps, asyncOps []string
		ops := slices.Collect(maps.Keys(w.counts))
		slices.SortFunc(ops, func(a, c string) int { return cmp.Or(cmp.Compare(w.counts[c], w.counts[a]), strings.Compare(a, c)) })
		for _, op := range ops {
			per := w.counts[op] / w.ops
			if !asyncOpcodes[op] {
				sync += per
			}
			if per < 0.05 {
				continue
			}
			item := fmt.Sprintf("%s %.1f", op, per)
			if asyncOpcodes[op] {
				asyncOps = append(asyncOps, item)
			} else {
				syncOps = append(syncOps, item)
			}
		}
		line := fmt.Sprintf("  %s: %.1f requests per %s: %s", w.what, sync, w.unit, strings.Join(syncOps, ", "))
		if len(asyncOps) > 0 {
			line += "; in the background: " + strings.Join(asyncOps, ", ")
		}
		fmt.Fprintln(out, line)
	}
}
