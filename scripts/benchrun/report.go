package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Progress notes go to stderr, one line per workload with the time it took, so that a hanging target can be told
// from a slow run.
var (
	stderr    io.Writer = os.Stderr
	lastNote  string
	noteStart time.Time
)

func note(what string) {
	if what == lastNote {
		return
	}
	endNote()
	fmt.Fprintf(stderr, "running: %s", what)
	lastNote, noteStart = what, time.Now()
}

func endNote() {
	if lastNote != "" {
		fmt.Fprintf(stderr, " (%.1fs)\n", time.Since(noteStart).Seconds())
		lastNote = ""
	}
}

// results holds every sample: metric id -> target name -> one value per repetition.
type results struct {
	samples map[string]map[string][]float64

	memEntries          int
	memBefore, memAfter memStatus
	memRAM              int64
}

func newResults() *results { return &results{samples: map[string]map[string][]float64{}} }

func (r *results) add(id, target string, v float64) {
	if r.samples[id] == nil {
		r.samples[id] = map[string][]float64{}
	}
	r.samples[id][target] = append(r.samples[id][target], v)
}

// median of the samples of id on target, and whether there are any.
func (r *results) median(id, target string) (float64, bool) {
	s := slices.Clone(r.samples[id][target])
	if len(s) == 0 {
		return 0, false
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

// row is one line of the results table.
type row struct {
	id, title, unit string
}

func (b *bench) rows() []row {
	var rows []row
	if b.micro {
		rows = b.microRows()
	}
	if b.parallel {
		rows = append(rows, b.parallelRows()...)
	}
	for _, w := range b.real {
		title := w.title
		if why := b.realSkipped[w.id]; why != "" {
			title += " (skipped: " + why + ")"
		}
		rows = append(rows, row{w.id, title, "s"})
	}
	return rows
}

func (b *bench) microRows() []row {
	c := b.cfg
	rows := []row{
		{"small-template", fmt.Sprintf("1 small cycle, template (N=%d; non-tempfs: ordinary cycle)", c.smallN), "ops/s"},
		{"small-template-drain-ms", "1   of which: last close until the directory is empty", "ms"},
		{"small-ordinary", fmt.Sprintf("2 small cycle, ordinary names (N=%d)", c.smallN), "ops/s"},
		{"seq-write", fmt.Sprintf("3 %s write, 1 MiB writes", size(c.bigSize)), "MiB/s"},
		{"read-cold", fmt.Sprintf("4 %s read back, cold", size(c.bigSize)), "MiB/s"},
		{"read-warm", fmt.Sprintf("4 %s read back, warm", size(c.bigSize)), "MiB/s"},
		{"ram-write", fmt.Sprintf("5 %d x %s files, write", c.ramFiles, size(int64(c.ramSize))), "MiB/s"},
		{"ram-read", fmt.Sprintf("5 %d x %s files, read", c.ramFiles, size(int64(c.ramSize))), "MiB/s"},
	}
	for _, n := range []struct {
		suffix string
		n      int
	}{{"", c.emptyN}, {"-10x", c.emptyBigN}} {
		if n.n == 0 {
			continue
		}
		for _, p := range []string{"create", "readdir", "stat", "unlink"} {
			rows = append(rows, row{"empty-" + p + n.suffix, fmt.Sprintf("6 %d empty files, %s", n.n, p), "ops/s"})
		}
		rows = append(rows, row{"empty-entry-us" + n.suffix, fmt.Sprintf("6 %d empty files, all phases per entry", n.n), "us/entry"})
	}
	return rows
}

func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}

func format(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// cell is "median (min-max)" of one metric on one target.
func (r *results) cell(id, target string) string {
	s := slices.Clone(r.samples[id][target])
	if len(s) == 0 {
		return "-"
	}
	slices.Sort(s)
	med, _ := r.median(id, target)
	if len(s) == 1 {
		return format(med)
	}
	return fmt.Sprintf("%s (%s-%s)", format(med), format(s[0]), format(s[len(s)-1]))
}

// goal is one performance target: tempfs's median over a peer's median (or an absolute figure), against a bound.
type goal struct {
	name  string  // RATIO line name
	table string  // the row of the performance target table
	value float64 // measured
	ok    bool    // measured at all
	// base is the same ratio for the baseline build, when the run has one (baseOK).
	base   float64
	baseOK bool
	bound  float64
	atMost bool // value must be <= bound (else >=)
	unit   string
	// info: a ratio that is printed but is no target (no bound, never PASS or FAIL).
	info bool
	// skipped: why the workload did not run, when it did not.
	skipped string
}

func (b *bench) ratio(name, table, id, peer string, bound float64) goal {
	g := goal{name: name, table: table, bound: bound}
	p, okPeer := b.res.median(id, peer)
	if v, ok := b.res.median(id, "tempfs"); ok && okPeer && p > 0 {
		g.value, g.ok = v/p, true
	}
	if v, ok := b.res.median(id, "baseline"); ok && okPeer && p > 0 {
		g.base, g.baseOK = v/p, true
	}
	return g
}

func (b *bench) goals() []goal {
	var gs []goal
	if b.micro {
		gs = b.microGoals()
	}
	if b.parallel {
		gs = append(gs, b.parallelGoals()...)
	}
	return append(gs, b.realGoals()...)
}

// realGoals are, for each real-program workload, its time against tmpfs (shown, no target) and against the
// loopback, whose target is at most 1/speedup (at least as fast, or speedup times as fast).
func (b *bench) realGoals() []goal {
	var gs []goal
	for _, w := range b.real {
		vsTmpfs := b.ratio(w.id+"-time/tmpfs", "", w.id, "tmpfs", 0)
		vsTmpfs.info = true
		bound := math.Round(100/w.speedup) / 100 // 0.67, as printed
		table := fmt.Sprintf("%s: time <= %.2fx loopback's", w.title, bound)
		if w.speedup != 1 {
			table = fmt.Sprintf("%s: %gx as fast as the loopback, time <= %.2fx", w.title, w.speedup, bound)
		}
		vsLoopback := b.ratio(w.id+"-time/loopback", table, w.id, "loopback", bound)
		vsLoopback.atMost = true
		vsTmpfs.skipped, vsLoopback.skipped = b.realSkipped[w.id], b.realSkipped[w.id]
		gs = append(gs, vsTmpfs, vsLoopback)
	}
	return gs
}

func (b *bench) microGoals() []goal {
	r := b.res
	gs := []goal{
		b.ratio("small-template/loopback", "small cycle, template >= 2x loopback's ordinary cycle", "small-template", "loopback", 2),
		b.ratio("small-ordinary/loopback", "small cycle, ordinary names >= 1.5x loopback", "small-ordinary", "loopback", 1.5),
		b.ratio("seq-write/tmpfs", "1 GiB write >= 0.35x tmpfs", "seq-write", "tmpfs", 0.35),
		b.ratio("read-cold/loopback", "read back, cold >= 0.9x loopback", "read-cold", "loopback", 0.9),
		b.ratio("read-warm/loopback", "read back, warm >= 0.9x loopback", "read-warm", "loopback", 0.9),
		b.ratio("ram-write/loopback", "200 RAM files write >= 1x loopback", "ram-write", "loopback", 1),
		b.ratio("ram-read/loopback", "200 RAM files read >= 1x loopback", "ram-read", "loopback", 1),
		b.ratio("empty-create/loopback", "empty files, create >= 1.5x loopback", "empty-create", "loopback", 1.5),
		b.ratio("empty-unlink/loopback", "empty files, unlink >= 1.5x loopback", "empty-unlink", "loopback", 1.5),
		b.ratio("empty-readdir/loopback", "empty files, readdir >= 3x loopback", "empty-readdir", "loopback", 3),
		b.ratio("empty-stat/tmpfs", "empty files, stat >= 0.8x tmpfs", "empty-stat", "tmpfs", 0.8),
	}
	growth := goal{name: "empty-growth", table: fmt.Sprintf("empty files, per-entry time at %d vs %d within 1.5x", 10*b.cfg.emptyN, b.cfg.emptyN), bound: 1.5, atMost: true}
	small, ok1 := r.median("empty-entry-us", "tempfs")
	big, ok2 := r.median("empty-entry-us-10x", "tempfs")
	if ok1 && ok2 && small > 0 {
		growth.value, growth.ok = big/small, true
	}
	small, ok1 = r.median("empty-entry-us", "baseline")
	big, ok2 = r.median("empty-entry-us-10x", "baseline")
	if ok1 && ok2 && small > 0 {
		growth.base, growth.baseOK = big/small, true
	}
	gs = append(gs, growth)

	over := goal{name: "mem-over-data-MiB", table: "daemon RSS <= RAM-resident data + 32 MiB", bound: 32, atMost: true, unit: " MiB"}
	over.value, over.ok = r.median("mem-over-data", "tempfs")
	gs = append(gs, over)

	per := goal{name: "mem-per-entry-bytes", table: "daemon memory <= 1 KiB per empty entry", bound: 1024, atMost: true, unit: " B"}
	if r.memEntries > 0 {
		per.value, per.ok = float64(r.memAfter.rss-r.memBefore.rss)/float64(r.memEntries), true
	}
	gs = append(gs, per)
	return gs
}

// report prints the table, the memory figures, the ratios and the verdicts; it returns how many targets were missed.
func (b *bench) report() int {
	endNote()
	names := make([]string, len(b.targets))
	for i, t := range b.targets {
		names[i] = t.name
	}
	fmt.Printf("Results: median (min-max) over %d repetitions; the x10 rows ran once.\n", b.cfg.reps)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "workload\tunit\t%s\t\n", strings.Join(names, "\t"))
	for _, rw := range b.rows() {
		cells := make([]string, len(names))
		for i, n := range names {
			cells[i] = b.res.cell(rw.id, n)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t\n", rw.title, rw.unit, strings.Join(cells, "\t"))
	}
	w.Flush()
	if b.micro {
		fmt.Println("Cold reads follow sync and drop_caches; that cannot apply to RAM, so on tmpfs and on the loopback (served")
		fmt.Println("from a tmpfs) cold is a second warm read, while tempfs's file is past --max-size, on its disk store.")
		fmt.Println("Template cycles on tempfs are timed until the directory is empty again (files go after RELEASE).")
	}
	if b.parallel {
		fmt.Println("8: client processes at once, each in its own directory; ops/s of all clients together. Stats use statx with")
		fmt.Println("AT_STATX_FORCE_SYNC, so that each reaches a FUSE daemon. Speed-up: 4 clients over 1 (RATIO ...-speedup-4/1/TARGET,")
		fmt.Printf("from the medians, and -best from the best runs); this machine has %d CPUs for the clients and the daemon.\n", runtime.NumCPU())
	}
	if b.realWanted {
		fmt.Println("R1-R7 are real programs, in seconds (lower is better), run with a clean environment (PATH, HOME in the work")
		fmt.Println("directory, LC_ALL=C, TMPDIR on the target) in a fresh directory of the target; only the programs are timed.")
		fmt.Println("R7 runs test binaries built once with go test -c, so neither the compiler's speed nor its cache is measured")
		fmt.Println("(spool's randomized model tests with the fixed seed -spool.seed=13, the same work in every run; without")
		fmt.Printf("%s, which cannot pass with TMPDIR on a tmpfs: O_TMPFILE in a deleted directory succeeds there).\n", skippedSpoolTest)
	}
	b.requests.print(os.Stdout)
	if b.micro {
		b.reportMemory()
	}

	fmt.Println()
	gs := b.goals()
	for _, g := range gs {
		switch {
		case g.ok && g.unit == "" && g.baseOK:
			fmt.Printf("RATIO %s %.2f (baseline %.2f)\n", g.name, g.value, g.base)
		case g.ok && g.unit == "":
			fmt.Printf("RATIO %s %.2f\n", g.name, g.value)
		case g.ok:
			fmt.Printf("VALUE %s %.1f\n", g.name, g.value)
		}
	}
	fmt.Println()
	missed, judged := 0, 0
	for _, g := range gs {
		if g.info {
			continue
		}
		judged++
		op := ">="
		if g.atMost {
			op = "<="
		}
		switch {
		case g.skipped != "":
			fmt.Printf("SKIP %-26s skipped: %s   (%s)\n", g.name, g.skipped, g.table)
		case !g.ok:
			fmt.Printf("SKIP %-26s not measured in this mode   (%s)\n", g.name, g.table)
		case (g.atMost && g.value <= g.bound) || (!g.atMost && g.value >= g.bound):
			fmt.Printf("PASS %-26s %8.2f%s %s %g%s   (%s)\n", g.name, g.value, g.unit, op, g.bound, g.unit, g.table)
		default:
			missed++
			fmt.Printf("FAIL %-26s %8.2f%s %s %g%s   (%s)\n", g.name, g.value, g.unit, op, g.bound, g.unit, g.table)
		}
	}
	fmt.Printf("\n%d of %d targets missed\n", missed, judged)
	return missed
}

// reportMemory prints the daemon's memory figures (workload 7) and the per-entry time of workload 6.
func (b *bench) reportMemory() {
	r := b.res
	fmt.Println()
	fmt.Printf("7 daemon memory (tempfs), MiB: with %d x %s files present: VmRSS %s, RssAnon %s, RssShmem %s (memfd data counts in VmRSS only where mapped); data %s (daemon's ram_bytes %s); VmRSS minus data %s\n",
		b.cfg.ramFiles, size(int64(b.cfg.ramSize)),
		r.cell("mem-rss-ramfiles", "tempfs"), r.cell("mem-anon-ramfiles", "tempfs"), r.cell("mem-shmem-ramfiles", "tempfs"),
		format(float64(b.cfg.ramFiles*b.cfg.ramSize)/mib), r.cell("mem-ram-bytes", "tempfs"), r.cell("mem-over-data", "tempfs"))
	if r.memEntries > 0 {
		d := r.memAfter.rss - r.memBefore.rss
		fmt.Printf("7 daemon memory (tempfs), %d empty files on a fresh daemon: VmRSS %.1f -> %.1f MiB (RssAnon %.1f -> %.1f), RAM data %d B; VmRSS minus data %.1f MiB; %.0f bytes per entry\n",
			r.memEntries, float64(r.memBefore.rss)/mib, float64(r.memAfter.rss)/mib,
			float64(r.memBefore.anon)/mib, float64(r.memAfter.anon)/mib, r.memRAM,
			float64(r.memAfter.rss-r.memRAM)/mib, float64(d)/float64(r.memEntries))
	}
	if s, ok := r.median("empty-entry-us", "tempfs"); ok {
		line := fmt.Sprintf("6 per-entry time (create+readdir+stat+unlink), tempfs: %.1f us at %d", s, b.cfg.emptyN)
		if big, ok := r.median("empty-entry-us-10x", "tempfs"); ok {
			line += fmt.Sprintf(", %.1f us at %d", big, b.cfg.emptyBigN)
		} else {
			line += " (x10 run only in full mode)"
		}
		fmt.Println(line)
	}
}
