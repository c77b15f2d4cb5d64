package owner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Lock order: Tracker.mu is a leaf. It is never held across a read of /proc or a call of OnGone; it is held
// across the few syscalls that must not race with the event loop closing a descriptor (poll of a pidfd,
// epoll_ctl, inotify_add_watch): the loop closes a pidfd under it and marks the process (pidfd -1), so a
// pidfd polled under it is the process's own, never a number reused by another descriptor.

// ErrCallerGone is returned when the process behind a request has already exited (killed mid-request): it
// cannot own anything.
var ErrCallerGone = errors.New("the calling process has exited")

// ErrNoParent is returned by ParentOf for a process whose parent the daemon cannot see (init, or a process
// whose parent lives outside the daemon's PID namespace).
var ErrNoParent = errors.New("the calling process has no parent in the daemon's PID namespace")

// Config configures a Tracker.
type Config struct {
	Scope Scope
	// OnGone is called, from the tracker's goroutine, once for each owner that has ended. It must not block
	// for long: the next owner's end waits for it.
	OnGone func(*Owner)
	Logger *slog.Logger
	// Mountinfo is /proc/self/mountinfo's content, where the cgroup v2 mount is found; nil reads it.
	Mountinfo []byte
}

// Tracker maps requests to owners and watches them. One goroutine waits on one epoll set holding the pidfd
// of every process seen making an entry (until it exits) and one inotify descriptor for every cgroup watched.
type Tracker struct {
	scope   Scope
	onGone  func(*Owner)
	log     *slog.Logger
	cgroups cgroupView // for Cgroup: where callers' cgroups are found

	epfd, inotifyFd, wakeFd int
	done                    chan struct{}

	mu      sync.Mutex
	procs   map[uint32]*process // by thread group id: the processes seen, while they live (a cache)
	threads ThreadGroups        // thread id to process id
	byFd    map[int32]*process  // every pidfd held, in the epoll set
	owners  map[ownerKey]*Owner // the live owners
	byWatch map[int32]*Owner    // cgroup.events watches
	// children are the watched cgroups by the watch of their parent directory and their name in it.
	children map[int32]map[string]*Owner
	closed   bool

	goneTotal atomic.Int64
	// unownedLogged holds the reasons already logged for making a caller's entries unowned.
	unownedLogged sync.Map

	// checks is the member check's buffer, reused; only the event loop uses it.
	checks []membership
}

// New starts a tracker for a scope other than None.
func New(cfg Config) (*Tracker, error) {
	if cfg.Scope == None {
		return nil, errors.New("owner.New: scope none needs no tracker")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Tracker{
		scope: cfg.Scope, onGone: cfg.OnGone, log: cfg.Logger, done: make(chan struct{}),
		epfd: -1, inotifyFd: -1, wakeFd: -1,
		procs: make(map[uint32]*process), byFd: make(map[int32]*process),
		owners: make(map[ownerKey]*Owner), byWatch: make(map[int32]*Owner), children: make(map[int32]map[string]*Owner),
	}
	if t.onGone == nil {
		t.onGone = func(*Owner) {}
	}
	if cfg.Scope == Cgroup {
		info := cfg.Mountinfo
		if info == nil {
			var err error
			if info, err = os.ReadFile("/proc/self/mountinfo"); err != nil {
				return nil, err
			}
		}
		view, err := newCgroupView(info, cfg.Logger)
		if err != nil {
			return nil, err
		}
		t.cgroups = view
	}
	var err error
	if t.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if t.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		t.closeFds()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := t.epollAdd(t.wakeFd); err != nil {
		t.closeFds()
		return nil, err
	}
	if cfg.Scope == Cgroup {
		if t.inotifyFd, err = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
			t.closeFds()
			return nil, fmt.Errorf("inotify_init1: %w", err)
		}
		if err := t.epollAdd(t.inotifyFd); err != nil {
			t.closeFds()
			return nil, err
		}
	}
	go t.loop()
	return t, nil
}

func (t *Tracker) epollAdd(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(t.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

func (t *Tracker) closeFds() {
	for _, fd := range []int{t.epfd, t.wakeFd, t.inotifyFd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// Close stops watching and releases every descriptor. No OnGone call happens after it returns.
func (t *Tracker) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(t.wakeFd, one[:])
	<-t.done
	t.mu.Lock()
	for fd, p := range t.byFd {
		unix.Close(int(fd))
		p.pidfd = -1
	}
	clear(t.byFd)
	clear(t.procs)
	t.mu.Unlock()
	t.closeFds()
}

// Stats are the tracker's counts for `tempfs status`.
type Stats struct {
	Live   int   // owners alive now
	Gone   int64 // owners ended since the start
	Pidfds int   // process descriptors held
}

func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{Live: len(t.owners), Gone: t.goneTotal.Load(), Pidfds: len(t.byFd)}
}

// Scope is the tracker's scope.
func (t *Tracker) Scope() Scope { return t.scope }

// Of returns the owner of the process behind a request from thread tid, as the process is at this moment:
// its group, session and cgroup are read again on every call, since a process may leave them (setsid,
// setpgid, a move to another cgroup) and a daemonizer's pidfile made after its setsid belongs to the new
// session. nil, nil means unowned: tid 0 (a caller in a PID namespace the daemon cannot see), a group or
// session led from outside the daemon's PID namespace, or a cgroup the daemon cannot watch (logged once).
// The process itself is cached: its pidfd, not yet readable, proves that its pid still names it.
func (t *Tracker) Of(tid uint32) (*Owner, error) {
	if tid == 0 {
		return nil, nil
	}
	// The common case of --owner process in one lock round and one poll: a known process's main thread.
	if t.scope == Process {
		t.mu.Lock()
		var o *Owner
		if p := t.procs[tid]; p != nil && p.owner != nil && !p.owner.Gone() && !p.exitedLocked() {
			o = p.owner
		}
		t.mu.Unlock()
		if o != nil {
			return o, nil
		}
	}
	// The common case of --owner group or session: a known process still in the group or session it was in.
	groupOrSession := t.scope == Group || t.scope == Session
	if groupOrSession {
		if o := t.ownerOfKnownMember(tid); o != nil {
			return o, nil
		}
	}
	tgid, err := t.threadGroup(tid)
	if err != nil {
		return nil, err
	}
	if groupOrSession && tgid != tid {
		if o := t.ownerOfKnownMember(tgid); o != nil {
			return o, nil
		}
	}
	for round := 0; ; round++ {
		p, err := t.process(tgid)
		if err != nil {
			return nil, err
		}
		if t.scope == Process {
			if o, _ := t.ownerIfCurrent(p, p.key(Process)); o != nil {
				return o, nil
			}
		}
		where, err := t.whereNow(p)
		if err != nil {
			return nil, err
		}
		// Asked after the scope was read: if the process had exited meanwhile, its pid may name another
		// process by now, and what was read is that one's.
		o, exited := t.ownerIfCurrent(p, where.key)
		switch {
		case exited:
			return nil, ErrCallerGone
		case where.unowned:
			return nil, nil
		case o != nil:
			return o, nil
		}
		o, err = t.join(p, where)
		if errors.Is(err, errMovedMeanwhile) && round < maxJoinRounds {
			continue
		}
		return o, err
	}
}

// ownerOfKnownMember returns the owner of a process seen before if the process lives and is still in that
// owner's group or session, in two lock rounds, one getpgid or getsid and one poll; nil sends the caller the
// long way. pid may be a thread's id: a live process's id is its main thread's alone. The poll comes after
// the id was read: if the process had exited meanwhile, its pid may name another process by now.
func (t *Tracker) ownerOfKnownMember(pid uint32) *Owner {
	t.mu.Lock()
	p := t.procs[pid]
	t.mu.Unlock()
	if p == nil {
		return nil
	}
	id, err := groupOrSession(t.scope, pid)
	if err != nil || id == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o := p.owner; o != nil && o.key.id == id && !o.Gone() && !p.exitedLocked() {
		return o
	}
	return nil
}

// maxJoinRounds bounds Of's retries against a process that keeps moving between cgroups while it is joined.
const maxJoinRounds = 3

// errMovedMeanwhile: the cgroup read for a process was removed before it could be watched, so the process
// had left it (a cgroup is removed only when empty); its cgroup is read again.
var errMovedMeanwhile = errors.New("the process left its cgroup while it was read")

// key is the owner key of scope Process for p.
func (p *process) key(scope Scope) ownerKey {
	return ownerKey{scope: scope, id: p.tgid, start: p.start}
}

// ownerIfCurrent returns p's owner if it is still the one of key and has not ended (the common case of a
// known process that did not move), and whether p has exited, in one lock round.
func (t *Tracker) ownerIfCurrent(p *process, key ownerKey) (o *Owner, exited bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p.exitedLocked() {
		return nil, true
	}
	if o := p.owner; o != nil && o.key == key && !o.Gone() {
		return o, false
	}
	return nil, false
}

// exitedLocked reports whether p has exited: its pidfd is readable, or the event loop saw that and closed it.
// The caller holds t.mu, which the loop holds to close a pidfd, so the descriptor polled is p's own.
func (p *process) exitedLocked() bool {
	return p.pidfd < 0 || pidfdExited(p.pidfd)
}

// where is what owns a process's new entries now.
type where struct {
	key       ownerKey
	unowned   bool   // nobody: a group or session led from outside the PID namespace, an unreachable cgroup
	cgroupDir string // the cgroup's directory, for Cgroup
	name      string // the command name to show: the process's for Process, the session leader's for Session
}

// whereNow reads the scope of a live process as it is now: one syscall for a group or session, a read of
// /proc/PID/cgroup for a cgroup. The caller checks afterwards that the pidfd is still not readable.
func (t *Tracker) whereNow(p *process) (where, error) {
	w := where{key: ownerKey{scope: t.scope}}
	switch t.scope {
	case Process:
		w.key = p.key(Process)
		st, err := readStat(p.tgid)
		if err != nil {
			return w, procError(err)
		}
		w.name = st.comm
	case Group, Session:
		id, err := groupOrSession(t.scope, p.tgid)
		if err != nil {
			return w, err
		}
		w.key.id, w.unowned = id, id == 0
		if t.scope == Session && !w.unowned && !t.hasOwner(w.key) {
			w.name = t.sessionLeaderName(id) // only a new session's owner needs its name
		}
	case Cgroup:
		shown, err := readCgroup(p.tgid)
		if err != nil {
			return w, procError(err)
		}
		name, dir, ok := t.cgroups.locate(shown)
		if !ok {
			t.logUnowned("cgroup outside the daemon's view", "cgroup", shown)
			w.unowned = true
			return w, nil
		}
		w.key.cgroup, w.cgroupDir = name, dir
	}
	return w, nil
}

// logUnowned logs, once per reason, that entries of some callers are made unowned.
func (t *Tracker) logUnowned(reason string, args ...any) {
	if _, seen := t.unownedLogged.LoadOrStore(reason, true); !seen {
		t.log.Warn("entries of some callers are unowned (kept as with --owner none): "+reason, args...)
	}
}

// process returns the process tgid, held by a pidfd: the one seen before while its pidfd says it lives, or
// the process now behind the pid, read from /proc (its start time names it for good).
func (t *Tracker) process(tgid uint32) (*process, error) {
	t.mu.Lock()
	if p := t.procs[tgid]; p != nil && !p.exitedLocked() {
		t.mu.Unlock()
		return p, nil
	}
	t.mu.Unlock()
	pidfd, err := unix.PidfdOpen(int(tgid), unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrCallerGone
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", tgid, err) // EMFILE, ENFILE: the caller maps it
	}
	unix.CloseOnExec(pidfd)
	// Read after the pidfd was opened: if the pidfd is still not readable afterwards, what was read is the
	// pidfd's process, not a newer one with the same pid. Whether it exited is the pidfd's to say, not the
	// state in stat: a process whose main thread ended (pthread_exit) shows its leader as a zombie while its
	// other threads run on.
	st, err := readStat(tgid)
	if err != nil || pidfdExited(pidfd) {
		unix.Close(pidfd)
		if err != nil {
			return nil, procError(err)
		}
		return nil, ErrCallerGone
	}
	p := &process{tgid: tgid, start: st.start, pidfd: pidfd}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		unix.Close(pidfd)
		return nil, errors.New("owner tracker closed")
	}
	if old := t.procs[tgid]; old != nil && old.start == p.start && !old.exitedLocked() {
		unix.Close(pidfd) // another thread of the process read it meanwhile
		return old, nil
	}
	if err := t.epollAdd(pidfd); err != nil {
		unix.Close(pidfd)
		return nil, err
	}
	t.byFd[int32(pidfd)] = p
	t.procs[tgid] = p
	return p, nil
}

// join makes w's owner (found or new) the owner of p, and takes p out of the group or session it was a
// member of; an owner whose last watched member left is rescanned. For a new cgroup owner it starts the
// watch: a cgroup that cannot be watched makes p's entries unowned (logged once), never a failed create.
func (t *Tracker) join(p *process, w where) (*Owner, error) {
	o, left, ended, err := t.joinLocked(p, w)
	if ended != nil {
		t.onGone(ended)
	}
	if left != nil {
		t.rescan(left)
	}
	return o, err
}

func (t *Tracker) joinLocked(p *process, w where) (o, left, ended *Owner, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, nil, errors.New("owner tracker closed")
	}
	o = t.owners[w.key]
	if o != nil && o.scope == Process && o.proc != p {
		// Start times tick at 100 Hz: a process that reused the pid of an owner dead in the same tick has the
		// same key. The old pidfd tells them apart (it was readable, or p would be o.proc): the owner ended,
		// even if the event loop has not seen it yet.
		t.endLocked(o)
		ended, o = o, nil
	}
	if o == nil {
		o = &Owner{scope: t.scope, id: w.key.id, cgroup: w.key.cgroup, key: w.key, watch: -1, parentWatch: -1}
		switch t.scope {
		case Process:
			o.name, o.proc = w.name, p
		case Session:
			o.name = w.name
		case Cgroup:
			if err := t.watchCgroupLocked(o, w.cgroupDir); err != nil {
				if errors.Is(err, errMovedMeanwhile) {
					return nil, nil, ended, err
				}
				t.logUnowned("a cgroup cannot be watched", "cgroup", o.cgroup, "err", err)
				return nil, nil, ended, nil
			}
		}
		t.owners[w.key] = o
	}
	if prev := p.owner; prev != nil && prev != o && prev.members != nil {
		delete(prev.members, p)
		if len(prev.members) == 0 && !prev.Gone() {
			left = prev
		}
	}
	if t.scope == Group || t.scope == Session {
		if o.members == nil {
			o.members = make(map[*process]struct{})
		}
		o.members[p] = struct{}{}
	}
	p.owner = o
	return o, left, ended, nil
}

// ParentOf returns the owner of the parent of the process behind a request from thread tid.
func (t *Tracker) ParentOf(tid uint32) (*Owner, error) {
	tgid, err := t.threadGroup(tid)
	if err != nil {
		return nil, err
	}
	st, err := readStat(tgid)
	if err != nil {
		return nil, procError(err)
	}
	if st.ppid == 0 {
		return nil, ErrNoParent
	}
	return t.Of(st.ppid)
}

// threadGroup maps a thread id to its process id: a live process seen before answers for its main thread
// with one poll; other threads go through the cache.
func (t *Tracker) threadGroup(tid uint32) (uint32, error) {
	t.mu.Lock()
	p := t.procs[tid]
	live := p != nil && !p.exitedLocked()
	t.mu.Unlock()
	if live {
		return tid, nil // a live process's id is its main thread's id
	}
	return t.threads.Of(tid)
}

// pidfdExited reports whether the process behind pidfd has exited (the pidfd is readable). poll is retried
// when a signal interrupts it (the Go runtime preempts threads with SIGURG): an interrupted poll says nothing
// about the process.
func pidfdExited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0
	}
}

func (t *Tracker) hasOwner(key ownerKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.owners[key] != nil
}

// sessionLeaderName is the command name of a session's leader, or "" once it has exited (the session lives
// on in its other members).
func (t *Tracker) sessionLeaderName(session uint32) string {
	leader, err := readStat(session)
	if err != nil || leader.session != session {
		return ""
	}
	return leader.comm
}

// watchCgroupLocked watches the owner's cgroup: its cgroup.events for "populated 0", and its parent directory
// for its removal. A watch on the cgroup itself does not do for that: kernfs delivers the change of
// cgroup.events from a work queue, which finds nothing to notify when the cgroup was removed meanwhile, and
// sends no IN_DELETE_SELF. The root cgroup has no cgroup.events and never empties: its owner lives as long
// as the daemon. The caller holds t.mu.
func (t *Tracker) watchCgroupLocked(o *Owner, dir string) error {
	if o.cgroup == "/" {
		return nil
	}
	parent, name := filepath.Split(dir)
	wd, err := unix.InotifyAddWatch(t.inotifyFd, parent, unix.IN_DELETE|unix.IN_ONLYDIR)
	if err != nil {
		return fmt.Errorf("inotify_add_watch %s: %w", parent, err)
	}
	o.parentWatch, o.dirName = int32(wd), name
	if t.children[o.parentWatch] == nil {
		t.children[o.parentWatch] = make(map[string]*Owner)
	}
	t.children[o.parentWatch][name] = o
	events := filepath.Join(dir, "cgroup.events")
	if wd, err = unix.InotifyAddWatch(t.inotifyFd, events, unix.IN_MODIFY); err != nil {
		t.unwatchCgroupLocked(o)
		if errors.Is(err, unix.ENOENT) {
			return errMovedMeanwhile // the cgroup was removed, so it was empty
		}
		return fmt.Errorf("inotify_add_watch %s: %w", events, err)
	}
	o.watch = int32(wd)
	t.byWatch[o.watch] = o
	return nil
}

// unwatchCgroupLocked removes the owner's inotify watches; the parent's goes with its last child watched.
// The caller holds t.mu.
func (t *Tracker) unwatchCgroupLocked(o *Owner) {
	if o.watch >= 0 {
		delete(t.byWatch, o.watch)
		_, _ = unix.InotifyRmWatch(t.inotifyFd, uint32(o.watch))
		o.watch = -1
	}
	if o.parentWatch >= 0 {
		siblings := t.children[o.parentWatch]
		if siblings[o.dirName] == o {
			delete(siblings, o.dirName)
		}
		if len(siblings) == 0 {
			delete(t.children, o.parentWatch)
			_, _ = unix.InotifyRmWatch(t.inotifyFd, uint32(o.parentWatch))
		}
		o.parentWatch = -1
	}
}

// memberCheckEvery is how often the watched members of groups and sessions are checked for having left them
// (setsid, setpgid) without exiting, which no descriptor reports: one getsid or getpgid per watched member
// (about 2 µs here), so that an owner whose last member moved away ends within this plus a rescan of /proc,
// inside the second the contract allows.
const memberCheckEvery = 500 * time.Millisecond

// membership is a watched member of a group or session, for the member check.
type membership struct {
	o *Owner
	p *process
}

// loop is the tracker's one goroutine: it waits for pidfds to become readable (a process exited), for
// inotify events on cgroup.events, and for Close; for groups and sessions it checks the watched members every
// memberCheckEvery, however busy the events keep it.
func (t *Tracker) loop() {
	defer close(t.done)
	events := make([]unix.EpollEvent, 64)
	checking := t.scope == Group || t.scope == Session
	nextCheck := time.Now().Add(memberCheckEvery)
	for {
		timeout := -1
		if checking {
			timeout = int(max(0, time.Until(nextCheck).Milliseconds()))
		}
		n, err := unix.EpollWait(t.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.log.Error("owner watch stopped: epoll_wait failed", "err", err)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			switch int(ev.Fd) {
			case t.wakeFd:
				return
			case t.inotifyFd:
				t.readInotify()
			default:
				t.processExited(ev.Fd)
			}
		}
		if checking && !time.Now().Before(nextCheck) {
			t.checkMembers()
			nextCheck = time.Now().Add(memberCheckEvery)
		}
	}
}

// checkMembers drops every watched member that has left its group or session while alive, and rescans the
// owners left without one. An exited member is left to its pidfd's event.
func (t *Tracker) checkMembers() {
	t.mu.Lock()
	checks := t.checks[:0]
	for _, o := range t.owners {
		for p := range o.members {
			// A session's leader cannot leave it (setsid and setpgid refuse a session leader).
			if o.scope != Session || p.tgid != o.id {
				checks = append(checks, membership{o, p})
			}
		}
	}
	t.mu.Unlock()
	for _, m := range checks {
		if id, err := groupOrSession(t.scope, m.p.tgid); (err == nil && id == m.o.id) || m.p.pidfd < 0 || pidfdExited(m.p.pidfd) {
			continue
		}
		t.mu.Lock()
		if m.p.owner == m.o {
			delete(m.o.members, m.p)
			m.p.owner = nil // its next request joins it to where it is now
		}
		emptied := len(m.o.members) == 0 && !m.o.Gone()
		t.mu.Unlock()
		if emptied {
			t.rescan(m.o)
		}
	}
	clear(checks) // drop the pointers: the buffer outlives the owners
	t.checks = checks[:0]
}

// processExited handles a readable pidfd: the process is forgotten, and its owner ends if it was a process,
// or if it was the last watched member of a group or session and /proc holds no other member.
func (t *Tracker) processExited(fd int32) {
	t.mu.Lock()
	p := t.byFd[fd]
	if p == nil {
		t.mu.Unlock()
		return
	}
	delete(t.byFd, fd)
	_ = unix.EpollCtl(t.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	unix.Close(int(fd))
	p.pidfd = -1 // closed: the number may name another descriptor from now on
	if t.procs[p.tgid] == p {
		delete(t.procs, p.tgid)
	}
	o := p.owner
	var ended, rescan *Owner
	switch {
	case o == nil || o.Gone():
	case o.scope == Process && o.proc == p:
		t.endLocked(o)
		ended = o
	case o.scope == Group || o.scope == Session:
		delete(o.members, p)
		if len(o.members) == 0 {
			rescan = o
		}
	}
	t.mu.Unlock()
	if ended != nil {
		t.onGone(ended)
	}
	if rescan != nil {
		t.rescan(rescan)
	}
}

// rescan looks through /proc for a live member of a group or session whose watched members all exited, and
// watches it; without one the owner has ended. A zombie is not a member: its pidfd says it has exited.
func (t *Tracker) rescan(o *Owner) {
	// The leader first (a group's or session's id is its leader's pid): while it lives, it is the only process
	// asked.
	found := liveMember(o, o.id)
	if found == nil {
		_ = eachProcess(func(pid uint32) bool {
			if pid != o.id {
				found = liveMember(o, pid)
			}
			return found == nil
		})
	}
	t.mu.Lock()
	if found != nil {
		if t.closed || o.Gone() || t.epollAdd(found.pidfd) != nil {
			unix.Close(found.pidfd)
			found = nil
		} else {
			t.byFd[int32(found.pidfd)] = found
			o.members[found] = struct{}{}
		}
	}
	if len(o.members) > 0 || o.Gone() || t.closed {
		t.mu.Unlock() // a member was found, or made an entry meanwhile
		return
	}
	t.endLocked(o)
	t.mu.Unlock()
	t.onGone(o)
}

// liveMember returns process pid, held by a pidfd, if it is a live member of o's group or session: one
// syscall for a process that is not (most of /proc, in a rescan), a read of its stat for one that is.
func liveMember(o *Owner, pid uint32) *process {
	if !o.holds(pid) {
		return nil
	}
	pidfd, err := unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	unix.CloseOnExec(pidfd)
	// Asked again with the pidfd held: if it is still not readable afterwards, the answers were the pidfd's
	// process's. A zombie is no member: its pidfd is readable.
	st, err := readStat(pid)
	if err != nil || !o.holds(pid) || pidfdExited(pidfd) {
		unix.Close(pidfd)
		return nil
	}
	return &process{tgid: pid, start: st.start, pidfd: pidfd, owner: o}
}

// holds reports whether process pid is in o's group or session now.
func (o *Owner) holds(pid uint32) bool {
	id, err := groupOrSession(o.scope, pid)
	return err == nil && id == o.id
}

// endLocked marks an owner gone and forgets it, so that its id names a new owner from now on. The caller
// holds t.mu and calls onGone after unlocking.
func (t *Tracker) endLocked(o *Owner) {
	o.gone.Store(true)
	if t.owners[o.key] == o {
		delete(t.owners, o.key)
	}
	t.unwatchCgroupLocked(o)
	o.proc, o.members = nil, nil
	t.goneTotal.Add(1)
}

// readInotify handles cgroup changes: a cgroup whose events say "populated 0", or that was removed, has
// ended.
func (t *Tracker) readInotify() {
	var buf [4096]byte
	for {
		n, err := unix.Read(t.inotifyFd, buf[:])
		if n <= 0 || err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			// struct inotify_event: wd, mask, cookie, len, then the name, NUL-padded to len bytes.
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen]), "\x00")
			off += unix.SizeofInotifyEvent + nameLen
			t.cgroupEvent(wd, mask, name)
		}
	}
}

func (t *Tracker) cgroupEvent(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		t.recheckCgroups() // events were lost: look at every cgroup watched
		return
	}
	t.mu.Lock()
	if mask&unix.IN_IGNORED != 0 {
		// The kernel removed the watch itself (its file went); its descriptor may name a new watch later.
		if o := t.byWatch[wd]; o != nil {
			delete(t.byWatch, wd)
			o.watch = -1
		}
		if siblings := t.children[wd]; siblings != nil {
			delete(t.children, wd)
			for _, o := range siblings {
				o.parentWatch = -1
			}
		}
	}
	o, removed := t.children[wd][name], true
	if o == nil || mask&unix.IN_DELETE == 0 {
		o, removed = t.byWatch[wd], false
	}
	if o == nil {
		t.mu.Unlock()
		return
	}
	path := filepath.Join(t.cgroups.dirOf(o.cgroup), "cgroup.events")
	t.mu.Unlock()
	if !removed && populated(path) {
		return
	}
	t.end(o)
}

// end ends an owner found gone (a cgroup empty or removed), unless it has ended already, and reports it.
func (t *Tracker) end(o *Owner) {
	t.mu.Lock()
	if o.Gone() {
		t.mu.Unlock()
		return
	}
	t.endLocked(o)
	t.mu.Unlock()
	t.onGone(o)
}

// recheckCgroups ends every watched cgroup that is empty or gone, after the inotify queue overflowed.
func (t *Tracker) recheckCgroups() {
	t.mu.Lock()
	var watched []*Owner
	for _, o := range t.byWatch {
		watched = append(watched, o)
	}
	t.mu.Unlock()
	for _, o := range watched {
		if !populated(filepath.Join(t.cgroups.dirOf(o.cgroup), "cgroup.events")) {
			t.end(o)
		}
	}
}

// populated reads a cgroup.events file; a file that cannot be read means the cgroup is gone.
func populated(path string) bool {
	data, err := readProcFile(path)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return strings.TrimSpace(v) != "0"
		}
	}
	return true
}
