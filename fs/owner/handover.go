package owner

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// A new daemon that takes a live mount over from the one serving it takes its owners over too: the entries
// it receives are tagged with owners, and the processes, groups, sessions and cgroups behind them must be
// watched on, and the same *Owner handed out for their next requests, or their entries would never go (or go
// with the wrong owner). The old tracker describes its owners (Export); the new one finds their processes
// again by pid, each checked against its start time, re-opens the pidfds and re-makes the cgroup watches
// (Import). What happened in between is caught up with as it would have been seen: an owner whose processes
// all exited, or whose cgroup emptied, is reported gone.
//
// Lock order: as in tracker.go; t.mu is never held across a read of /proc or a stat of a cgroup.

// ProcessState is a process the tracker held a pidfd of: its pid and its start time (clock ticks since boot,
// field 22 of /proc/PID/stat), which together name one process for good, so that a pid reused meanwhile by
// another process is not taken for it.
type ProcessState struct {
	Pid   uint32 `json:"pid"`
	Start uint64 `json:"start"`
}

// OwnerState describes one owner for a new process. Its scope is the TrackerState's.
type OwnerState struct {
	// ID is the process's pid (Process), or the process group or session id (Group, Session); 0 for Cgroup.
	ID uint32 `json:"id,omitempty"`
	// Start is the process's start time, for Process: with ID, the owner's identity.
	Start uint64 `json:"start,omitempty"`
	// Cgroup is the cgroup's name as user.tempfs.owner shows it, for Cgroup.
	Cgroup string `json:"cgroup,omitempty"`
	// CgroupIno is the inode number of the cgroup's directory at the export (0 when unknown): a cgroup
	// removed and made again under the same name has another, and is another owner.
	CgroupIno uint64 `json:"cgroup_ino,omitempty"`
	// Name is the command name shown in Owner.String.
	Name string `json:"name,omitempty"`
	// Gone: the owner had ended at the export.
	Gone bool `json:"gone,omitempty"`
	// Processes are the processes watched for the owner, by pid: the process itself (Process), the members
	// watched (Group, Session: at least one while it lives), the processes seen in it (Cgroup, where they
	// only spare /proc reads: the cgroup's own events say when it ends).
	Processes []ProcessState `json:"processes,omitempty"`
}

// CgroupViewState is where a tracker of scope Cgroup finds cgroups. An importing tracker must see them the
// same way: the names exported mean directories only in the exporter's view.
type CgroupViewState struct {
	Root      string `json:"root"`
	MountRoot string `json:"mount_root"`
	NSRoot    string `json:"ns_root"`
}

// TrackerState is a tracker's state for a new process: its owners and what must continue.
type TrackerState struct {
	Scope string `json:"scope"` // as ScopeNames spell it
	// Owners are the owners given to Export, in their order, then the tracker's other live owners.
	Owners []OwnerState `json:"owners"`
	// Gone is Stats.Gone: owners ended since the first daemon started.
	Gone int64 `json:"gone"`
	// Threads is the cache of thread ids (other than main threads) to their process ids.
	Threads map[uint32]uint32 `json:"threads,omitempty"`
	// CgroupView is the exporter's view of the cgroup tree, for Cgroup.
	CgroupView *CgroupViewState `json:"cgroup_view,omitempty"`
}

// Export describes the tracker and the given owners: st.Owners[i] is owners[i] for i < len(owners), followed
// by the tracker's other live owners (handed out for requests that made no entry), so that the importing
// tracker's Stats continue. The caller guarantees that no Of or ParentOf runs meanwhile; the tracker keeps
// watching, and keeps working if the take-over is abandoned. An owner that ends after the export is found gone
// again by Import.
func (t *Tracker) Export(owners []*Owner) (TrackerState, error) {
	st := TrackerState{Scope: t.scope.String()}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return TrackerState{}, errors.New("owner tracker closed")
	}
	// The processes seen in each cgroup; for the other scopes an owner knows its own.
	var inCgroup map[*Owner][]*process
	if t.scope == Cgroup {
		inCgroup = make(map[*Owner][]*process)
		for _, p := range t.procs {
			if p.owner != nil && !p.owner.Gone() && p.pidfd >= 0 {
				inCgroup[p.owner] = append(inCgroup[p.owner], p)
			}
		}
	}
	given := make(map[*Owner]bool, len(owners))
	for i, o := range owners {
		switch {
		case o == nil:
			t.mu.Unlock()
			return TrackerState{}, fmt.Errorf("owner export: owner %d is nil", i)
		case given[o]:
			t.mu.Unlock()
			return TrackerState{}, fmt.Errorf("owner export: %v is listed twice", o)
		case o.scope != t.scope || (!o.Gone() && t.owners[o.key] != o):
			t.mu.Unlock()
			return TrackerState{}, fmt.Errorf("owner export: %v is not this tracker's", o)
		}
		given[o] = true
		st.Owners = append(st.Owners, ownerStateLocked(o, inCgroup[o]))
	}
	var others []*Owner
	for _, o := range t.owners {
		if !given[o] {
			others = append(others, o)
		}
	}
	slices.SortFunc(others, func(a, b *Owner) int {
		return cmp.Or(cmp.Compare(a.key.id, b.key.id), cmp.Compare(a.key.start, b.key.start), cmp.Compare(a.key.cgroup, b.key.cgroup))
	})
	for _, o := range others {
		st.Owners = append(st.Owners, ownerStateLocked(o, inCgroup[o]))
	}
	st.Gone = t.goneTotal.Load()
	t.mu.Unlock()
	dropRepeatedProcesses(&st)

	t.threads.mu.Lock()
	if len(t.threads.m) > 0 {
		st.Threads = make(map[uint32]uint32, len(t.threads.m))
		for tid, tgid := range t.threads.m {
			st.Threads[tid] = tgid
		}
	}
	t.threads.mu.Unlock()

	if t.scope == Cgroup {
		v := t.cgroups
		st.CgroupView = &CgroupViewState{Root: v.root, MountRoot: v.mountRoot, NSRoot: v.nsRoot}
		for i := range st.Owners {
			if o := &st.Owners[i]; !o.Gone && o.Cgroup != "/" {
				o.CgroupIno = cgroupIno(v.dirOf(o.Cgroup)) // 0 for a cgroup removed already: Import finds it gone
			}
		}
	}
	return st, nil
}

// dropRepeatedProcesses lists each process once: a group's or session's members may hold one process twice (a
// rescan watches the leader again with a pidfd of its own) or a process that has moved to another group or
// session since it was seen, which a later request or rescan sorts out. Import takes each pid for one owner's
// member; the owner listed first keeps it, and Import checks that it is still that owner's.
func dropRepeatedProcesses(st *TrackerState) {
	seen := make(map[uint32]bool)
	for i := range st.Owners {
		o := &st.Owners[i]
		o.Processes = slices.DeleteFunc(o.Processes, func(p ProcessState) bool {
			repeated := seen[p.Pid]
			seen[p.Pid] = true
			return repeated
		})
		if len(o.Processes) == 0 {
			o.Processes = nil
		}
	}
}

// ownerStateLocked describes o; seen are the processes seen in it, for a cgroup. The caller holds t.mu.
func ownerStateLocked(o *Owner, seen []*process) OwnerState {
	s := OwnerState{ID: o.id, Cgroup: o.cgroup, Name: o.name, Gone: o.Gone()}
	if o.scope == Process {
		s.Start = o.key.start
	}
	if s.Gone {
		return s
	}
	var procs []*process
	switch o.scope {
	case Process:
		if o.proc != nil {
			procs = append(procs, o.proc)
		}
	case Group, Session:
		for p := range o.members {
			procs = append(procs, p)
		}
	case Cgroup:
		procs = seen
	}
	for _, p := range procs {
		s.Processes = append(s.Processes, ProcessState{Pid: p.tgid, Start: p.start})
	}
	slices.SortFunc(s.Processes, func(a, b ProcessState) int { return cmp.Compare(a.Pid, b.Pid) })
	return s
}

// cgroupIno is the inode number of a cgroup's directory, 0 if it cannot be read.
func cgroupIno(dir string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0
	}
	return st.Ino
}

// Import makes this tracker, new and of the exporter's scope, take over the owners of st: it returns them in
// st.Owners's order, and hands out the same *Owner from Of for their processes from then on. Each owner's
// processes are found again by pid and checked against their start time (a pid reused meanwhile names
// another process, which is not the member); a group's or session's member must still be in it; their pidfds
// and the cgroups' watches are made again. An owner found gone (its process exited; every member of a group or
// session exited or left and /proc holds no other, as a rescan finds while the tracker watches; its cgroup
// emptied, was removed, or was made again under the same name) is returned gone and reported through
// Config.OnGone, as if it had ended while the old daemon watched it; an owner gone at the export is returned
// gone and reported too, so that its entries go in the new daemon whatever the old one had removed. Reports
// may come before Import returns (from this goroutine or the tracker's): the caller binds entries to the
// owners afterwards and must treat an owner that is Gone() by then as ended (package fs's tag does).
//
// Import must be called once, before any Of or ParentOf. On an error (a state this tracker cannot take: another
// scope, another cgroup view, duplicate owners or processes; no descriptor left) the tracker may hold part of
// the owners and is to be closed.
func (t *Tracker) Import(st TrackerState) ([]*Owner, error) {
	scope, err := ParseScope(st.Scope)
	if err != nil {
		return nil, fmt.Errorf("owner import: %w", err)
	}
	if scope != t.scope {
		return nil, fmt.Errorf("owner import: the state is of scope %v, this tracker's is %v", scope, t.scope)
	}
	if t.scope == Cgroup {
		v := t.cgroups
		mine := CgroupViewState{Root: v.root, MountRoot: v.mountRoot, NSRoot: v.nsRoot}
		if st.CgroupView == nil || *st.CgroupView != mine {
			return nil, fmt.Errorf("owner import: the state's cgroups are seen as %+v, this daemon sees them as %+v", st.CgroupView, mine)
		}
	}
	owners, err := t.checkImport(st)
	if err != nil {
		return nil, err
	}

	t.mu.Lock()
	fresh := !t.closed && len(t.owners) == 0 && len(t.byFd) == 0 && t.goneTotal.Load() == 0
	t.mu.Unlock()
	if !fresh {
		return nil, errors.New("owner import: the tracker is not new (closed, or owners were seen already)")
	}

	var reports []*Owner // owners to report gone, in order
	var rescans []*Owner // groups and sessions none of whose exported members is one now
	for i, s := range st.Owners {
		o := owners[i]
		if s.Gone {
			reports = append(reports, o)
			continue
		}
		procs, err := t.reopenAll(o, s.Processes)
		if err != nil {
			return nil, err
		}
		ended, rescan, err := t.adopt(o, procs)
		if err != nil {
			return nil, err
		}
		if ended {
			reports = append(reports, o)
		}
		if rescan {
			rescans = append(rescans, o)
		}
	}
	t.goneTotal.Add(st.Gone)
	t.importThreads(st.Threads)

	// A cgroup watched from now on: whatever happens to it next is an inotify event. What happened before is
	// read now.
	if t.scope == Cgroup {
		for i, s := range st.Owners {
			o := owners[i]
			if s.Gone || o.Gone() || o.cgroup == "/" {
				continue
			}
			dir := t.cgroups.dirOf(o.cgroup)
			if ino := cgroupIno(dir); ino == 0 || (s.CgroupIno != 0 && ino != s.CgroupIno) || !populated(filepath.Join(dir, "cgroup.events")) {
				if t.endIfLive(o) {
					reports = append(reports, o)
				}
			}
		}
	}
	for _, o := range reports {
		t.onGone(o)
	}
	for _, o := range rescans {
		t.rescan(o) // reports the owner gone if no member is found
	}
	return owners, nil
}

// checkImport makes the owners of st, without a side effect: it refuses a state with an owner or a process
// listed twice, or that does not fit the scope.
func (t *Tracker) checkImport(st TrackerState) ([]*Owner, error) {
	owners := make([]*Owner, len(st.Owners))
	keys := make(map[ownerKey]bool)
	pids := make(map[uint32]bool)
	for i, s := range st.Owners {
		key := ownerKey{scope: t.scope}
		switch t.scope {
		case Process:
			key.id, key.start = s.ID, s.Start
			if !s.Gone && len(s.Processes) > 0 && (len(s.Processes) != 1 || s.Processes[0] != ProcessState{Pid: s.ID, Start: s.Start}) {
				return nil, fmt.Errorf("owner import: process owner %d holds other processes %v", s.ID, s.Processes)
			}
		case Group, Session:
			key.id = s.ID
		case Cgroup:
			key.cgroup = s.Cgroup
			if s.Cgroup == "" || s.Cgroup[0] != '/' {
				return nil, fmt.Errorf("owner import: cgroup owner %d has no cgroup path (%q)", i, s.Cgroup)
			}
		}
		if (t.scope == Cgroup) == (s.ID != 0) {
			return nil, fmt.Errorf("owner import: owner %d has id %d in scope %v", i, s.ID, t.scope)
		}
		if !s.Gone {
			if keys[key] {
				return nil, fmt.Errorf("owner import: owner %d (%v %d %s) is listed twice", i, t.scope, s.ID, s.Cgroup)
			}
			keys[key] = true
			for _, p := range s.Processes {
				if pids[p.Pid] {
					return nil, fmt.Errorf("owner import: process %d is listed twice", p.Pid)
				}
				pids[p.Pid] = true
			}
		}
		o := &Owner{scope: t.scope, id: s.ID, cgroup: s.Cgroup, name: s.Name, key: key, watch: -1, parentWatch: -1}
		o.gone.Store(s.Gone)
		owners[i] = o
	}
	return owners, nil
}

// reopenAll finds an owner's exported processes again; those gone, or no longer in the owner's group or
// session, are left out.
func (t *Tracker) reopenAll(o *Owner, exported []ProcessState) ([]*process, error) {
	var procs []*process
	for _, ps := range exported {
		p, err := reopen(o, ps)
		if err != nil {
			for _, q := range procs {
				unix.Close(q.pidfd)
			}
			return nil, err
		}
		if p != nil {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// reopen returns the process ps names, held by a pidfd, if it still lives: the process now behind its pid
// started when ps did, and, for a group or session, is still in o's. nil, nil when it is not.
func reopen(o *Owner, ps ProcessState) (*process, error) {
	pidfd, err := unix.PidfdOpen(int(ps.Pid), unix.PIDFD_NONBLOCK)
	if err != nil {
		// ESRCH: no such process; EINVAL: the pid is a thread's now, of another process.
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EINVAL) {
			return nil, nil
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", ps.Pid, err) // EMFILE, ENFILE
	}
	unix.CloseOnExec(pidfd)
	// Read after the pidfd was opened, and the pidfd polled last: if it is not readable then, what was read
	// is the pidfd's process's.
	st, err := readStat(ps.Pid)
	member := err == nil && st.start == ps.Start && (o.scope != Group && o.scope != Session || o.holds(ps.Pid))
	if !member || pidfdExited(pidfd) {
		unix.Close(pidfd)
		if err != nil && !errors.Is(procError(err), ErrCallerGone) {
			return nil, fmt.Errorf("read the stat of process %d: %w", ps.Pid, err)
		}
		return nil, nil
	}
	return &process{tgid: ps.Pid, start: st.start, pidfd: pidfd, owner: o}, nil
}

// adopt makes o one of the tracker's live owners with its processes found again (their pidfds watched from
// now on), and for a cgroup watches it. ended: o was found gone (a process owner whose process is not found,
// a cgroup removed); rescan: a group or session none of whose exported members is one now, to be looked for
// in /proc.
func (t *Tracker) adopt(o *Owner, procs []*process) (ended, rescan bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fail := func(err error) (bool, bool, error) {
		for _, p := range procs {
			if p.pidfd >= 0 && t.byFd[int32(p.pidfd)] != p {
				unix.Close(p.pidfd)
			}
		}
		return false, false, err
	}
	if t.closed {
		return fail(errors.New("owner tracker closed"))
	}
	if t.owners[o.key] != nil {
		return fail(fmt.Errorf("owner import: %v is already watched", o))
	}
	for _, p := range procs {
		if err := t.epollAdd(p.pidfd); err != nil {
			return fail(err)
		}
		t.byFd[int32(p.pidfd)] = p
		t.procs[p.tgid] = p
	}
	t.owners[o.key] = o
	switch o.scope {
	case Process:
		if len(procs) == 0 {
			t.endLocked(o)
			return true, false, nil
		}
		o.proc = procs[0]
	case Group, Session:
		o.members = make(map[*process]struct{}, len(procs))
		for _, p := range procs {
			o.members[p] = struct{}{}
		}
		return false, len(procs) == 0, nil
	case Cgroup:
		if err := t.watchCgroupLocked(o, t.cgroups.dirOf(o.cgroup)); err != nil {
			if errors.Is(err, errMovedMeanwhile) { // cgroup.events is gone: so is the cgroup
				t.endLocked(o)
				return true, false, nil
			}
			// The entries' owner cannot be watched (no inotify watch left): refuse rather than keep
			// entries that would never go.
			return false, false, fmt.Errorf("owner import: %v: %w", o, err)
		}
	}
	return false, false, nil
}

// endIfLive ends o unless it has ended already; the caller reports it if so.
func (t *Tracker) endIfLive(o *Owner) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o.Gone() {
		return false
	}
	t.endLocked(o)
	return true
}

// importThreads takes over the thread cache, without the entries that no longer hold.
func (t *Tracker) importThreads(threads map[uint32]uint32) {
	t.threads.mu.Lock()
	defer t.threads.mu.Unlock()
	for tid, tgid := range threads {
		if len(t.threads.m) >= threadCacheSize {
			return
		}
		if tid != tgid && isThreadOf(tgid, tid) {
			if t.threads.m == nil {
				t.threads.m = make(map[uint32]uint32)
			}
			t.threads.m[tid] = tgid
		}
	}
}
