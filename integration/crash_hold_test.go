package integration

// A crash under a holder (`tempfs mount --hold MOUNTPOINT`): the daemon is killed with SIGKILL, the holder starts
// a new one with the FUSE connection, the spool's descriptors and the crash record it kept, and the users see
// nothing but a pause. TestCrashUnderLoad runs the take-over test's workload (takeover_load_test.go) through 20
// such kills and checks every byte, name and handle; TestCrashRecoveryEdges kills the daemon at awkward moments.
// The pauses are logged, never judged.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// crDied is in the holder's line on its daemon's death by SIGKILL, logged before it starts the next daemon;
// crRecovered is in the next daemon's line once it serves the mount again.
const (
	crDied      = "died (signal 9)"
	crRecovered = "recovered the mount after its daemon died"
)

// crTookRE finds the time a recovery took in its log line (slog's text format).
var crTookRE = regexp.MustCompile(`took=([0-9.]+[a-zµμ]+)`)

// crRecordRE finds what a recovery line says of the record it read.
var crRecordRE = regexp.MustCompile(`entries=\S+ torn_entry=\S+`)

// crIsDaemon reports whether pid is a daemon that holder runs: exec'd with the holder's pid in its environment
// (before its exec a child shows its parent's environment).
func crIsDaemon(pid, holder int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return err == nil && slices.Contains(strings.Split(string(data), "\x00"), "TEMPFS_HOLDER_PID="+strconv.Itoa(holder))
}

// crDaemons are the daemons a test saw: its cleanup, which runs after the mount's own, kills any that still runs
// (a daemon whose holder is gone or stuck) and fails the test.
type crDaemons struct {
	mu   sync.Mutex
	pids []int
}

// crTrackDaemons is called before the mount starts, so that its cleanup runs after the mount's.
func crTrackDaemons(t *testing.T) *crDaemons {
	d := &crDaemons{}
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, pid := range d.pids {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == tempfsBin && !gone(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("daemon pid %d still ran after its mount was stopped", pid)
			}
		}
	})
	return d
}

func (d *crDaemons) add(pid int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.pids, pid) {
		d.pids = append(d.pids, pid)
	}
}

// crDaemon waits for m's holder to run a daemon other than old (0: any) and returns its pid.
func crDaemon(t testing.TB, m *mount, seen *crDaemons, old int) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, pid := range childrenOf(m.Pid()) {
			if pid != old && crIsDaemon(pid, m.Pid()) {
				seen.add(pid)
				return pid
			}
		}
		select {
		case <-m.exited:
			t.Fatalf("the holder exited (%v) instead of running a new daemon; its log:\n%s", m.exitErr, m.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the holder (pid %d) runs no new daemon 60s after pid %d; its log:\n%s", m.Pid(), old, m.Log())
		}
		time.Sleep(time.Millisecond)
	}
}

// crWaitRecovered waits until the holder logged its n-th daemon's death by SIGKILL and a daemon logged after it
// that it serves the mount again (the explicit ready signal of a recovery), and returns that line and the time
// it says the recovery took. The holder exiting, or no such line within 60 s, ends the test.
func crWaitRecovered(t testing.TB, m *mount, n int) (time.Duration, string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		log := m.Log()
		at := -1
		for i, from := 0, 0; i < n; i++ {
			j := strings.Index(log[from:], crDied)
			if j < 0 {
				at = -1
				break
			}
			at = from + j
			from = at + len(crDied)
		}
		if at >= 0 {
			if i := strings.Index(log[at:], crRecovered); i >= 0 {
				line, _, _ := strings.Cut(log[at+i:], "\n")
				var took time.Duration
				if mt := crTookRE.FindStringSubmatch(line); mt != nil {
					took, _ = time.ParseDuration(mt[1])
				}
				return took, line
			}
		}
		select {
		case <-m.exited:
			t.Fatalf("the holder exited (%v) before a daemon recovered the mount after death %d; its log:\n%s", m.exitErr, n, m.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon recovered the mount 60s after the holder's daemon death %d; the log:\n%s", n, log)
		}
		time.Sleep(time.Millisecond)
	}
}

// crTiming is one crash as the test saw it: CLOCK_MONOTONIC readings (ns) when it sent SIGKILL and when it saw the
// new daemon's recovery line, the time that line says the recovery took, and the daemons.
type crTiming struct {
	kill, seen int64
	took       time.Duration
	old, new   int
	line       string // the recovery line
}

// crCrash kills daemon old of m with SIGKILL, as its n-th death, and waits for the next daemon to serve.
func crCrash(t testing.TB, m *mount, seen *crDaemons, old, n int) crTiming {
	t.Helper()
	tm := crTiming{old: old, kill: toMono()}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", old, err)
	}
	tm.took, tm.line = crWaitRecovered(t, m, n)
	tm.seen = toMono()
	tm.new = crDaemon(t, m, seen, old)
	return tm
}

// crUnmount runs `tempfs unmount` from another process and checks that holder and daemons end (the holder with
// status 0) and leave no mount, no store directory and no process.
func crUnmount(t *testing.T, m *mount, seen *crDaemons) {
	t.Helper()
	if r := cliRun(t, cliQuickExit(), filepath.Dir(m.Dir), "", tempfsBin, "unmount", m.Dir); r.code != 0 {
		t.Fatalf("tempfs unmount: exit %d, %s", r.code, r.stderr)
	}
	m.expectExit(t, 30*time.Second)
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, pid := range seen.pids {
		if !gone(pid) {
			t.Errorf("daemon pid %d still runs after tempfs unmount ended its holder", pid)
		}
	}
}

// crBackingFds counts the descriptors of the mount's backing files (unlinked files in store) that the current
// daemon and the holder hold.
func crBackingFds(t testing.TB, m *mount, daemon int, store string) (inDaemon, inHolder int) {
	t.Helper()
	return deletedStoreFdsOf(t, daemon, store), deletedStoreFdsOf(t, m.Pid(), store)
}

// TestCrashUnderLoad kills the daemon of a held mount (--owner session) with SIGKILL 20 times in a row while
// fsx, fsstress, a held template file, a half-read directory, a stat loop and a session's writer run in
// processes of their own (toLoad), then checks that no operation failed, every byte, name, attribute and handle
// is there, the session's files go with it, the counters agree with the tree, and an emptied mount's store and
// descriptors are empty. It logs each crash's pause: from the kill to the new daemon's recovery line (with the
// recovery's own logged time), and the longest gap of the stat loop around it.
func TestCrashUnderLoad(t *testing.T) {
	const maxSize = 256 << 10
	const crashes = 20
	seen := crTrackDaemons(t)
	// --max-age is far from reached: the idle clocks must go on with every crash (a clock gone wrong removes
	// files). --owner session: the session's writer's files must go with it after the crashes.
	m := startMount(t, "--hold", "--max-size", "256KiB", "--max-age", "10d", "--owner", "session")
	daemon := crDaemon(t, m, seen, 0)
	load := toStartLoad(t, m, maxSize, "crashes", true)

	// The counters of what the mount did go on across each crash; the request counters do not (they are the
	// daemon's own, not in the crash record, and a crash could not keep those of the requests in flight anyway).
	counters := []string{"entries_created", "bytes_written", "rollovers"}
	var timings []crTiming
	for i := range crashes {
		before := daemonStats(t, m.Dir)
		tm := crCrash(t, m, seen, daemon, i+1)
		timings = append(timings, tm)
		daemon = tm.new
		after := daemonStats(t, m.Dir)
		for _, k := range counters {
			if b, a := toStat(before, k), toStat(after, k); a < b || b < 0 {
				t.Errorf("stats %s went from %v before crash %d to %v after it", k, b, i+1, a)
			}
		}
		load.step(t)
		if load.failed() {
			t.Errorf("operations failed by crash %d; stopping the crashes; the log:\n%s", i+1, m.Log())
			break
		}
		// Load on this daemon before the next crash, for longer than the second after which the holder no
		// longer counts a daemon's start against its start limit (TestCrashRecoveryEdges checks that limit).
		time.Sleep(1500 * time.Millisecond)
	}
	gapLine := load.stop(t, len(timings))

	// The pauses.
	var serving, took, observed []time.Duration
	gaps := strings.Fields(strings.TrimPrefix(gapLine, "gaps"))
	for i, tm := range timings {
		var worst time.Duration
		for _, g := range gaps {
			s, e, _ := strings.Cut(g, ":")
			from, _ := strconv.ParseInt(s, 10, 64)
			to, _ := strconv.ParseInt(e, 10, 64)
			if to >= tm.kill && from <= tm.seen {
				worst = max(worst, time.Duration(to-from))
			}
		}
		d := time.Duration(tm.seen - tm.kill)
		serving, took, observed = append(serving, d), append(took, tm.took), append(observed, worst)
		t.Logf("crash %2d: daemon %d killed, daemon %d serving %v later (its recovery took=%v; the rest is the holder seeing the death and the new process starting); longest stat-loop gap %v (0: none over 1ms); %s",
			i+1, tm.old, tm.new, d.Round(time.Microsecond), tm.took, worst.Round(time.Microsecond), crRecordRE.FindString(tm.line))
	}
	if len(timings) > 0 {
		for _, p := range []struct {
			what string
			ds   []time.Duration
		}{{"kill to recovery line seen", serving}, {"recovery took (logged)", took}, {"stat loop's longest gap", observed}} {
			t.Logf("pause over %d crashes, %s: median %v, worst %v", len(p.ds), p.what,
				toMedian(p.ds).Round(time.Microsecond), slices.Max(p.ds).Round(time.Microsecond))
		}
	}

	load.checkKept(t)

	// Counters continue, the store and settings stay the same.
	statsBefore, statsAfter := load.statsBefore, daemonStats(t, m.Dir)
	for _, k := range counters {
		if b, a := toStat(statsBefore, k), toStat(statsAfter, k); a < b || b < 0 {
			t.Errorf("stats %s went from %v to %v across the crashes", k, b, a)
		}
	}
	if toStat(statsAfter, "rollovers") <= toStat(statsBefore, "rollovers") {
		t.Errorf("no rollover during the crashes (stats rollovers %v, then %v)", toStat(statsBefore, "rollovers"), toStat(statsAfter, "rollovers"))
	}
	if statsBefore["store"] != statsAfter["store"] || statsAfter["owner_scope"] != "session" || toStat(statsAfter, "max_size") != maxSize ||
		toStat(statsAfter, "removed.max_age") != 0 {
		t.Errorf("settings changed across the crashes: store %v then %v, owner scope %v, max size %v, removed.max_age %v",
			statsBefore["store"], statsAfter["store"], statsAfter["owner_scope"], statsAfter["max_size"], toStat(statsAfter, "removed.max_age"))
	}

	// The session's files go with it; the handles close; the counters agree with a walk.
	load.sessionEnds(t)
	st := load.closeHandles(t)

	// Empty the mount: the store holds nothing but its lock, neither the daemon nor the holder keeps a backing
	// file.
	store := st["store"].(string)
	load.empty(t, store, func() string {
		if d, h := crBackingFds(t, m, daemon, store); d != 0 || h != 0 {
			return fmt.Sprintf("backing files held by the daemon=%d by the holder=%d", d, h)
		}
		return ""
	})
	crUnmount(t, m, seen)
}

// TestCrashRecoveryEdges kills the daemon of a held mount at awkward moments: while a big file is being written
// and rolls over to disk, right after a rename over an existing name, with files unlinked but still open, twice
// in a row (the second daemon during its recovery), and again and again until the holder's start limit stops it.
// After each, `tempfs unmount` ends holder and daemon and leaves no mount, process or store directory.
func TestCrashRecoveryEdges(t *testing.T) {
	const maxSize = 64 << 10
	pattern := func(n int, seed uint64) []byte {
		b := make([]byte, n)
		toFill(b, seed)
		return b
	}
	write := func(t *testing.T, path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	same := func(t *testing.T, path string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil || firstDiff(got, want) >= 0 {
			t.Errorf("%s: %d bytes (%v), want %d, differs at %d", filepath.Base(path), len(got), err, len(want), firstDiff(got, want))
		}
	}
	spoolOf := func(t *testing.T, path, want string) {
		t.Helper()
		if v, err := tlGetxattr(path, "user.tempfs.spool"); err != nil || v != want {
			t.Errorf("%s: user.tempfs.spool %q (%v), want %q", filepath.Base(path), v, err, want)
		}
	}
	cases := []struct {
		name string
		// run acts and crashes; it returns false when the holder is to have ended by itself.
		run func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool
	}{
		{"big write rolling over", func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool {
			const size = 4 << 20
			w := toStart(t, "big writer", nil, "bigwrite", m.Path("big"), strconv.Itoa(size), "7")
			w.await(t, "ready")
			w.await(t, "disk") // past --max-size: moved to disk, and still writing
			crCrash(t, m, seen, daemon, 1)
			w.await(t, "ok ")
			w.exit(t)
			w.report(t)
			same(t, m.Path("big"), pattern(size, 7))
			spoolOf(t, m.Path("big"), "disk")
			return true
		}},
		{"rename over an existing name", func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool {
			a, b := pattern(3*maxSize+5, 1), pattern(2*maxSize+7, 2)
			write(t, m.Path("a"), a)
			write(t, m.Path("b"), b)
			write(t, m.Path("small"), []byte("small"))
			sh(t, m.Dir, "mv a b && mv small b2")
			before := daemonStats(t, m.Dir)
			d := crCrash(t, m, seen, daemon, 1).new
			if names := listDir(t, m.Dir); !slices.Equal(names, []string{"b", "b2"}) {
				t.Errorf("after the crash the mount lists %q, want [b b2]", names)
			}
			same(t, m.Path("b"), a)
			same(t, m.Path("b2"), []byte("small"))
			spoolOf(t, m.Path("b"), "disk")
			st := daemonStats(t, m.Dir)
			if toStat(st, "files") != 2 || toStat(st, "disk_files") != 1 || toStat(st, "disk_bytes") != toStat(before, "disk_bytes") ||
				toStat(st, "ram_bytes") != toStat(before, "ram_bytes") {
				t.Errorf("after the crash stats say files %v, disk_files %v, disk_bytes %v, ram_bytes %v; want 2, 1, and %v, %v as before it",
					st["files"], st["disk_files"], st["disk_bytes"], st["ram_bytes"], before["disk_bytes"], before["ram_bytes"])
			}
			// The replaced file's bytes are gone: one backing file, in the daemon and in the holder.
			eventually(t, tlGoneTimeout, "one backing file in the daemon and in the holder", func() bool {
				in, h := crBackingFds(t, m, d, st["store"].(string))
				return in == 1 && h == 1
			})
			return true
		}},
		{"unlinked but open", func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool {
			ram, disk := pattern(1000, 3), pattern(3*maxSize+11, 4)
			write(t, m.Path("ram"), ram)
			write(t, m.Path("disk"), disk)
			var fds []*os.File
			for _, name := range []string{"ram", "disk"} {
				f, err := os.OpenFile(m.Path(name), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fds = append(fds, f)
			}
			sh(t, m.Dir, "rm ram disk")
			d := crCrash(t, m, seen, daemon, 1).new
			if names := listDir(t, m.Dir); len(names) != 0 {
				t.Errorf("after the crash the mount lists %q, want nothing", names)
			}
			for i, want := range [][]byte{ram, disk} {
				got := make([]byte, len(want)+1)
				n, err := fds[i].ReadAt(got, 0)
				if n != len(want) || firstDiff(got[:n], want) >= 0 {
					t.Errorf("read through the handle of unlinked %s after the crash: %d bytes (%v), want %d, differs at %d",
						fds[i].Name(), n, err, len(want), firstDiff(got[:n], want))
				}
				if _, err := fds[i].WriteAt([]byte("more"), int64(len(want))); err != nil {
					t.Errorf("write through the handle of unlinked %s after the crash: %v", fds[i].Name(), err)
				}
			}
			st := daemonStats(t, m.Dir)
			store := st["store"].(string)
			if in, h := crBackingFds(t, m, d, store); in != 1 || h != 1 || toStat(st, "open_handles") != 2 {
				t.Errorf("after the crash, with both files open: backing files in the daemon %d, in the holder %d, open handles %v; want 1, 1, 2",
					in, h, st["open_handles"])
			}
			for _, f := range fds {
				if err := f.Close(); err != nil {
					t.Errorf("close %s: %v", f.Name(), err)
				}
			}
			// Their bytes go after the last close.
			eventually(t, tlGoneTimeout, "no file, handle or backing file left after the last close", func() bool {
				st := daemonStats(t, m.Dir)
				in, h := crBackingFds(t, m, d, store)
				return in == 0 && h == 0 && toStat(st, "open_handles") == 0 && toStat(st, "disk_files") == 0 &&
					toStat(st, "memory_files") == 0 && toStat(st, "ram_bytes") == 0
			})
			return true
		}},
		{"two crashes in a row", func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool {
			small, big := []byte("small\n"), pattern(2*maxSize+3, 5)
			write(t, m.Path("small"), small)
			sh(t, m.Dir, "mkdir d && ln small d/link && ln -s small sym")
			write(t, m.Path("d", "big"), big)
			held, err := os.Open(m.Path("d", "big"))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// The second daemon dies as soon as it runs: during its recovery, or just after.
			second := crDaemon(t, m, seen, daemon)
			if err := syscall.Kill(second, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			crWaitRecovered(t, m, 2)
			crDaemon(t, m, seen, second)
			same(t, m.Path("small"), small)
			same(t, m.Path("d", "link"), small)
			same(t, m.Path("d", "big"), big)
			if target, err := os.Readlink(m.Path("sym")); err != nil || target != "small" {
				t.Errorf("readlink sym: %q, %v", target, err)
			}
			got := make([]byte, len(big))
			if n, err := held.ReadAt(got, 0); n != len(big) || firstDiff(got, big) >= 0 {
				t.Errorf("read through the handle held across both crashes: %d bytes (%v), differs at %d", n, err, firstDiff(got, big))
			}
			var st unix.Stat_t
			if err := unix.Stat(m.Path("small"), &st); err != nil || st.Nlink != 2 {
				t.Errorf("small: nlink %d (%v), want 2", st.Nlink, err)
			}
			return true
		}},
		{"start limit", func(t *testing.T, m *mount, seen *crDaemons, daemon int) bool {
			write(t, m.Path("f"), []byte("f"))
			// The first daemon serves for more than a second: its death does not count as a crash loop.
			time.Sleep(1500 * time.Millisecond)
			kills := 0
			for {
				if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				kills++
				if kills == 6 {
					break
				}
				// Each next daemon dies as soon as it runs: a crash loop.
				daemon = crDaemon(t, m, seen, daemon)
			}
			err := m.wait(t, 30*time.Second)
			m.stopped = true // what is left is checked here
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(m.Log(), "giving up") {
				t.Fatalf("after 6 deaths (5 of them within a second of their start) the holder exited with %v; want a failure, giving up; its log:\n%s", err, m.Log())
			}
			// Five deaths it started a new daemon after; the sixth ends it.
			if n := strings.Count(m.Log(), crDied); n != 5 || !strings.Contains(m.Log(), fmt.Sprintf("(pid %d) ended with signal 9 after 5 starts", daemon)) {
				t.Errorf("the holder logged %d deaths by SIGKILL it restarted after, want 5, and giving up after daemon %d; its log:\n%s", n, daemon, m.Log())
			}
			t.Logf("the holder: %s", strings.TrimSpace(m.Log()[strings.LastIndex(strings.TrimSpace(m.Log()), "\n")+1:]))
			var st unix.Stat_t
			if err := unix.Stat(m.Dir, &st); !errors.Is(err, unix.ENOTCONN) {
				t.Errorf("stat of the mount the holder gave up: %v, want ENOTCONN (aborted)", err)
			}
			if r := cliRun(t, cliQuickExit(), filepath.Dir(m.Dir), "", tempfsBin, "unmount", m.Dir); r.code != 0 {
				t.Errorf("tempfs unmount of the aborted mount: exit %d, %s", r.code, r.stderr)
			}
			if isMounted(m.Dir) {
				_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
				t.Errorf("%s is still mounted after tempfs unmount", m.Dir)
			}
			return false
		}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			seen := crTrackDaemons(t)
			m := startMount(t, "--hold", "--max-size", "64KiB")
			daemon := crDaemon(t, m, seen, 0)
			if !c.run(t, m, seen, daemon) {
				seen.mu.Lock()
				defer seen.mu.Unlock()
				for _, pid := range seen.pids {
					if !gone(pid) {
						t.Errorf("daemon pid %d still runs after its holder gave up", pid)
					}
				}
				// The last daemon was killed, so its store directory stays, with no data in it (every backing file
				// was unlinked from the start, and the holder closed its descriptors); the next mount with this store
				// parent removes it, as after any daemon's death.
				stores := storeDirs(t, m.StoreParent)
				for _, s := range stores {
					assertNoDataInStore(t, s)
				}
				next := startMountAt(t, m.Dir, m.StoreParent)
				for _, s := range stores {
					if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("the killed daemons' store %s is still there after a new mount (err %v)", s, err)
					}
				}
				next.stop(t)
				return
			}
			crUnmount(t, m, seen)
		})
	}
}

// crBigWrite: args FILE SIZE SEED. Writes FILE from nothing to SIZE bytes of toFill(SEED) in 16 KiB writes through
// one descriptor, a millisecond apart, so that it goes on writing long after the file moved to disk. It prints
// "ready" after the first write, "disk" once the file's user.tempfs.spool says disk, and "ok size=N" once it read
// the whole file back through the same descriptor and found every byte.
func crBigWrite(c *toChild, args []string) error {
	size, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	want := make([]byte, size)
	toFill(want, toSeed(args[2]))
	fd, err := unix.Open(args[0], unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	const chunk = 16 << 10
	disk := false
	for off := 0; off < size; off += chunk {
		end := min(off+chunk, size)
		if n, err := unix.Pwrite(fd, want[off:end], int64(off)); err != nil || n != end-off {
			c.fail("bigwrite: pwrite %d@%d: %d, %v", end-off, off, n, err)
			return nil
		}
		if off == 0 {
			c.say("ready")
		}
		if !disk {
			v, err := tlFgetxattr(fd, "user.tempfs.spool")
			if err != nil {
				c.fail("bigwrite: fgetxattr user.tempfs.spool at %d: %v", end, err)
				return nil
			}
			if disk = v == "disk"; disk {
				c.say("disk")
			}
		}
		time.Sleep(time.Millisecond)
	}
	if !disk {
		c.fail("bigwrite: the file of %d bytes never moved to disk", size)
	}
	got := make([]byte, size+1)
	n := 0
	for n < len(got) {
		k, err := unix.Pread(fd, got[n:], int64(n))
		if err != nil {
			c.fail("bigwrite: pread at %d: %v", n, err)
			return nil
		}
		if k == 0 {
			break
		}
		n += k
	}
	if n != size || firstDiff(got[:n], want) >= 0 {
		c.fail("bigwrite: read back %d bytes, want %d, differs at %d (sha256 %x)", n, size, firstDiff(got[:n], want), sha256.Sum256(got[:n]))
		return nil
	}
	c.say("ok size=%d", size)
	return nil
}
