package owner

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var handoverScopes = []Scope{Process, Group, Session, Cgroup}

// skipOrFail skips a test that cannot run here, or fails it under CI, where nothing may skip.
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skip(err)
}

// testCgroup makes a cgroup v2 of the test's (found through /proc/self/mountinfo) and removes it at cleanup;
// it returns its name as the tracker shows it and its directory.
func testCgroup(t *testing.T, tag string) (name, dir string) {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := cgroup2Mount(visibleCgroup2Mounts(info))
	if err != nil {
		skipOrFail(t, err)
	}
	base := fmt.Sprintf("tempfs-owner-handover-%d-%s", os.Getpid(), tag)
	dir = filepath.Join(mnt.point, base)
	if err := os.Mkdir(dir, 0o755); err != nil {
		skipOrFail(t, fmt.Errorf("cannot make a cgroup: %w", err))
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	return "/" + base, dir
}

// moveTo puts process pid into the cgroup at dir.
func moveTo(t *testing.T, dir string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
}

// cgroupRoot is the directory of the cgroup v2 root.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := cgroup2Mount(visibleCgroup2Mounts(info))
	if err != nil {
		t.Fatal(err)
	}
	return mnt.point
}

// testOwner is the processes of one owner, started by the test.
type testOwner struct {
	pids []int // pids[0] is asked for before the export; the others are seen only after the import
	cmds []*exec.Cmd
	dir  string // the cgroup's directory, for Cgroup
}

// startOwner starts the processes of a new owner of scope: one process (Process), or two in a process group,
// a session or a cgroup of their own. tag names the cgroup.
func startOwner(t *testing.T, scope Scope, tag string) *testOwner {
	t.Helper()
	o := &testOwner{}
	switch scope {
	case Process:
		o.cmds = append(o.cmds, start(t, nil, "sleep", "300"))
		o.pids = append(o.pids, o.cmds[0].Process.Pid)
	case Group, Session:
		// The leader starts a child in its group and session (sh without job control keeps its background
		// jobs there), prints the child's pid, and becomes a sleep.
		attr := &syscall.SysProcAttr{Setpgid: true}
		if scope == Session {
			attr = &syscall.SysProcAttr{Setsid: true}
		}
		leader := exec.Command("sh", "-c", "sleep 300 & echo $!; exec sleep 300")
		leader.SysProcAttr = attr
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
			_ = leader.Process.Kill()
			_ = leader.Wait()
			t.Fatalf("the leader printed %q: %v", line, err)
		}
		t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
		t.Cleanup(func() { _ = leader.Process.Kill(); _ = leader.Wait() })
		o.cmds = append(o.cmds, leader)
		o.pids = append(o.pids, child, leader.Process.Pid) // the child first: not the member a rescan would find first
	case Cgroup:
		_, o.dir = testCgroup(t, tag)
		for range 2 {
			cmd := start(t, nil, "sleep", "300")
			moveTo(t, o.dir, cmd.Process.Pid)
			o.cmds = append(o.cmds, cmd)
			o.pids = append(o.pids, cmd.Process.Pid)
		}
	}
	return o
}

// end kills the owner's processes and returns once every one has exited, and those the test started have
// been reaped.
func (o *testOwner) end(t *testing.T) {
	t.Helper()
	for _, pid := range o.pids {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // exited already
		}
		if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
			t.Fatal(err)
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 5000)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				t.Fatalf("process %d did not exit after SIGKILL: %v", pid, err)
			}
			break
		}
		unix.Close(pidfd)
	}
	for _, cmd := range o.cmds {
		_ = cmd.Wait()
	}
}

// exportState exports owners as the old daemon does, through JSON as the state travels.
func exportState(t *testing.T, tr *Tracker, owners []*Owner) TrackerState {
	t.Helper()
	st, err := tr.Export(owners)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back TrackerState
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// importState imports st into a new tracker of scope.
func importState(t *testing.T, scope Scope, st TrackerState) (*Tracker, *goneRecorder, []*Owner) {
	t.Helper()
	tr, rec := newTracker(t, scope)
	owners, err := tr.Import(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != len(st.Owners) {
		t.Fatalf("Import returned %d owners for %d", len(owners), len(st.Owners))
	}
	return tr, rec, owners
}

// TestImportedOwnersAreKept: after an import, every process of an imported owner, seen before the export or
// not, is owned by the very *Owner Import returned; two owners stay two; an owner gone at the export is
// returned gone and reported once; the counters continue; an owner whose processes exit after the import is
// reported gone, and only that one.
func TestImportedOwnersAreKept(t *testing.T) {
	for _, scope := range handoverScopes {
		t.Run(scope.String(), func(t *testing.T) {
			old, oldRec := newTracker(t, scope)
			a, b, c := startOwner(t, scope, "a"), startOwner(t, scope, "b"), startOwner(t, scope, "c")
			oa, ob, oc := mustOf(t, old, a.pids[0]), mustOf(t, old, b.pids[0]), mustOf(t, old, c.pids[0])
			c.end(t)
			eventually(t, "the old tracker reports c gone", func() bool { return oldRec.count(oc) == 1 })
			before := old.Stats()

			st := exportState(t, old, []*Owner{oa, oc, ob})
			tr, rec, got := importState(t, scope, st)
			ia, ic, ib := got[0], got[1], got[2]
			for i, want := range []*Owner{oa, oc, ob} {
				if got[i] == want || got[i].String() != want.String() || got[i].Scope() != scope {
					t.Errorf("imported owner %d: %v (%p), exported %v (%p)", i, got[i], got[i], want, want)
				}
			}
			if ia.Gone() || ib.Gone() || rec.count(ia) != 0 || rec.count(ib) != 0 {
				t.Fatalf("live owners imported gone: %v %v", ia.Gone(), ib.Gone())
			}
			if !ic.Gone() || rec.count(ic) != 1 {
				t.Errorf("the owner gone at the export: Gone %v, reported %d times; want gone, once", ic.Gone(), rec.count(ic))
			}
			if after := tr.Stats(); after.Live != before.Live || after.Gone != before.Gone {
				t.Errorf("stats before the export %+v, after the import %+v", before, after)
			}

			// The processes watched for the owners are the ones exported, found again without a scan of /proc.
			for _, s := range []OwnerState{st.Owners[0], st.Owners[2]} {
				for _, ps := range s.Processes {
					if !tr.watching(int(ps.Pid)) {
						t.Errorf("exported process %d is not watched after the import", ps.Pid)
					}
				}
			}
			for _, pid := range a.pids {
				if o := mustOf(t, tr, pid); o != ia {
					t.Errorf("process %d of a: owner %v (%p), want the imported %v (%p)", pid, o, o, ia, ia)
				}
			}
			for _, pid := range b.pids {
				if o := mustOf(t, tr, pid); o != ib {
					t.Errorf("process %d of b: owner %v (%p), want the imported %v (%p)", pid, o, o, ib, ib)
				}
			}

			a.end(t)
			eventually(t, "the imported owner reported gone after its processes exited", func() bool { return rec.count(ia) == 1 })
			if ib.Gone() || rec.count(ib) != 0 {
				t.Error("an imported owner whose processes live was reported gone")
			}
			if st := tr.Stats(); st.Live != 1 || st.Gone != before.Gone+1 {
				t.Errorf("after a ended: %+v, want 1 live, %d gone", st, before.Gone+1)
			}
		})
	}
}

// TestOwnerEndedBeforeTheImportIsReportedGone: an owner whose processes all exited between the export and the
// import is gone when Import returns, and reported gone once.
func TestOwnerEndedBeforeTheImportIsReportedGone(t *testing.T) {
	for _, scope := range handoverScopes {
		t.Run(scope.String(), func(t *testing.T) {
			old, _ := newTracker(t, scope)
			a, b := startOwner(t, scope, "a"), startOwner(t, scope, "b")
			oa, ob := mustOf(t, old, a.pids[0]), mustOf(t, old, b.pids[0])
			st := exportState(t, old, []*Owner{oa, ob})
			a.end(t)
			tr, rec, got := importState(t, scope, st)
			if !got[0].Gone() || rec.count(got[0]) != 1 {
				t.Errorf("owner ended meanwhile: Gone %v, reported %d times; want gone, reported once", got[0].Gone(), rec.count(got[0]))
			}
			if got[1].Gone() || rec.count(got[1]) != 0 {
				t.Error("a live owner imported gone")
			}
			if st := tr.Stats(); st.Live != 1 || st.Gone != 1 {
				t.Errorf("stats %+v, want 1 live, 1 gone", st)
			}
			if o := mustOf(t, tr, b.pids[0]); o != got[1] {
				t.Errorf("the live owner's process: owner %v, want the imported one", o)
			}
		})
	}
}

// TestImportChecksWhoIsBehindAPid: a pid whose process is not the exported one (simulated by changing the
// start time in the state, as a pid reused meanwhile would show) is not taken for it. For a process owner,
// the owner is gone and the process behind the pid is a new owner; a group or session is the same owner as
// long as some process is in it, so it is found again by its id, and the process record watched is the
// process now behind the pid; a cgroup's processes are a cache, not taken either. A cgroup removed and made
// again under the same name is another owner.
func TestImportChecksWhoIsBehindAPid(t *testing.T) {
	for _, scope := range handoverScopes {
		t.Run(scope.String(), func(t *testing.T) {
			old, _ := newTracker(t, scope)
			a := startOwner(t, scope, "a")
			oa := mustOf(t, old, a.pids[0])
			st := exportState(t, old, []*Owner{oa})
			exported := st.Owners[0]
			if len(exported.Processes) == 0 {
				t.Fatalf("no process exported for %v: %+v", oa, exported)
			}
			for i := range exported.Processes {
				exported.Processes[i].Start++
			}
			if scope == Process {
				exported.Start++
			}
			if scope == Cgroup {
				// The cgroup made again: emptied, removed, made and filled anew.
				root := cgroupRoot(t)
				for _, pid := range a.pids {
					moveTo(t, root, pid)
				}
				if err := os.Remove(a.dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(a.dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for _, pid := range a.pids {
					moveTo(t, a.dir, pid)
				}
			}
			st.Owners[0] = exported
			tr, rec, got := importState(t, scope, st)
			ia := got[0]
			now := mustOf(t, tr, a.pids[0])
			switch scope {
			case Process, Cgroup:
				if !ia.Gone() || rec.count(ia) != 1 {
					t.Errorf("imported %v: Gone %v, reported %d times; want gone, reported once", ia, ia.Gone(), rec.count(ia))
				}
				if now == ia || now.Gone() || now.String() != ia.String() {
					t.Errorf("the process now: owner %v (%p, gone %v), want a new live one, not the imported %p", now, now, now.Gone(), ia)
				}
			case Group, Session:
				if ia.Gone() || now != ia {
					t.Errorf("the %v of the process: imported %v (gone %v), owner now %v; want the imported one, live", scope, ia, ia.Gone(), now)
				}
			}
			realStart, err := readStat(uint32(a.pids[0]))
			if err != nil {
				t.Fatal(err)
			}
			tr.mu.Lock()
			p := tr.procs[uint32(a.pids[0])]
			tr.mu.Unlock()
			if p == nil || p.start != realStart.start {
				t.Errorf("the process record of %d: %+v, want start %d", a.pids[0], p, realStart.start)
			}
		})
	}
}

// TestImportedThreadCostsNoProcRead: a thread whose process the old daemon had looked up maps to its process
// in the new one without a read of /proc, and to the imported owner.
func TestImportedThreadCostsNoProcRead(t *testing.T) {
	old, _ := newTracker(t, Process)
	tid := otherThread(t)
	self := mustOf(t, old, tid)
	st := exportState(t, old, []*Owner{self})
	if st.Threads[uint32(tid)] != uint32(os.Getpid()) {
		t.Errorf("exported threads %v, want %d -> %d", st.Threads, tid, os.Getpid())
	}
	tr, _, got := importState(t, Process, st)
	before := procReads.Load()
	if o := mustOf(t, tr, tid); o != got[0] {
		t.Errorf("thread %d: owner %v, want the imported %v", tid, o, got[0])
	}
	if n := procReads.Load() - before; n != 0 {
		t.Errorf("a thread known before the take-over read /proc %d times, want 0", n)
	}
}

// TestImportRefuses: a state the tracker cannot take is refused before anything is watched.
func TestImportRefuses(t *testing.T) {
	old, _ := newTracker(t, Process)
	p := startOwner(t, Process, "")
	o := mustOf(t, old, p.pids[0])
	st := exportState(t, old, []*Owner{o})

	other, _ := newTracker(t, Process)
	if _, err := other.Export([]*Owner{o}); err == nil {
		t.Error("a tracker exported another tracker's owner")
	}
	if _, err := old.Export([]*Owner{o, o}); err == nil {
		t.Error("an owner listed twice was exported")
	}

	twice := st
	twice.Owners = []OwnerState{st.Owners[0], st.Owners[0]}
	used, _ := newTracker(t, Process)
	mustOf(t, used, os.Getpid())
	for _, c := range []struct {
		name  string
		scope Scope
		tr    *Tracker
		st    TrackerState
	}{
		{"another scope", Group, nil, st},
		{"an owner listed twice", Process, nil, twice},
		{"a tracker used already", Process, used, st},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := c.tr
			if tr == nil {
				tr, _ = newTracker(t, c.scope)
			}
			pidfds := tr.Stats().Pidfds
			if owners, err := tr.Import(c.st); err == nil {
				t.Errorf("imported: %v", owners)
			}
			if n := tr.Stats().Pidfds; n != pidfds {
				t.Errorf("a refused import left %d pidfds, had %d", n, pidfds)
			}
		})
	}
}

// TestExportKeepsTheTrackerWorking: an export changes nothing for the old tracker, whose owners go on (a
// take-over may be refused and the old daemon serve on).
func TestExportKeepsTheTrackerWorking(t *testing.T) {
	old, rec := newTracker(t, Process)
	p := startOwner(t, Process, "")
	o := mustOf(t, old, p.pids[0])
	if _, err := old.Export([]*Owner{o}); err != nil {
		t.Fatal(err)
	}
	if again := mustOf(t, old, p.pids[0]); again != o {
		t.Error("after an export the process got another owner")
	}
	p.end(t)
	eventually(t, "the owner reported gone by the exporting tracker", func() bool { return rec.count(o) == 1 })
}

// TestImportDropsAMemberThatLeft: a watched member of a group or session that left it (setsid, setpgid) between
// the export and the import is not watched for it: the group or session is found again through its leader,
// and ends with it.
func TestImportDropsAMemberThatLeft(t *testing.T) {
	for _, tc := range []struct {
		scope Scope
		how   string
	}{{Session, "setsid"}, {Group, "setpgid"}} {
		t.Run(tc.how, func(t *testing.T) {
			old, _ := newTracker(t, tc.scope)
			leader, child, move := startMover(t, tc.how)
			o := mustOf(t, old, child) // the child is the owner's only watched member
			st := exportState(t, old, []*Owner{o})
			if ps := st.Owners[0].Processes; len(ps) != 1 || ps[0].Pid != uint32(child) {
				t.Fatalf("exported members %v, want the child %d alone", ps, child)
			}
			move()
			tr, rec, got := importState(t, tc.scope, st)
			if got[0].Gone() {
				t.Fatal("imported gone while its leader lives")
			}
			if tr.watching(child) || !tr.watching(leader.Process.Pid) {
				t.Errorf("watching the child that left: %v, the leader: %v; want the leader alone", tr.watching(child), tr.watching(leader.Process.Pid))
			}
			if now := mustOf(t, tr, child); now == got[0] || now.id != uint32(child) {
				t.Errorf("the child that left: owner %v, want its own %v", now, tc.scope)
			}
			kill(t, leader)
			eventually(t, "the imported owner gone with its leader", func() bool { return rec.count(got[0]) == 1 })
		})
	}
}

// TestImportCostPerOwner measures what the take-over's pause owes to the owners: the export and the import of
// n process owners (a pidfd_open, a read of /proc/PID/stat and an epoll_ctl each on the importing side).
func TestImportCostPerOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("300 processes")
	}
	old, _ := newTracker(t, Process)
	const n = 300
	owners := make([]*Owner, 0, n)
	pids := make([]int, 0, n)
	for range n {
		p := start(t, nil, "sleep", "300")
		pids = append(pids, p.Process.Pid)
		owners = append(owners, mustOf(t, old, p.Process.Pid))
	}
	began := time.Now()
	st, err := old.Export(owners)
	if err != nil {
		t.Fatal(err)
	}
	exported := time.Since(began)
	tr, _ := newTracker(t, Process)
	began = time.Now()
	got, err := tr.Import(st)
	if err != nil {
		t.Fatal(err)
	}
	imported := time.Since(began)
	t.Logf("%d process owners: export %v (%v each), import %v (%v each)", n, exported, exported/n, imported, imported/n)
	for i, pid := range pids {
		if o := mustOf(t, tr, pid); o != got[i] {
			t.Fatalf("process %d: owner %v, want the imported %v", pid, o, got[i])
		}
	}
}

// TestImportRefusesAnotherCgroupView: cgroup names mean directories only in the view they were read in; a
// tracker that sees the tree otherwise refuses them rather than find every cgroup gone.
func TestImportRefusesAnotherCgroupView(t *testing.T) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cgroup2Mount(visibleCgroup2Mounts(info)); err != nil {
		skipOrFail(t, err)
	}
	old, _ := newTracker(t, Cgroup)
	st := exportState(t, old, nil)
	if st.CgroupView == nil {
		t.Fatal("no cgroup view exported")
	}
	view := *st.CgroupView
	view.NSRoot = "/elsewhere"
	st.CgroupView = &view
	tr, _ := newTracker(t, Cgroup)
	if owners, err := tr.Import(st); err == nil {
		t.Errorf("imported with another cgroup view: %v", owners)
	}
}

func TestDropRepeatedProcesses(t *testing.T) {
	st := TrackerState{Owners: []OwnerState{
		{ID: 7, Processes: []ProcessState{{Pid: 7, Start: 1}, {Pid: 7, Start: 1}, {Pid: 9, Start: 2}}},
		{ID: 8, Processes: []ProcessState{{Pid: 9, Start: 2}}},
		{ID: 10, Processes: []ProcessState{{Pid: 10, Start: 3}}},
	}}
	dropRepeatedProcesses(&st)
	got := fmt.Sprint(st.Owners[0].Processes, st.Owners[1].Processes, st.Owners[2].Processes)
	if want := "[{7 1} {9 2}] [] [{10 3}]"; got != want {
		t.Errorf("processes per owner %s, want %s", got, want)
	}
	tr, err := New(Config{Scope: Session})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	st.Scope = Session.String()
	if _, err := tr.checkImport(st); err != nil {
		t.Errorf("import of the deduplicated state: %v", err)
	}
}
