// Package owner tells who made an entry and when that owner is gone (--owner; docs/guarantees.md, Owners). It maps the pid of
// a FUSE request (a thread id) to its process, process group, session or cgroup v2, tells a live process from
// a new one that reuses its pid (pidfds and start times), and watches owners end: pidfds of their processes
// in one epoll loop, a rescan of /proc for another member when the watched member of a group or session exits,
// and inotify on cgroup.events. It knows nothing of FUSE or of entries: package fs tags entries with the
// *Owner it hands out and removes them when told the owner is gone.
package owner

import (
	"fmt"
	"strings"
)

// Scope is what owns an entry: nobody, or the process, process group, session or cgroup that made it.
type Scope int

const (
	None Scope = iota
	Process
	Group
	Session
	Cgroup
)

var scopeNames = [...]string{None: "none", Process: "process", Group: "group", Session: "session", Cgroup: "cgroup"}

func (s Scope) String() string {
	if s < 0 || int(s) >= len(scopeNames) {
		return fmt.Sprintf("Scope(%d)", int(s))
	}
	return scopeNames[s]
}

// ScopeNames are the scopes as --owner, the fstab option owner= and the CSI attribute owner spell them.
func ScopeNames() []string { return scopeNames[:] }

// ScopeList is ScopeNames in words: "none, process, group, session or cgroup".
func ScopeList() string {
	return strings.Join(scopeNames[:len(scopeNames)-1], ", ") + " or " + scopeNames[len(scopeNames)-1]
}

// ParseScope reads a scope as ScopeNames spell it.
func ParseScope(text string) (Scope, error) {
	for s, name := range scopeNames {
		if text == name {
			return Scope(s), nil
		}
	}
	return None, fmt.Errorf("unknown owner scope %q (use %s)", text, ScopeList())
}
