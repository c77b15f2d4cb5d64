package owner

import (
	"strconv"
	"sync/atomic"
)

// Owner is one process, process group, session or cgroup that owns entries. Package fs compares owners by
// pointer: while an owner lives, the Tracker hands out the same *Owner for every request of its members.
type Owner struct {
	scope  Scope
	id     uint32 // the thread group, process group or session id; 0 for a cgroup
	cgroup string // the cgroup v2 path, for Cgroup
	name   string // the command name of the process, or of the session's leader when known
	key    ownerKey
	gone   atomic.Bool

	// Guarded by Tracker.mu.
	proc    *process              // Process: the process itself
	members map[*process]struct{} // Group, Session: the members watched (at least one while it lives)
	watch   int32                 // Cgroup: inotify watch descriptor of cgroup.events, -1 for none
	// parentWatch is the watch of the cgroup's parent directory, for its removal (-1 for none); dirName
	// is the cgroup's name there.
	parentWatch int32
	dirName     string
}

// ownerKey names an owner in Tracker.owners. A process is named by its pid and start time together, so that
// a new process reusing the pid of a dead owner is a new owner; groups, sessions and cgroups by id or path
// (an owner leaves the map as soon as it is gone, before its id can come round again).
type ownerKey struct {
	scope  Scope
	id     uint32
	start  uint64
	cgroup string
}

// Gone reports whether the owner has ended: its entries are to be removed.
func (o *Owner) Gone() bool { return o.gone.Load() }

// Scope is the kind of owner.
func (o *Owner) Scope() Scope { return o.scope }

// String is the owner in words, as user.tempfs.owner answers it: "process 4242 python3", "group 4100",
// "session 4100 bash", "cgroup /system.slice/ci.service".
func (o *Owner) String() string {
	switch o.scope {
	case Cgroup:
		return "cgroup " + o.cgroup
	case Group:
		return "group " + strconv.FormatUint(uint64(o.id), 10)
	}
	s := o.scope.String() + " " + strconv.FormatUint(uint64(o.id), 10)
	if o.name != "" {
		s += " " + o.name
	}
	return s
}

// process is a process seen making an entry, held by a pidfd until it exits: the pidfd both tells the
// daemon when it exits (epoll) and proves, while it has not, that its pid still names it.
type process struct {
	tgid  uint32
	start uint64
	pidfd int
	owner *Owner // guarded by Tracker.mu
}
