package owner

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, line string
		want       procStat
		bad        bool
	}{
		{"plain", "4242 (python3) S 1 4100 4000 0 -1 4194560 5 0 0 0 0 0 0 0 20 0 1 0 777 0 0",
			procStat{comm: "python3", state: 'S', ppid: 1, pgrp: 4100, session: 4000, start: 777}, false},
		{"name with ) and spaces", "7 (a) b (c)) Z 2 3 4 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0",
			procStat{comm: "a) b (c)", state: 'Z', ppid: 2, pgrp: 3, session: 4, start: 99}, false},
		{"truncated", "7 (x) S 1 2 3", procStat{}, true},
		{"no parens", "7 x S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.line))
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, want bad=%v", err, tt.bad)
			}
			if !tt.bad && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCgroup2Mount(t *testing.T) {
	tests := []struct {
		name, info, want string
		bad              bool
	}{
		{"hybrid", "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified", false},
		{"unified", "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", false},
		{"escaped", "30 23 0:26 / /mnt/c\\040g rw - cgroup2 none rw\n", "/mnt/c g", false},
		{"v1 only", "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2Mount(visibleCgroup2Mounts([]byte(tt.info)))
			if (err != nil) != tt.bad || got.point != tt.want {
				t.Errorf("got %q, %v; want %q (bad=%v)", got, err, tt.want, tt.bad)
			}
		})
	}
}

func TestParseScope(t *testing.T) {
	for _, s := range []Scope{None, Process, Group, Session, Cgroup} {
		got, err := ParseScope(s.String())
		if err != nil || got != s {
			t.Errorf("ParseScope(%q) = %v, %v", s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "Process", "user", "cgroups"} {
		if _, err := ParseScope(bad); err == nil {
			t.Errorf("ParseScope(%q) accepted", bad)
		}
	}
}

// goneRecorder collects OnGone calls.
type goneRecorder struct {
	mu   sync.Mutex
	gone map[*Owner]int
}

func (r *goneRecorder) record(o *Owner) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == nil {
		r.gone = make(map[*Owner]int)
	}
	r.gone[o]++
}

func (r *goneRecorder) count(o *Owner) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[o]
}

func newTracker(t *testing.T, scope Scope) (*Tracker, *goneRecorder) {
	t.Helper()
	rec := &goneRecorder{}
	tr, err := New(Config{Scope: scope, OnGone: rec.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr, rec
}

// start runs a command and kills it at cleanup; its stdout's first line, if wanted, is returned.
func start(t *testing.T, attr *syscall.SysProcAttr, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustOf(t *testing.T, tr *Tracker, pid int) *Owner {
	t.Helper()
	o, err := tr.Of(uint32(pid))
	if err != nil || o == nil {
		t.Fatalf("Of(%d) = %v, %v", pid, o, err)
	}
	return o
}

// watching reports whether the tracker holds a pidfd of process pid.
func (t *Tracker) watching(pid int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.byFd {
		if p.tgid == uint32(pid) {
			return true
		}
	}
	return false
}

func TestProcessOwnerEndsWithItsProcess(t *testing.T) {
	tr, rec := newTracker(t, Process)
	a := start(t, nil, "sleep", "300")
	b := start(t, nil, "sleep", "300")
	oa, ob := mustOf(t, tr, a.Process.Pid), mustOf(t, tr, b.Process.Pid)
	if got, want := oa.String(), fmt.Sprintf("process %d sleep", a.Process.Pid); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if again := mustOf(t, tr, a.Process.Pid); again != oa {
		t.Error("a second request of the same process got another owner")
	}
	if oa == ob {
		t.Fatal("two processes share an owner")
	}
	kill(t, a)
	eventually(t, "owner of the killed process reported gone", func() bool { return rec.count(oa) == 1 })
	if !oa.Gone() || ob.Gone() || rec.count(ob) != 0 {
		t.Errorf("gone: killed %v, alive %v", oa.Gone(), ob.Gone())
	}
	if st := tr.Stats(); st.Live != 1 || st.Gone != 1 || st.Pidfds != 1 {
		t.Errorf("stats %+v, want 1 live, 1 gone, 1 pidfd", st)
	}
	kill(t, b)
	eventually(t, "every pidfd closed", func() bool { return tr.Stats().Pidfds == 0 })
}

// TestKnownProcessCostsNoProcRead: a process seen before is recognized by its pidfd alone.
func TestKnownProcessCostsNoProcRead(t *testing.T) {
	for _, scope := range []Scope{Process, Group, Session} {
		t.Run(scope.String(), func(t *testing.T) {
			tr, _ := newTracker(t, scope)
			// A session of its own: the test's own session may have its leader outside the PID namespace
			// (session 0, as under CI's runner), and a process there has no group or session owner.
			p := start(t, &syscall.SysProcAttr{Setsid: true}, "sleep", "300")
			first := mustOf(t, tr, p.Process.Pid)
			before := procReads.Load()
			for range 10 {
				if o := mustOf(t, tr, p.Process.Pid); o != first {
					t.Fatalf("owner changed: %v, then %v", first, o)
				}
			}
			if n := procReads.Load() - before; n != 0 {
				t.Errorf("10 requests of a known process read /proc %d times, want 0", n)
			}
		})
	}
}

func TestThreadMapsToItsProcess(t *testing.T) {
	tr, _ := newTracker(t, Process)
	self := mustOf(t, tr, os.Getpid())
	tid := otherThread(t)
	if o := mustOf(t, tr, tid); o != self {
		t.Errorf("thread %d: owner %v, want the process's %v", tid, o, self)
	}
	if o, err := tr.Of(0); o != nil || err != nil {
		t.Errorf("Of(0) = %v, %v; want unowned", o, err)
	}
}

func TestIsThreadOf(t *testing.T) {
	tids := make(chan int)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		tids <- unix.Gettid()
		<-release
	}()
	thread := <-tids
	defer close(release)
	other := start(t, nil, "sleep", "300")
	ended := start(t, nil, "true")
	if err := ended.Wait(); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	for _, c := range []struct {
		name      string
		tgid, tid int
		want      bool
	}{
		{"a thread of this process", self, thread, true},
		{"the main thread", self, self, true},
		{"a thread of another process", other.Process.Pid, thread, false},
		{"another process as a thread of this one", self, other.Process.Pid, false},
		{"an ended process", ended.Process.Pid, ended.Process.Pid, false},
	} {
		if got := isThreadOf(uint32(c.tgid), uint32(c.tid)); got != c.want {
			t.Errorf("%s: isThreadOf(%d, %d) = %v, want %v", c.name, c.tgid, c.tid, got, c.want)
		}
	}
}

func TestGroupOwnerLivesUntilItsLastMember(t *testing.T) {
	tr, rec := newTracker(t, Group)
	first := start(t, &syscall.SysProcAttr{Setpgid: true}, "sleep", "300")
	second := start(t, &syscall.SysProcAttr{Setpgid: true, Pgid: first.Process.Pid}, "sleep", "300")
	other := start(t, &syscall.SysProcAttr{Setpgid: true}, "sleep", "300")
	o := mustOf(t, tr, first.Process.Pid)
	if got, want := o.String(), fmt.Sprintf("group %d", first.Process.Pid); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if mustOf(t, tr, other.Process.Pid) == o {
		t.Fatal("another group shares the owner")
	}
	kill(t, first) // the watched member: the tracker must find the second one in /proc
	eventually(t, "the second member watched", func() bool { return tr.watching(second.Process.Pid) })
	if o.Gone() || rec.count(o) != 0 {
		t.Fatal("group reported gone while a member lives")
	}
	if again := mustOf(t, tr, second.Process.Pid); again != o {
		t.Error("the second member maps to another owner")
	}
	kill(t, second)
	eventually(t, "group gone after its last member", func() bool { return rec.count(o) == 1 })
}

// TestGroupLeaderFoundWhenAMemberExits: when the only member seen exits, the live leader of its group is
// found (first, without a scan of /proc) and watched.
func TestGroupLeaderFoundWhenAMemberExits(t *testing.T) {
	tr, rec := newTracker(t, Group)
	leader := start(t, &syscall.SysProcAttr{Setpgid: true}, "sleep", "300")
	member := start(t, &syscall.SysProcAttr{Setpgid: true, Pgid: leader.Process.Pid}, "sleep", "300")
	o := mustOf(t, tr, member.Process.Pid)
	kill(t, member)
	eventually(t, "the leader watched", func() bool { return tr.watching(leader.Process.Pid) })
	if o.Gone() || rec.count(o) != 0 {
		t.Fatal("group gone while its leader lives")
	}
	kill(t, leader)
	eventually(t, "group gone after its leader", func() bool { return rec.count(o) == 1 })
}

// TestSessionOwnerIgnoresZombies: a member that has exited but was not reaped yet is not a member.
func TestSessionOwnerIgnoresZombies(t *testing.T) {
	tr, rec := newTracker(t, Session)
	// The leader starts a child in its session, prints the child's pid, and keeps running.
	leader := exec.Command("sh", "-c", "sleep 300 & echo $!; exec sleep 300")
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	t.Cleanup(func() { _ = leader.Process.Kill(); _ = leader.Wait() })
	o := mustOf(t, tr, leader.Process.Pid)
	// The leader's name is sh, or sleep once it has exec'd.
	if got, want := o.String(), fmt.Sprintf("session %d ", leader.Process.Pid); !strings.HasPrefix(got, want) {
		t.Errorf("String() = %q, want %q and the leader's name", got, want)
	}
	// Kill the leader but do not reap it yet: a zombie leader must not keep the session alive, the child must.
	if err := leader.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the child watched", func() bool { return tr.watching(child) })
	if o.Gone() {
		t.Fatal("session gone while its child lives")
	}
	// The child is reparented to init (or a subreaper) and reaped there once killed.
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session gone after its last live member, with its leader a zombie", func() bool { return rec.count(o) == 1 })
}

func TestCgroupOwnerEndsWhenEmpty(t *testing.T) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := cgroup2Mount(visibleCgroup2Mounts(info))
	if err != nil {
		t.Skip(err)
	}
	root := mnt.point
	for _, removeIt := range []bool{false, true} {
		t.Run(fmt.Sprintf("removed=%v", removeIt), func(t *testing.T) {
			name := fmt.Sprintf("tempfs-owner-test-%d-%v", os.Getpid(), removeIt)
			dir := filepath.Join(root, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatal(err)
				}
				t.Skipf("cannot make a cgroup: %v", err)
			}
			t.Cleanup(func() { _ = os.Remove(dir) })
			tr, rec := newTracker(t, Cgroup)
			p := start(t, nil, "sleep", "300")
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.Process.Pid)), 0); err != nil {
				t.Fatal(err)
			}
			o := mustOf(t, tr, p.Process.Pid)
			if got, want := o.String(), "cgroup /"+name; got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			if self := mustOf(t, tr, os.Getpid()); self == o {
				t.Fatal("a process outside the cgroup shares its owner")
			}
			if removeIt {
				// Move the process out (the cgroup empties) and remove the cgroup: either ends the owner.
				if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(p.Process.Pid)), 0); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			} else {
				kill(t, p)
			}
			eventually(t, "cgroup owner gone", func() bool { return rec.count(o) == 1 })
			if removeIt {
				if again := mustOf(t, tr, p.Process.Pid); again == o || again.String() != "cgroup /" {
					t.Errorf("after moving to the root: owner %v", again)
				}
			}
		})
	}
}

// TestReusedPidIsANewOwner makes a new process take a dead owner's pid through ns_last_pid.
func TestReusedPidIsANewOwner(t *testing.T) {
	tr, rec := newTracker(t, Process)
	for attempt := 0; attempt < 20; attempt++ {
		a := start(t, nil, "sleep", "300")
		oa := mustOf(t, tr, a.Process.Pid)
		kill(t, a)
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(a.Process.Pid-1)), 0); err != nil {
			t.Skipf("cannot steer pids here: %v", err)
		}
		b := start(t, nil, "sleep", "300")
		if b.Process.Pid != a.Process.Pid {
			continue // another process on the machine took the pid first
		}
		ob := mustOf(t, tr, b.Process.Pid)
		if ob == oa {
			t.Fatal("a process reusing a dead owner's pid inherited its ownership")
		}
		eventually(t, "the dead owner reported gone", func() bool { return rec.count(oa) == 1 })
		if ob.Gone() {
			t.Fatal("the new process's owner is gone")
		}
		return
	}
	t.Skip("the pid never came round (a busy machine)")
}

func TestManyShortLivedOwnersReleaseTheirDescriptors(t *testing.T) {
	tr, rec := newTracker(t, Process)
	var owners []*Owner
	for range 50 {
		p := start(t, nil, "true")
		o, err := tr.Of(uint32(p.Process.Pid))
		_ = p.Wait()
		if err == nil && o != nil {
			owners = append(owners, o)
		}
	}
	eventually(t, "every owner gone", func() bool {
		for _, o := range owners {
			if rec.count(o) != 1 {
				return false
			}
		}
		return true
	})
	if st := tr.Stats(); st.Pidfds != 0 || st.Live != 0 {
		t.Errorf("after all exited: %+v", st)
	}
}

// TestMemoryPerLiveOwner measures the tracker's heap per live process owner (its Owner, its process record
// and their map entries), besides its pidfd; the target is at most 1 KiB.
func TestMemoryPerLiveOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("300 processes")
	}
	tr, _ := newTracker(t, Process)
	const n = 300
	var procs []*exec.Cmd
	for range n {
		procs = append(procs, start(t, nil, "sleep", "300"))
	}
	mustOf(t, tr, os.Getpid()) // first-use growth of the maps is not per owner
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	owners := make([]*Owner, 0, n)
	for _, p := range procs {
		owners = append(owners, mustOf(t, tr, p.Process.Pid))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perOwner := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d live owners: %.0f bytes of heap each, plus one pidfd", n, perOwner)
	if perOwner > 1024 {
		t.Errorf("%.0f bytes per live owner, want at most 1 KiB", perOwner)
	}
	runtime.KeepAlive(owners)
}

func TestCgroupViewLocate(t *testing.T) {
	tests := []struct {
		name              string
		view              cgroupView
		shown             string
		wantName, wantDir string
		wantOK            bool
	}{
		{"host namespace", cgroupView{root: "/cg", mountRoot: "/", nsRoot: "/"}, "/ci.slice/job", "/ci.slice/job", "/cg/ci.slice/job", true},
		{"root cgroup", cgroupView{root: "/cg", mountRoot: "/", nsRoot: "/"}, "/", "/", "/cg", true},
		{"mount of a subtree", cgroupView{root: "/cg", mountRoot: "/kubepods", nsRoot: "/"}, "/kubepods/pod1", "/kubepods/pod1", "/cg/pod1", true},
		{"outside the mounted subtree", cgroupView{root: "/cg", mountRoot: "/kubepods", nsRoot: "/"}, "/system.slice", "", "", false},
		{"a prefix that is no parent", cgroupView{root: "/cg", mountRoot: "/kube", nsRoot: "/"}, "/kubepods", "", "", false},
		{"own namespace, inside", cgroupView{root: "/proc/1/root/sys/fs/cgroup", mountRoot: "/", nsRoot: "/k/plugin"}, "/", "/k/plugin", "/proc/1/root/sys/fs/cgroup/k/plugin", true},
		{"own namespace, a sibling", cgroupView{root: "/proc/1/root/sys/fs/cgroup", mountRoot: "/", nsRoot: "/k/plugin"}, "/../pod", "/k/pod", "/proc/1/root/sys/fs/cgroup/k/pod", true},
		{"own namespace, above", cgroupView{root: "/h", mountRoot: "/", nsRoot: "/k/plugin"}, "/../../system.slice/x", "/system.slice/x", "/h/system.slice/x", true},
		{"not a path", cgroupView{root: "/cg", mountRoot: "/", nsRoot: "/"}, "", "", "", false},
		{"above what the view shows", cgroupView{root: "/cg", mountRoot: "/", nsRoot: "/k"}, "/../../x", "", "", false},
		{"outside the namespace, no wider view", cgroupView{root: "/cg", mountRoot: "/", nsRoot: "/"}, "/../pod", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, dir, ok := tt.view.locate(tt.shown)
			if name != tt.wantName || dir != tt.wantDir || ok != tt.wantOK {
				t.Errorf("locate(%q) = %q, %q, %v; want %q, %q, %v", tt.shown, name, dir, ok, tt.wantName, tt.wantDir, tt.wantOK)
			}
			if ok && tt.view.dirOf(name) != dir {
				t.Errorf("dirOf(%q) = %q, want %q", name, tt.view.dirOf(name), dir)
			}
		})
	}
}

func TestNamespaceRoot(t *testing.T) {
	tests := []struct {
		hostName, shown, want string
		ok                    bool
	}{
		{"/k/plugin", "/", "/k/plugin", true},
		{"/k/plugin/sub", "/sub", "/k/plugin", true},
		{"/sub", "/sub", "/", true},
		{"/k/xsub", "/sub", "", false},
		{"/k/pod", "/../pod", "", false},
	}
	for _, tt := range tests {
		got, ok := namespaceRoot(tt.hostName, tt.shown)
		if got != tt.want || ok != tt.ok {
			t.Errorf("namespaceRoot(%q, %q) = %q, %v; want %q, %v", tt.hostName, tt.shown, got, ok, tt.want, tt.ok)
		}
	}
}

// moverScript runs as the leader of a session of its own (and so of a group of its own). It starts a child in
// its session and group, prints the child's pid, and tells the child to leave (setsid or setpgid, given as
// argv[1]) when a line arrives on its stdin; the child prints "moved" once it has. Both then sleep.
const moverScript = `
import os, sys, time
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    if sys.argv[1] == "setsid":
        os.setsid()
    else:
        os.setpgid(0, 0)
    print("moved", flush=True)
    time.sleep(300)
    os._exit(0)
print(pid, flush=True)
sys.stdin.readline()
os.write(w, b"x")
time.sleep(300)
`

// startMover starts moverScript and returns the leader, the child's pid, a function that makes the child move
// (and returns once it has), and the leader's cleanup-safe kill.
func startMover(t *testing.T, how string) (leader *exec.Cmd, child int, move func()) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip(err)
	}
	leader = exec.Command(python, "-c", moverScript, how)
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdin, err := leader.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err = strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(child, syscall.SIGKILL)
		_ = leader.Process.Kill()
		_ = leader.Wait()
	})
	move = func() {
		if _, err := stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "moved" {
			t.Fatalf("the child did not move: %q, %v", line, err)
		}
	}
	return leader, child, move
}

// TestOwnerFollowsAMove: a process that leaves its group or session is owned by its new one from its next
// request on, and its old owner lives on while another member does, ends when that member exits (whether or
// not the mover made a request after moving), and the mover's new owner lives while the mover does.
func TestOwnerFollowsAMove(t *testing.T) {
	for _, tc := range []struct {
		scope Scope
		how   string
	}{{Session, "setsid"}, {Group, "setpgid"}} {
		for _, askAfter := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v asked after the move=%v", tc.how, askAfter), func(t *testing.T) {
				tr, rec := newTracker(t, tc.scope)
				leader, child, move := startMover(t, tc.how)
				old := mustOf(t, tr, child) // the child is the old owner's only watched member
				if old.id != uint32(leader.Process.Pid) {
					t.Fatalf("the child's owner is %v, want the leader's %d", old, leader.Process.Pid)
				}
				move()
				var moved *Owner
				if askAfter {
					moved = mustOf(t, tr, child)
					if moved == old || moved.id != uint32(child) {
						t.Fatalf("after %s the child's owner is %v, want its own %v %d", tc.how, moved, tc.scope, child)
					}
				}
				if old.Gone() {
					t.Fatal("the old owner ended while its leader lives")
				}
				kill(t, leader)
				// Within the member check's period and a rescan: allow a generous bound, the test only
				// checks that it happens.
				eventually(t, "the old owner ended after its last member left and the other exited", func() bool { return rec.count(old) == 1 })
				if moved != nil && (moved.Gone() || rec.count(moved) != 0) {
					t.Error("the mover's new owner ended while the mover lives")
				}
			})
		}
	}
}

// TestCgroupOwnerFollowsAMove: a process that moved to another cgroup owns its new entries there.
func TestCgroupOwnerFollowsAMove(t *testing.T) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := cgroup2Mount(visibleCgroup2Mounts(info))
	if err != nil {
		t.Skip(err)
	}
	var dirs [2]string
	for i := range dirs {
		dirs[i] = filepath.Join(mnt.point, fmt.Sprintf("tempfs-owner-move-%d-%d", os.Getpid(), i))
		if err := os.Mkdir(dirs[i], 0o755); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skipf("cannot make a cgroup: %v", err)
		}
		t.Cleanup(func() { _ = os.Remove(dirs[i]) })
	}
	tr, rec := newTracker(t, Cgroup)
	p := start(t, nil, "sleep", "300")
	into := func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	into(dirs[0])
	a := mustOf(t, tr, p.Process.Pid)
	into(dirs[1])
	b := mustOf(t, tr, p.Process.Pid)
	if b == a || b.String() != "cgroup /"+filepath.Base(dirs[1]) {
		t.Fatalf("after the move: owner %v, want the new cgroup (was %v)", b, a)
	}
	eventually(t, "the emptied cgroup's owner ended", func() bool { return rec.count(a) == 1 })
	if b.Gone() {
		t.Error("the new cgroup's owner ended while the process lives in it")
	}
	into(mnt.point)
}

func TestVisibleCgroup2Mounts(t *testing.T) {
	const (
		host    = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
		tmpfs   = "50 41 0:40 / /sys/fs/cgroup rw - tmpfs none rw\n"
		fresh   = "51 50 0:38 / /sys/fs/cgroup/unified rw - cgroup2 none rw\n"
		same    = "52 41 0:38 /sub /sys/fs/cgroup/unified rw - cgroup2 none rw\n"
		another = "53 23 0:38 /../.. /mnt/cg rw - cgroup2 none rw\n"
	)
	tests := []struct {
		name, table string
		want        []cgroupMount
	}{
		{"one", host, []cgroupMount{{"/sys/fs/cgroup/unified", "/"}}},
		{"hidden by a mount above it, then a fresh one", host + tmpfs + fresh, []cgroupMount{{"/sys/fs/cgroup/unified", "/"}}},
		{"hidden by a mount above it", host + tmpfs, nil},
		{"hidden by a mount at its point", host + same, []cgroupMount{{"/sys/fs/cgroup/unified", "/sub"}}},
		{"two places", host + another, []cgroupMount{{"/sys/fs/cgroup/unified", "/"}, {"/mnt/cg", "/../.."}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := visibleCgroup2Mounts([]byte(tt.table))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
