// Command stressrun is the load-and-check half of scripts/stress (long runs under load). Given a tempfs mount and
// its daemon's pid, it records the daemon's descriptors and memory, runs Debian's stress-ng filesystem stressors
// in a directory of the mount together with a workload of template files (creates, writes around --max-size so
// that some roll over, closes, persisting and later removing some), samples the daemon during the load, and then
// checks that the daemon is alive, its memory is bounded, no descriptor leaked and the tree is consistent.
// scripts/stress builds the binaries, mounts and unmounts; this program never mounts anything.
//
// Exit status: 0 when every check passed, 1 when one failed (each failure is printed as a FAIL line), 2 on bad
// usage, 130 when interrupted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// options are the command line of one run.
type options struct {
	mnt         string        // the tempfs mountpoint
	pid         int           // the daemon's pid
	store       string        // the store parent given to tempfs mount --store
	duration    time.Duration // how long the load runs
	workers     int           // workload goroutines
	sngWorkers  int           // stress-ng workers per stressor
	maxSize     int64         // tempfs mount --max-size, in bytes
	memory      int64         // tempfs mount --memory, in bytes
	rssSlack    int64         // allowed daemon RSS above the memory cap
	fdSlack     int           // allowed descriptors above the baseline (other than pipes)
	pipeSlack   int           // allowed pipe descriptors above the baseline (go-fuse's splice pool)
	sngLog      string        // where stress-ng's output goes
	keptPerWork int           // kept files per workload goroutine before it removes one
}

var (
	failMu   sync.Mutex
	failures []string
)

// fail records a failed check and prints it at once.
func fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	failMu.Lock()
	failures = append(failures, msg)
	failMu.Unlock()
	fmt.Printf("FAIL: %s\n", msg)
}

func failed() int {
	failMu.Lock()
	defer failMu.Unlock()
	return len(failures)
}

func logf(format string, args ...any) {
	fmt.Printf("[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func main() {
	var o options
	var maxSize, memory, rssSlack string
	flag.StringVar(&o.mnt, "mnt", "", "the tempfs mountpoint")
	flag.IntVar(&o.pid, "pid", 0, "the tempfs daemon's pid")
	flag.StringVar(&o.store, "store", "", "the store parent directory given to tempfs mount --store")
	flag.DurationVar(&o.duration, "duration", time.Minute, "how long the load runs")
	flag.IntVar(&o.workers, "workers", 4, "workload goroutines (template creates, closes, rollovers)")
	flag.IntVar(&o.sngWorkers, "stress-workers", 2, "stress-ng workers per stressor (0: no stress-ng, the workload alone)")
	flag.StringVar(&maxSize, "max-size", "", "the mount's --max-size, in bytes")
	flag.StringVar(&memory, "memory", "", "the mount's --memory, in bytes")
	flag.StringVar(&rssSlack, "rss-slack", "67108864", "allowed daemon RSS above the memory cap, in bytes")
	flag.IntVar(&o.fdSlack, "fd-slack", 2, "allowed daemon descriptors above the baseline after the load (pipes apart)")
	flag.IntVar(&o.pipeSlack, "pipe-slack", 64, "allowed pipe descriptors above the baseline (go-fuse keeps splice pipes for reuse)")
	flag.StringVar(&o.sngLog, "stress-ng-log", "", "file for stress-ng's output")
	flag.IntVar(&o.keptPerWork, "kept", 256, "kept files per workload goroutine before it removes one")
	flag.Parse()
	var err error
	o.maxSize, err = parseInt(maxSize)
	if err == nil {
		o.memory, err = parseInt(memory)
	}
	if err == nil {
		o.rssSlack, err = parseInt(rssSlack)
	}
	if err != nil || o.mnt == "" || o.pid <= 0 || o.store == "" || o.sngLog == "" || o.maxSize <= 0 || o.memory <= 0 ||
		o.workers < 1 || o.sngWorkers < 0 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "usage: stressrun -mnt DIR -pid PID -store DIR -max-size BYTES -memory BYTES -stress-ng-log FILE [-duration D] [-workers N] [-stress-workers N]")
		os.Exit(2)
	}
	os.Exit(run(o))
}

func parseInt(s string) (int64, error) {
	var n int64
	_, err := fmt.Sscan(s, &n)
	return n, err
}

// run does the whole load and every check; it returns the exit status.
func run(o options) int {
	storeDir, err := storeDirOf(o.store)
	if err != nil {
		fail("%v", err)
		return 1
	}

	// Before the load: a fresh, idle mount.
	base, err := snapshotFDs(o.pid, storeDir)
	if err != nil {
		fail("daemon descriptors before the load: %v", err)
		return 1
	}
	baseMem, err := readMem(o.pid)
	if err != nil {
		fail("daemon memory before the load: %v", err)
		return 1
	}
	st0, err := readStats(o.mnt)
	if err != nil {
		fail("user.tempfs.stats before the load: %v", err)
		return 1
	}
	if st0.MaxSize != o.maxSize || st0.RAMCap != o.memory {
		fail("user.tempfs.stats says max_size=%d ram_cap=%d, the mount was given --max-size %d --memory %d",
			st0.MaxSize, st0.RAMCap, o.maxSize, o.memory)
	}
	if st0.Entries != 0 || st0.OpenHandles != 0 {
		fail("a fresh mount has entries=%d open_handles=%d, want 0 and 0", st0.Entries, st0.OpenHandles)
	}
	logf("baseline: daemon pid %d, %s; VmRSS %s", o.pid, base, mib(baseMem.rss))

	sngDir := filepath.Join(o.mnt, "stress-ng")
	workDir := filepath.Join(o.mnt, "work")
	for _, d := range []string{sngDir, workDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			fail("mkdir %s: %v", d, err)
			return 1
		}
	}

	// The load: stress-ng and the workload at once, sampled by the monitor.
	mon := startMonitor(o, storeDir)
	sng, err := startStressNG(o, sngDir)
	if err != nil {
		mon.stop()
		fail("starting stress-ng: %v", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Printf("stressrun: %v: stopping stress-ng and exiting\n", s)
		sng.kill()
		os.Exit(130)
	}()
	wl := startWorkload(o, workDir)
	logf("load: stress-ng (pid %d) and %d workload goroutines for %v", sng.cmd.Process.Pid, o.workers, o.duration)

	// A watchdog for a hung mount: a request that never returns blocks the load forever. Then the daemon's
	// goroutines are dumped (SIGQUIT makes a Go program print them and exit) into its log for diagnosis.
	done := make(chan struct{})
	go func() {
		limit := o.duration + 90*time.Second
		select {
		case <-done:
		case <-time.After(limit):
			fail("the load has not finished %v after it started (stress-ng or the workload is stuck on the mount): "+
				"sending SIGQUIT to the daemon for a goroutine dump in its log", limit)
			_ = unix.Kill(o.pid, unix.SIGQUIT)
			sng.kill()
			summary(o, nil, nil, nil)
			os.Exit(1)
		}
	}()

	sngErr := sng.wait()
	wlStats := wl.wait()
	close(done)
	samples := mon.stop()
	signal.Stop(sigs)
	logf("load finished: stress-ng %s; workload %d files", sngStatus(sngErr), wlStats.creates.Load())
	if sngErr != nil {
		fail("stress-ng %s; its output:\n%s", sngStatus(sngErr), indent(readFile(o.sngLog)))
	}
	if !alive(o.pid) {
		fail("the daemon (pid %d) died during the load", o.pid)
		summary(o, wlStats, samples, nil)
		return 1
	}

	// After the load, with the workload's kept files still there.
	after := checkTree(o, wl, sngDir)
	verifyKept(o, wl)

	// Remove everything; then the daemon must be back to its idle state.
	removeAll(o, wl, sngDir, workDir)
	final := checkIdle(o, storeDir, base)
	checkMemory(o, samples)

	summary(o, wlStats, samples, &result{base: base, baseMem: baseMem, after: after, final: final})
	if n := failed(); n > 0 {
		fmt.Printf("stressrun: %d check(s) failed\n", n)
		return 1
	}
	return 0
}

// storeDirOf finds the daemon's private store directory (tempfs-store-*) under the store parent.
func storeDirOf(parent string) (string, error) {
	m, err := filepath.Glob(filepath.Join(parent, "tempfs-store-*"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("want exactly one tempfs-store-* directory under %s, found %v", parent, m)
	}
	return m[0], nil
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: Z is a zombie (dead, not yet reaped).
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func readFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
