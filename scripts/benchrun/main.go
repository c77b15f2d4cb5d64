// Command benchrun is the measuring half of scripts/bench: given four mounted targets (a tmpfs, a plain
// directory on the store's filesystem, go-fuse's loopback example and a tempfs mount), it runs every workload on
// each target in turn for several repetitions (A B C D, then B C D A, ...: each repetition starts one target
// later), from this one process through syscalls,
// and prints medians, the headline ratios of tempfs to its peers, and PASS/FAIL per performance target.
//
// Exit status: 0 when everything ran (missed targets included, unless -strict), 1 when -strict and a target was
// missed, 2 when something broke (wrong data, an entry left behind, a syscall failed).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// target is one directory under test; its workloads run in fresh subdirectories of dir.
type target struct {
	name string
	dir  string
	// tempfs marks the tempfs mount under test: its daemon's memory is measured and its ratios are judged.
	tempfs bool
	// templates: a tempfs mount (the one under test, or the baseline), where the template workload runs as such.
	templates bool
}

// config is the workload sizes of one run (full or quick).
type config struct {
	reps       int
	smallN     int   // workloads 1 and 2: small cycles per repetition
	bigSize    int64 // workloads 3 and 4: bytes of the sequential file
	ramFiles   int   // workload 5: number of files
	ramSize    int   // workload 5: bytes per file
	emptyN     int   // workload 6: empty files per directory
	emptyBigN  int   // workload 6, once per target: the growth check (0: skipped)
	memEntries int   // workload 7: empty files whose daemon memory is measured
	parCycleN  int   // workload 8: small cycles per client
	parStatN   int   // workload 8: stats per client
	real       realSizes
}

func fullConfig() config {
	return config{reps: 5, smallN: 20000, bigSize: 1 << 30, ramFiles: 200, ramSize: 512 << 10,
		emptyN: 20000, emptyBigN: 200000, memEntries: 100000, parCycleN: 4000, parStatN: 40000, real: fullRealSizes()}
}

func quickConfig() config {
	return config{reps: 5, smallN: 2000, bigSize: 256 << 20, ramFiles: 200, ramSize: 512 << 10,
		emptyN: 5000, emptyBigN: 0, memEntries: 20000, parCycleN: 1000, parStatN: 10000, real: fullRealSizes().divided(5)}
}

// broken reports something that is not a slow result but a failure (wrong data, a leftover entry, an error),
// and exits 2: scripts/bench then cleans up and fails.
func broken(format string, args ...any) {
	endNote()
	fmt.Fprintf(os.Stdout, "BROKEN: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	var (
		tmpfsDir    = flag.String("tmpfs", "", "target A: a directory on a fresh tmpfs")
		plainDir    = flag.String("plain", "", "target B: a plain directory on the store's filesystem")
		loopbackDir = flag.String("loopback", "", "target C: go-fuse's example/loopback mount")
		tempfsDir   = flag.String("tempfs", "", "target D: the tempfs mount")
		tempfsPid   = flag.Int("tempfs-pid", 0, "process id of the tempfs daemon (for its memory)")
		baselineDir = flag.String("baseline", "", "optional target E: a tempfs mount of another build, for before/after ratios from the same run")
		quick       = flag.Bool("quick", false, "small sizes (under a minute in all)")
		reps        = flag.Int("reps", 0, "repetitions (default 5; at least 5 for a meaningful median)")
		strict      = flag.Bool("strict", false, "exit 1 when a performance target is missed")
		trace       = flag.Bool("trace", false, "print the time of every workload run on stderr")
		only        = flag.String("only", "all", "which workloads: micro (the syscall workloads, parallel ones included), parallel (the parallel clients only), real (the real programs) or all")
		work        = flag.String("work", "", "a private directory, not on a target, for the real programs' inputs (needed unless -only micro)")
		repo        = flag.String("repo", ".", "the tempfs repository, whose naming and spool tests the real workload R7 runs")
		clientKind  = flag.String("client", "", "internal: run as a client process of the parallel workload (cycle or stat)")
		clientDir   = flag.String("client-dir", "", "internal: the client's directory")
		clientN     = flag.Int("client-n", 0, "internal: the client's operations")
	)
	flag.Parse()
	if *clientKind != "" {
		clientMain(*clientKind, *clientDir, *clientN)
		return
	}
	usage := "usage: benchrun -tmpfs DIR -plain DIR -loopback DIR -tempfs DIR -tempfs-pid PID [-work DIR] [-only micro|parallel|real|all] [-quick] [-reps N] [-strict]"
	if *tmpfsDir == "" || *plainDir == "" || *loopbackDir == "" || *tempfsDir == "" || *tempfsPid <= 0 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if *only != "micro" && *only != "parallel" && *only != "real" && *only != "all" {
		fmt.Fprintf(os.Stderr, "benchrun: -only %q: want micro, parallel, real or all\n%s\n", *only, usage)
		os.Exit(2)
	}
	if *only != "micro" && *only != "parallel" && *work == "" {
		fmt.Fprintf(os.Stderr, "benchrun: the real workloads need -work DIR\n%s\n", usage)
		os.Exit(2)
	}
	cfg := fullConfig()
	mode := "full"
	if *quick {
		cfg = quickConfig()
		mode = "quick"
	}
	if *reps > 0 {
		cfg.reps = *reps
	}
	targets := []*target{
		{name: "tmpfs", dir: *tmpfsDir},
		{name: "plain", dir: *plainDir},
		{name: "loopback", dir: *loopbackDir},
		{name: "tempfs", dir: *tempfsDir, tempfs: true, templates: true},
	}
	if *baselineDir != "" {
		targets = append(targets, &target{name: "baseline", dir: *baselineDir, templates: true})
	}
	for _, t := range targets {
		abs, err := filepath.Abs(t.dir)
		if err != nil {
			broken("%s: %v", t.dir, err)
		}
		t.dir = abs
	}
	b := &bench{cfg: cfg, targets: targets, pid: *tempfsPid, res: newResults(), seed: uint64(time.Now().UnixNano()), trace: *trace,
		micro: *only == "micro" || *only == "all", parallel: *only != "real", realWanted: *only == "real" || *only == "all",
		work: *work, repo: *repo}
	if b.realWanted {
		for _, p := range []*string{&b.work, &b.repo} {
			abs, err := filepath.Abs(*p)
			if err != nil {
				broken("%s: %v", *p, err)
			}
			*p = abs
		}
	}
	start, load0 := time.Now(), loadavg()
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	fmt.Printf("mode: %s (workloads: %s), %d repetitions, order in the first: %s (each next one starts one target later)\n", mode, *only, cfg.reps, strings.Join(names, " "))
	b.printTempfsStats("tempfs at start")
	b.run()
	fmt.Printf("workloads took %.1fs; load average before %s, after %s (other processes skew every figure)\n\n",
		time.Since(start).Seconds(), load0, loadavg())
	missed := b.report()
	if b.realFailures > 0 {
		fmt.Printf("BROKEN: %d real-program runs failed (FAILED lines above); their samples are left out\n", b.realFailures)
		os.Exit(2)
	}
	if missed > 0 && *strict {
		os.Exit(1)
	}
}

// loadavg is the 1-minute load average, to show whether the machine was busy with other work during the run.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
