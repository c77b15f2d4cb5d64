package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Workload 8, parallel clients: 1, 2 and 4 client processes at once, each in its own directory of the target,
// doing small cycles (create with O_EXCL, write 4 KiB, close, unlink) or stats (statx with AT_STATX_FORCE_SYNC
// of files it made, so that every stat reaches a FUSE daemon whatever its attribute timeout). The figure is
// the clients' operations together per second, from the moment all were told to start until the last
// finished; the speed-up of a target is its figure at 4 clients over its figure at 1. Directories are
// separate, so that the kernel's directory lock serializes nothing between clients: what is left to scale or
// not is the filesystem itself (and the CPUs: on a machine with fewer cores than 4 clients plus the daemon,
// no target can reach 4x).
//
// Clients are this same program started again with -client; they prepare, say "ready", wait for "go" on their
// standard input, run, say "done N", clean up and exit.

var parallelClients = []int{1, 2, 4}

// parallelTargets are the targets the parallel workload runs on: the plain directory is left out (it is the
// store's disk filesystem, which measures the disk, not a filesystem's locking).
func (b *bench) parallelTargets() []*target {
	var ts []*target
	for _, t := range b.targets {
		if t.name != "plain" {
			ts = append(ts, t)
		}
	}
	return ts
}

// runParallel runs workload 8, interleaved: for each repetition, each client count, each target in turn.
func (b *bench) runParallel() {
	self, err := os.Executable()
	if err != nil {
		broken("parallel: %v", err)
	}
	for _, kind := range []string{"cycle", "stat"} {
		n := b.cfg.parCycleN
		if kind == "stat" {
			n = b.cfg.parStatN
		}
		for rep := 1; rep <= b.cfg.reps; rep++ {
			for _, k := range parallelClients {
				for _, t := range rotated(b.parallelTargets(), rep-1) {
					note(fmt.Sprintf("parallel %ss, %d client processes", kind, k))
					b.timed(t, rep, func(t *target, rep int) {
						b.res.add(fmt.Sprintf("par-%s-%d", kind, k), t.name, runClients(self, t, kind, k, n, rep))
					})
				}
			}
		}
	}
}

type client struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	path string
	dfd  int
}

// runClients runs k clients of kind with n operations each on t, and returns their operations per second.
func runClients(self string, t *target, kind string, k, n, rep int) float64 {
	clients := make([]*client, k)
	for i := range clients {
		path, dfd := freshDir(t, fmt.Sprintf("w8-%s-%d-r%d-c%d", kind, k, rep, i))
		cmd := exec.Command(self, "-client", kind, "-client-dir", path, "-client-n", strconv.Itoa(n))
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			broken("%s: client: %v", t.name, err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			broken("%s: client: %v", t.name, err)
		}
		if err := cmd.Start(); err != nil {
			broken("%s: client: %v", t.name, err)
		}
		clients[i] = &client{cmd: cmd, in: in, out: bufio.NewReader(out), path: path, dfd: dfd}
	}
	expect := func(c *client, want string) string {
		line, err := c.out.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, want) {
			broken("%s: a %s client said %q (%v), want %q", t.name, kind, line, err, want)
		}
		return strings.TrimSpace(strings.TrimPrefix(line, want))
	}
	for _, c := range clients {
		expect(c, "ready")
	}
	start := time.Now()
	for _, c := range clients {
		if _, err := io.WriteString(c.in, "go\n"); err != nil {
			broken("%s: client: %v", t.name, err)
		}
	}
	total := 0
	for _, c := range clients {
		done, err := strconv.Atoi(expect(c, "done"))
		if err != nil {
			broken("%s: client: %v", t.name, err)
		}
		total += done
	}
	elapsed := time.Since(start)
	for _, c := range clients {
		c.in.Close()
		if err := c.cmd.Wait(); err != nil {
			broken("%s: a %s client failed: %v", t.name, kind, err)
		}
		removeDir(t, c.path, c.dfd)
	}
	return float64(total) / elapsed.Seconds()
}

// statFiles is how many files a stat client stats in turn.
const statFiles = 64

// clientMain is a client process: it works in dir, which the parent made and removes.
func clientMain(kind, dir string, n int) {
	t := &target{name: "client " + kind, dir: dir}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		broken("%s: %v", t.name, err)
	}
	in := bufio.NewReader(os.Stdin)
	block := make([]byte, blockSize)
	names := makeNames("f", statFiles)
	if kind == "stat" {
		for _, name := range names {
			fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err != nil {
				broken("%s: create %s: %v", t.name, name, err)
			}
			closeFd(t, fd)
		}
	}
	fmt.Println("ready")
	if line, err := in.ReadString('\n'); err != nil || line != "go\n" {
		broken("%s: got %q (%v), want go", t.name, line, err)
	}
	switch kind {
	case "cycle":
		for i := range n {
			name := "c" + strconv.Itoa(i)
			fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
			if err != nil {
				broken("%s: create %s: %v", t.name, name, err)
			}
			writeAll(t, fd, block)
			closeFd(t, fd)
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				broken("%s: unlink %s: %v", t.name, name, err)
			}
		}
	case "stat":
		var stx unix.Statx_t
		for i := range n {
			if err := unix.Statx(dfd, names[i%statFiles], unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &stx); err != nil {
				broken("%s: statx: %v", t.name, err)
			}
		}
	default:
		broken("unknown client kind %q", kind)
	}
	fmt.Printf("done %d\n", n)
	if kind == "stat" {
		for _, name := range names {
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				broken("%s: unlink %s: %v", t.name, name, err)
			}
		}
	}
	unix.Close(dfd)
}

// parallelRows are workload 8's rows of the results table.
func (b *bench) parallelRows() []row {
	var rows []row
	for _, kind := range []string{"cycle", "stat"} {
		n := b.cfg.parCycleN
		what := "small cycles"
		if kind == "stat" {
			n, what = b.cfg.parStatN, "stats (forced to the daemon)"
		}
		for _, k := range parallelClients {
			rows = append(rows, row{fmt.Sprintf("par-%s-%d", kind, k), fmt.Sprintf("8 %s, %d client processes x %d", what, k, n), "ops/s"})
		}
	}
	return rows
}

// parallelGoals are each target's speed-up from 1 to 4 clients, from the medians and from the best runs
// (info), and the target: tempfs's speed-up at least the loopback's.
func (b *bench) parallelGoals() []goal {
	var gs []goal
	speedup := func(kind, target string, best bool) (float64, bool) {
		one, many := b.res.samples[fmt.Sprintf("par-%s-1", kind)][target], b.res.samples[fmt.Sprintf("par-%s-4", kind)][target]
		if len(one) == 0 || len(many) == 0 {
			return 0, false
		}
		if best {
			return maxOf(many) / maxOf(one), true
		}
		m1, _ := b.res.median(fmt.Sprintf("par-%s-1", kind), target)
		m4, _ := b.res.median(fmt.Sprintf("par-%s-4", kind), target)
		return m4 / m1, m1 > 0
	}
	for _, kind := range []string{"cycle", "stat"} {
		for _, t := range b.parallelTargets() {
			for _, best := range []bool{false, true} {
				name := fmt.Sprintf("parallel-%s-speedup-4/1/%s", kind, t.name)
				if best {
					name += "-best"
				}
				g := goal{name: name, info: true}
				g.value, g.ok = speedup(kind, t.name, best)
				gs = append(gs, g)
			}
		}
		g := goal{name: fmt.Sprintf("parallel-%s-speedup/loopback", kind), bound: 1,
			table: fmt.Sprintf("parallel %ss: speed-up from 1 to 4 clients >= the loopback's", kind)}
		tf, ok1 := speedup(kind, "tempfs", false)
		lb, ok2 := speedup(kind, "loopback", false)
		if ok1 && ok2 && lb > 0 {
			g.value, g.ok = tf/lb, true
		}
		if bl, ok3 := speedup(kind, "baseline", false); ok3 && ok2 && lb > 0 {
			g.base, g.baseOK = bl/lb, true
		}
		gs = append(gs, g)
	}
	return gs
}

func maxOf(s []float64) float64 {
	m := s[0]
	for _, v := range s[1:] {
		m = max(m, v)
	}
	return m
}
