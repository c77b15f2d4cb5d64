package integration

// Take-over (`tempfs mount --takeover MOUNTPOINT`): a new daemon takes a live mount over from the one serving
// it, and the users see nothing but a pause. The test below runs a mixed workload, each part in its own process
// (takeover_load_test.go), takes the mount over 20 times in a row, and checks every byte, name, attribute,
// owner and handle; the pauses are logged, never judged.

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// toProc is a running workload process: its stdout lines come on lines, except its "ERR ..." lines, which are
// collected as they arrive.
type toProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error
	mu     sync.Mutex
	errs   []string
	shown  int // errs already reported
}

// toStart starts a workload process (a re-exec of this binary in mode) with attr; cleanup kills it (and its
// session, when it leads one) if it still runs.
func toStart(t testing.TB, name string, attr *syscall.SysProcAttr, mode string, args ...string) *toProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), toChildEnv+"="+mode)
	cmd.SysProcAttr = attr
	p := &toProc{name: name, cmd: cmd, lines: make(chan string, 1024), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	var stdout io.ReadCloser
	p.stdin, stdout = startTalking(t, cmd)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "ERR ") {
				p.mu.Lock()
				p.errs = append(p.errs, fmt.Sprintf("%s (at %s)", l, time.Now().Format("15:04:05.000")))
				p.mu.Unlock()
			} else {
				p.lines <- l
			}
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.report(t)
		select {
		case <-p.done:
		default:
			if attr != nil && attr.Setsid {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// errors are the failed operations the process reported so far.
func (p *toProc) errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.errs)
}

// report fails the test with the errors the process reported and were not reported yet.
func (p *toProc) report(t testing.TB) {
	t.Helper()
	errs := p.errors()
	for _, e := range errs[p.shown:] {
		t.Errorf("%s: %s", p.name, e)
	}
	p.shown = len(errs)
}

// await returns the next line of the process, which must start with prefix.
func (p *toProc) await(t testing.TB, prefix string) string {
	t.Helper()
	l, ok := p.awaitOr(t, prefix)
	if !ok {
		p.report(t)
		t.FailNow()
	}
	return l
}

// awaitOr is await that fails the test without stopping it: false when the process printed something else,
// exited or printed nothing for 60 s.
func (p *toProc) awaitOr(t testing.TB, prefix string) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			t.Errorf("%s exited (%v) before printing %q; stderr:\n%s", p.name, p.err, prefix, p.stderr.String())
			return "", false
		}
		if !strings.HasPrefix(l, prefix) {
			t.Errorf("%s printed %q, want %q...", p.name, l, prefix)
			return l, false
		}
		return l, true
	case <-time.After(60 * time.Second):
		t.Errorf("%s printed no %q for 60s; stderr:\n%s", p.name, prefix, p.stderr.String())
		return "", false
	}
}

// send writes a line to the process; a process that has exited gets nothing (what it reported is checked).
func (p *toProc) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		select {
		case <-p.done: // it exited (a broken pipe): what it said is in its lines and errors
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: %v", p.name, err)
		}
	}
}

// exit waits for the process to exit; it must exit with status 0.
func (p *toProc) exit(t testing.TB) {
	t.Helper()
	p.stdin.Close()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s exited with %v; stderr:\n%s", p.name, p.err, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still running 60s after it was told to stop", p.name)
	}
}

// toChain is the daemon serving a mount through its take-overs, with every daemon that served it (their logs).
type toChain struct {
	cur *mount
	all []*mount
}

// toTiming is one take-over as the test saw it: CLOCK_MONOTONIC readings (ns) when the command started, when
// it signalled ready and when the test saw the old daemon exit, and the pause the daemons logged (0: none).
type toTiming struct {
	start, ready, oldGone int64
	logged                time.Duration
	logLines              []string
}

// toLaunchTakeover runs `tempfs mount --takeover --ready-fd=3 [extra] DIR` against the daemon serving old's
// mount and waits for its ready signal or its exit. It returns the new daemon and whether it became ready.
func toLaunchTakeover(t testing.TB, old *mount, env []string, extra ...string) (*mount, bool) {
	t.Helper()
	n := &mount{Dir: old.Dir, StoreParent: old.StoreParent, log: &syncBuffer{}, exited: make(chan struct{})}
	args := append([]string{tempfsBin, "mount", "--takeover"}, extra...)
	l, ok := n.startReady(t, append(args, old.Dir), append(os.Environ(), env...), nil)
	switch {
	case ok && l == "ready":
		return n, true
	case ok:
		<-n.exited
		n.stopped = true
		return n, false
	default:
		_ = n.cmd.Process.Kill()
		<-n.exited
		n.stopped = true
		t.Fatalf("tempfs mount --takeover: no ready signal and no exit after 60s; its log:\n%s\nthe serving daemon's log:\n%s", n.Log(), old.Log())
		return nil, false
	}
}

// takeOver takes c's mount over with a new daemon: runs the command, waits for its ready signal and for the old
// daemon's exit (status 0, mount left in place), and returns what it measured.
func takeOver(t testing.TB, c *toChain) toTiming {
	t.Helper()
	old := c.cur
	tm := toTiming{start: toMono()}
	n, ok := toLaunchTakeover(t, old, nil)
	if !ok {
		t.Fatalf("tempfs mount --takeover %s did not take over: %v; its output:\n%s\nthe serving daemon's log:\n%s",
			old.Dir, n.exitErr, n.Log(), old.Log())
	}
	tm.ready = toMono()
	c.all = append(c.all, n)
	select {
	case <-old.exited:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill() // it waits for the old daemon's exit before it serves
		<-n.exited
		t.Fatalf("the old daemon (pid %d) did not exit 30s after its successor was ready; its log:\n%s\nthe successor's log:\n%s",
			old.Pid(), old.Log(), n.Log())
	}
	tm.oldGone = toMono()
	old.stopped = true
	c.cur = n
	if old.exitErr != nil {
		t.Fatalf("the old daemon exited with %v after the take-over; its log:\n%s", old.exitErr, old.Log())
	}
	if !isMounted(old.Dir) {
		t.Fatalf("%s is no longer mounted after the take-over; old daemon's log:\n%s\nnew daemon's log:\n%s", old.Dir, old.Log(), n.Log())
	}
	return tm
}

// toPauseRE finds a duration logged as pause=DURATION (slog's text format) in a daemon's log line.
var toPauseRE = regexp.MustCompile(`pause[a-z_]*="?([0-9.]+(?:ns|us|µs|ms|s))`)

// toLoggedPause is the pause a take-over's new daemon logged: the lines of its log that mention a pause, and
// the first duration found in them.
func toLoggedPause(logs ...string) (time.Duration, []string) {
	var lines []string
	var d time.Duration
	for _, log := range logs {
		for l := range strings.Lines(log) {
			if !strings.Contains(strings.ToLower(l), "pause") {
				continue
			}
			lines = append(lines, strings.TrimSpace(l))
			if m := toPauseRE.FindStringSubmatch(l); m != nil && d == 0 {
				d, _ = time.ParseDuration(strings.ReplaceAll(m[1], "µs", "us"))
			}
		}
	}
	return d, lines
}

// toMakePlain makes the files of the plain checks under dir: files of sizes on both sides of --max-size with
// known bytes, modes, owners, times and xattrs, a hard link, a symlink, a FIFO and a directory.
func toMakePlain(t testing.TB, dir string, maxSize int) {
	t.Helper()
	sizes := []int{0, 1, 4095, 4096, 65537, maxSize - 1, maxSize, maxSize + 1, 3*maxSize + 123}
	for i, size := range sizes {
		data := make([]byte, size)
		toFill(data, uint64(1000+i))
		p := filepath.Join(dir, fmt.Sprintf("f%d", size))
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.size", []byte(strconv.Itoa(size)), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.bin", []byte{0, 1, 2, byte(i), 255}, 0); err != nil {
			t.Fatal(err)
		}
		// atime after mtime, both in the past: reading the file changes neither (relatime).
		mtime := time.Date(2020, 1, 2, 3, 4, 5, 600+i, time.UTC)
		if err := os.Chtimes(p, mtime.Add(time.Hour), mtime); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fs.FileMode(0o600|i)); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, 1000+i, 2000+i); err != nil {
				t.Fatal(err)
			}
		}
	}
	sh(t, dir, `ln f4096 hardlink && ln -s f65537 symlink && mkfifo -m 0640 fifo && mkdir -m 0751 sub &&
		printf 'inner\n' > sub/inner && setfattr -n user.dir -v onsub sub && mkdir sub/deeper && touch -d @1000000000 sub/inner`)
}

// toStatLine is what lstat says of path, atime included: for an entry nothing reads.
func toStatLine(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%+v", st)
}

// toSnapshot describes every entry under dir: kind, mode, owner, size, links, inode, times, rdev, xattrs
// (listed and tempfs's own), symlink target and a hash of the bytes.
func toSnapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		// No atime: the snapshot's own reads change it (the untouched file checks that atime is carried).
		d := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d nlink=%d ino=%d mtime=%d.%09d ctime=%d.%09d rdev=%d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Ino, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Rdev)
		buf := make([]byte, 64<<10)
		if n, err := unix.Llistxattr(p, buf); err == nil {
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			for _, name := range names {
				if name == "" {
					continue
				}
				v := make([]byte, 64<<10)
				k, err := unix.Lgetxattr(p, name, v)
				d += fmt.Sprintf(" %s=%q(%v)", name, v[:max(k, 0)], err)
			}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR:
			for _, name := range []string{"user.tempfs.owner", "user.tempfs.spool", "user.tempfs.lifetime"} {
				v, err := tlGetxattr(p, name)
				d += fmt.Sprintf(" %s=%q(%v)", name, v, err)
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			d += fmt.Sprintf(" target=%q(%v)", target, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" sha256=%x", sha256.Sum256(data))
		}
		rel, _ := filepath.Rel(dir, p)
		snap[rel] = d
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return snap
}

// toSnapshotDiff lists the differences between two snapshots.
func toSnapshotDiff(before, after map[string]string) []string {
	var diffs []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: gone (was %s)", p, b))
		} else if a != b {
			diffs = append(diffs, fmt.Sprintf("%s:\n  before %s\n  after  %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new (%s)", p, a))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// toWalkCounts counts the regular files (by inode), directories (the root not counted) and other entries
// below dir.
func toWalkCounts(t testing.TB, dir string) (files, dirs, others int) {
	t.Helper()
	inodes := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case p == dir:
		case e.IsDir():
			dirs++
		case e.Type().IsRegular():
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			inodes[st.Ino] = true
		default:
			others++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(inodes), dirs, others
}

// toStat is a number from user.tempfs.stats (a dotted path into nested objects).
func toStat(st map[string]any, key string) float64 {
	var v any = st
	for _, k := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return -1
		}
		v = m[k]
	}
	f, ok := v.(float64)
	if !ok {
		return -1
	}
	return f
}

// toMedian is the median of ds (sorted in place).
func toMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// TestTakeoverUnderLoad takes a mount over 20 times in a row while fsx, fsstress, a held template file, a
// session's writer, a half-read directory and a stat loop run in processes of their own, then checks that no
// operation failed, every byte, name, attribute, owner and handle is there, the counters agree with the tree,
// and unmount leaves nothing. It logs each take-over's pause: as the daemon logged it, and the longest gap
// between completed operations of the stat loop around it.
func TestTakeoverUnderLoad(t *testing.T) {
	const maxSize = 256 << 10
	const takeovers = 20
	// --max-age is far from reached: it is here so that the idle clocks go with every take-over (a clock gone
	// wrong removes files). No --owner-quota: it turns passthrough off, and passthrough handles must go over too.
	m := startMount(t, "--max-size", "256KiB", "--owner", "session", "--max-age", "10d")
	c := &toChain{cur: m, all: []*mount{m}}
	// Runs after the workload processes are killed (cleanups run last first), before m's own (a no-op once m
	// handed over): unmounts through whichever daemon serves last and checks that nothing is left.
	t.Cleanup(func() { c.cur.stop(t) })
	load := toStartLoad(t, m, maxSize, "take-overs", true)
	var timings []toTiming
	for i := range takeovers {
		timings = append(timings, takeOver(t, c))
		load.step(t)
		if load.failed() {
			t.Errorf("operations failed by take-over %d; stopping the take-overs; the old daemon's log:\n%s\nthe new daemon's log:\n%s",
				i+1, c.all[len(c.all)-2].Log(), c.cur.Log())
			break
		}
		time.Sleep(100 * time.Millisecond) // load on this daemon before the next take-over
	}

	gapLine := load.stop(t, len(timings))

	// The pauses.
	var logged, observed []time.Duration
	gaps := strings.Fields(strings.TrimPrefix(gapLine, "gaps"))
	for i, tm := range timings {
		tm.logged, tm.logLines = toLoggedPause(c.all[i+1].Log())
		var worst time.Duration
		for _, g := range gaps {
			s, e, _ := strings.Cut(g, ":")
			from, _ := strconv.ParseInt(s, 10, 64)
			to, _ := strconv.ParseInt(e, 10, 64)
			if to >= tm.start && from <= tm.oldGone {
				worst = max(worst, time.Duration(to-from))
			}
		}
		observed = append(observed, worst)
		if tm.logged > 0 {
			logged = append(logged, tm.logged)
		}
		t.Logf("take-over %2d: command to ready %v, to old daemon gone %v; longest client gap %v (0: none over 1ms); daemon logged %v %q",
			i+1, time.Duration(tm.ready-tm.start).Round(time.Microsecond), time.Duration(tm.oldGone-tm.start).Round(time.Microsecond),
			worst.Round(time.Microsecond), tm.logged, tm.logLines)
	}
	if len(observed) > 0 {
		worstObserved := slices.Max(observed)
		t.Logf("client-observed pause over %d take-overs: median %v, worst %v", len(observed),
			toMedian(observed).Round(time.Microsecond), worstObserved.Round(time.Microsecond))
	}
	if len(logged) > 0 {
		worstLogged := slices.Max(logged)
		t.Logf("daemon-logged pause over %d take-overs: median %v, worst %v", len(logged),
			toMedian(logged).Round(time.Microsecond), worstLogged.Round(time.Microsecond))
	} else {
		t.Logf("the daemons logged no pause")
	}

	load.checkKept(t)

	// Counters continue, the store stays the same.
	statsAfter := daemonStats(t, m.Dir)
	statsBefore := load.statsBefore
	for _, k := range []string{"entries_created", "bytes_written", "rollovers", "requests.total", "owners_gone"} {
		if b, a := toStat(statsBefore, k), toStat(statsAfter, k); a < b || b < 0 {
			t.Errorf("stats %s went from %v to %v across the take-overs", k, b, a)
		}
	}
	if toStat(statsAfter, "rollovers") <= toStat(statsBefore, "rollovers") {
		t.Errorf("no rollover during the take-overs (stats rollovers %v, then %v)", toStat(statsBefore, "rollovers"), toStat(statsAfter, "rollovers"))
	}
	if statsBefore["store"] != statsAfter["store"] || statsAfter["owner_scope"] != "session" || toStat(statsAfter, "max_size") != maxSize {
		t.Errorf("settings changed across the take-overs: store %v then %v, owner scope %v, max size %v",
			statsBefore["store"], statsAfter["store"], statsAfter["owner_scope"], statsAfter["max_size"])
	}

	// The session's files go with it.
	load.sessionEnds(t)
	st := load.closeHandles(t)

	// Empty the mount: the store holds nothing but its lock, and the last daemon no backing file; then unmount
	// (cleanup checks the store is gone).
	load.empty(t, st["store"].(string), func() string {
		if n := deletedStoreFds(t, c.cur, st["store"].(string)); n != 0 {
			var memfds []string
			for _, target := range daemonFdTargets(t, c.cur) {
				if strings.HasPrefix(target, "/memfd:") {
					memfds = append(memfds, target)
				}
			}
			return fmt.Sprintf("backing files held by the last daemon=%d (its memfds %q)", n, memfds)
		}
		return ""
	})
	c.cur.stop(t)
}

// TestTakeoverRefused: a take-over that cannot happen leaves the serving daemon serving with nothing lost: a
// directory that no tempfs serves, a mount flag beside --takeover (the settings come from the running daemon),
// and a new process that refuses the state it is handed (TEMPFS_TAKEOVER_REFUSE=1). A stat loop and a
// half-read directory run throughout; afterwards a real take-over still works.
func TestTakeoverRefused(t *testing.T) {
	// With an owner quota (the charges go over with the take-over that works), so without passthrough.
	m := startMount(t, "--max-size", "64KiB", "--owner", "session", "--owner-quota", "1GiB")
	c := &toChain{cur: m, all: []*mount{m}}
	t.Cleanup(func() { c.cur.stop(t) })
	for _, d := range []string{"plain", "list"} {
		if err := os.Mkdir(m.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	toMakePlain(t, m.Path("plain"), 64<<10)
	for i := range 100 {
		if err := os.WriteFile(m.Path("list", fmt.Sprintf("e%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(m.Path("probe"), []byte("probe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.Path("probe"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(m.Path("held"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("held before")); err != nil {
		t.Fatal(err)
	}
	rd := toStart(t, "readdir", nil, "readdir", m.Path("list"), "100")
	probe := toStart(t, "stat loop", nil, "statloop", m.Path("probe"))
	rd.await(t, "ready ")
	probe.await(t, "ready")
	before := toSnapshot(t, m.Path("plain"))

	serving := func(when string) {
		t.Helper()
		select {
		case <-m.exited:
			t.Fatalf("%s: the daemon exited (%v); its log:\n%s", when, m.exitErr, m.Log())
		default:
		}
		if diffs := toSnapshotDiff(before, toSnapshot(t, m.Path("plain"))); len(diffs) > 0 {
			t.Fatalf("%s: the files changed:\n%s", when, strings.Join(diffs, "\n"))
		}
		buf := make([]byte, 64)
		if n, err := held.ReadAt(buf, 0); string(buf[:n]) != "held before" {
			t.Fatalf("%s: read through the held handle: %q, %v", when, buf[:n], err)
		}
		rd.send(t, "step")
		rd.await(t, "listed ")
		if err := os.WriteFile(m.Path("plain-new"), []byte(when), 0o644); err != nil {
			t.Fatalf("%s: a new file: %v", when, err)
		}
		if err := os.Remove(m.Path("plain-new")); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(what string, n *mount, ok bool) {
		t.Helper()
		if ok {
			t.Fatalf("%s: the take-over succeeded; its log:\n%s", what, n.Log())
		}
		if n.exitErr == nil || strings.TrimSpace(n.Log()) == "" {
			t.Errorf("%s: the new process exited with %v and said %q; want a non-zero status and a message", what, n.exitErr, n.Log())
		}
		t.Logf("%s: %v: %s", what, n.exitErr, strings.TrimSpace(n.Log()))
	}

	plain := &mount{Dir: t.TempDir(), StoreParent: t.TempDir()}
	n, ok := toLaunchTakeover(t, plain, nil)
	refused("a directory no tempfs serves", n, ok)
	if isMounted(plain.Dir) {
		_ = syscall.Unmount(plain.Dir, syscall.MNT_DETACH)
		t.Errorf("a refused take-over left a mount on %s", plain.Dir)
	}
	serving("after a take-over of another directory")

	n, ok = toLaunchTakeover(t, m, nil, "--max-size", "1MiB")
	refused("--max-size beside --takeover", n, ok)
	serving("after a take-over with a mount flag")

	n, ok = toLaunchTakeover(t, m, []string{"TEMPFS_TAKEOVER_REFUSE=1"})
	refused("a new process that refuses the state", n, ok)
	serving("after a refused take-over")

	takeOver(t, c)
	m = c.cur
	serving("after a take-over that worked")

	probe.send(t, "stop")
	probe.await(t, "gaps")
	probe.await(t, "ok")
	probe.exit(t)
	rd.send(t, "finish")
	rd.await(t, "ok")
	rd.exit(t)
}

// TestTakeoverOwnerSessionOfSeveralProcesses: a session in which more than one process made entries (a shell
// running mkdir, then writing itself) is carried by a take-over like any owner: its entries stay while it lives
// and go once it is killed.
func TestTakeoverOwnerSessionOfSeveralProcesses(t *testing.T) {
	m := startMount(t, "--owner", "session")
	c := &toChain{cur: m, all: []*mount{m}}
	t.Cleanup(func() { c.cur.stop(t) })
	// The shell stays (a trailing true keeps bash from exec'ing its last command) with a file open.
	leader, _ := owStart(t, &syscall.SysProcAttr{Setsid: true}, "bash", "-c",
		`mkdir "$1"/s && echo x > "$1"/s/a && exec 3>>"$1"/s/a && echo ready && sleep 300; true`, "bash", m.Dir)
	takeOver(t, c)
	tlStaysPresent(t, m.Path("s"), "a", "after the take-over, while its session lives")
	if err := syscall.Kill(-leader.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tlWaitGone(t, m.Dir, "s", "after its session was killed")
}
