package fs

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// link is one name of a node: an entry in a directory.
type link struct {
	dir  *Dir
	name string
}

// leaf is the part that files, symlinks and special files share: they can have several names (hard links) or
// none (unlinked but open, or made with O_TMPFILE).
type leaf struct {
	attrs
	// stateMu guards links and, in a File, its open counts and lifetime state (see File). It comes after the
	// entriesMu of the directories an operation changes (see fs.go); a goroutine holds one at a time.
	stateMu sync.Mutex
	links   []link   // guarded by stateMu; change it with setLinksLocked
	ownedBy ownerTag // guarded by FS.ownMu
	// nlink is len(links), for GETATTR and the owners' bookkeeping, which read it without a lock.
	nlink atomic.Uint32
}

// leafNode is implemented by every node type that is not a directory.
type leafNode interface {
	node
	leafPart() *leaf
	// takeUnusedLocked reports whether the node has neither names nor open handles left, so that its
	// resources can go once the kernel forgets it too. The caller holds the leaf's stateMu.
	takeUnusedLocked() bool
	// free lets the node's resources go, at once or when the kernel forgets the node (File.OnForget). It is
	// called after takeUnusedLocked said so, without stateMu.
	free()
	// lastUse is when the node was last used, on the Mono clock in nanoseconds, for --max-age.
	lastUse() int64
}

func (l *leaf) leafPart() *leaf { return l }

func (l *leaf) ownerTag() *ownerTag { return &l.ownedBy }

// lastUse is the attrs' last use; File adds its last open.
func (l *leaf) lastUse() int64 { return l.attrs.lastUsed() }

// removeLinkLocked drops the name (d, name); the caller holds l.stateMu.
func (l *leaf) removeLinkLocked(d *Dir, name string) bool {
	i := slices.Index(l.links, link{d, name})
	if i < 0 {
		return false
	}
	l.setLinksLocked(slices.Delete(l.links, i, i+1))
	return true
}

// setLinksLocked sets the node's names; the caller holds l.stateMu.
func (l *leaf) setLinksLocked(links []link) {
	l.links = links
	l.nlink.Store(uint32(len(links)))
}

// path is the absolute path of the node's first remaining name, or "" when it has none.
func (l *leaf) path() string {
	l.stateMu.Lock()
	if len(l.links) == 0 {
		l.stateMu.Unlock()
		return ""
	}
	first := l.links[0]
	l.stateMu.Unlock()
	dp := first.dir.path()
	if dp == "" {
		return ""
	}
	return strings.TrimSuffix(dp, "/") + "/" + first.name
}
