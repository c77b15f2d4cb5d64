package fs

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/spool"
)

// Entries bound to an owner (--owner; docs/guarantees.md, Owners). Package owner says who made an entry and when
// that owner is gone; this file tags each entry made by name with its owner (the tag belongs to the node, so
// renames and hard links keep it), and removes a gone owner's entries the way the daemon removes others:
// names go at once and the kernel is told, open files live until their last close. A gone owner's directory
// that still holds entries of a live owner, or kept ones, stays ("orphaned") until it is empty, then goes.
//
// Lock order: FS.ownMu guards every ownerTag and the ownership maps; it comes after the namespace locks (a
// directory's entriesMu, a leaf's stateMu: see fs.go), so while holding it this file reads a node's names only
// through atomics (leaf.nlink, Dir.removed). ownership.queueMu is a leaf. Nothing here holds a lock across a
// call into package owner (it reads /proc) or a kernel notification.

// ownerTag is a node's owner: nil and not kept for an unowned entry (--owner none, or a caller the daemon
// cannot see), kept once user.tempfs.lifetime=keep took it out of its owner's hands. Guarded by FS.ownMu.
type ownerTag struct {
	owner *owner.Owner
	kept  bool
}

// ownership is the daemon's side of --owner: nil on FS when the scope is none, which then costs nothing.
type ownership struct {
	tracker *owner.Tracker

	// Guarded by FS.ownMu.
	entries map[*owner.Owner]*ownedEntries
	orphans map[*Dir]struct{} // directories of gone owners that still hold entries

	queueMu sync.Mutex
	gone    []*owner.Owner // reported gone, not yet removed
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	removed atomic.Int64 // entries removed with their owner
	// outOfFds: the last owner could not be watched for lack of a descriptor, and that was logged; it is
	// logged again only after a watch succeeded, so that a full table costs one line, not one per create.
	outOfFds atomic.Bool
}

// ownedEntries are an owner's entries. Entries removed otherwise (unlink, rmdir, last close, --max-age) are
// not taken out one by one: the set is pruned whenever it has doubled since the last pruning, so that a
// long-lived owner making and removing many entries holds at most twice its live ones. Most owners have a few
// entries (a process and its temporary file): those are kept in a slice, a map only past maxFewEntries.
type ownedEntries struct {
	few     []node
	many    map[node]struct{} // instead of few, once it would hold more than maxFewEntries
	pruneAt int
	quota   *spool.Account // the owner's --owner-quota account, made on first use (quota.spoolAccountLocked)
}

const maxFewEntries = 8

func (set *ownedEntries) add(n node) {
	switch {
	case set.many != nil:
		set.many[n] = struct{}{}
	case slices.Contains(set.few, n):
	case len(set.few) < maxFewEntries:
		set.few = append(set.few, n)
	default:
		set.many = make(map[node]struct{}, 2*maxFewEntries)
		for _, m := range set.few {
			set.many[m] = struct{}{}
		}
		set.few = nil
		set.many[n] = struct{}{}
	}
}

func (set *ownedEntries) remove(n node) {
	if set.many != nil {
		delete(set.many, n)
	} else if i := slices.Index(set.few, n); i >= 0 {
		set.few = slices.Delete(set.few, i, i+1)
	}
}

func (set *ownedEntries) size() int { return len(set.few) + len(set.many) }

// each calls fn with every entry; fn must not change the set.
func (set *ownedEntries) each(fn func(node)) {
	for _, n := range set.few {
		fn(n)
	}
	for n := range set.many {
		fn(n)
	}
}

const (
	minPruneAt = 64
	// orphanSweep is how often orphaned directories are checked while there are some: one that was emptied
	// by an unlink or rename goes within this.
	orphanSweep = 250 * time.Millisecond
)

// WatchOwners binds new entries to their owners in scope (none: does nothing). Call it before mounting.
func (fsys *FS) WatchOwners(scope owner.Scope) error { return fsys.watchOwners(scope, true) }

// watchOwners is WatchOwners; a daemon taking a mount over starts removing gone owners' entries only once it
// serves (ServeAdopted), after the owners it took over are bound to their entries.
func (fsys *FS) watchOwners(scope owner.Scope, start bool) error {
	if scope == owner.None {
		return nil
	}
	own := &ownership{
		entries: make(map[*owner.Owner]*ownedEntries),
		orphans: make(map[*Dir]struct{}),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	tracker, err := owner.New(owner.Config{Scope: scope, OnGone: own.reportGone, Logger: fsys.log})
	if err != nil {
		return err
	}
	own.tracker = tracker
	fsys.owners = own
	if start {
		go fsys.removeGoneOwners()
	}
	return nil
}

// StopOwners stops watching owners (at unmount); entries stay as they are.
func (fsys *FS) StopOwners() {
	if fsys.owners == nil {
		return
	}
	fsys.owners.tracker.Close()
	close(fsys.owners.stop)
	<-fsys.owners.done
}

// reportGone is the tracker's OnGone: it queues the owner for removeGoneOwners and returns at once.
func (own *ownership) reportGone(o *owner.Owner) {
	own.queueMu.Lock()
	own.gone = append(own.gone, o)
	own.queueMu.Unlock()
	select {
	case own.kick <- struct{}{}:
	default:
	}
}

// removeGoneOwners is the goroutine that removes the entries of gone owners, and orphaned directories once
// they are empty.
func (fsys *FS) removeGoneOwners() {
	own := fsys.owners
	defer close(own.done)
	sweep := time.NewTimer(orphanSweep)
	defer sweep.Stop()
	for {
		select {
		case <-own.stop:
			return
		case <-own.kick:
		case <-sweep.C:
		}
		done := fsys.backgroundWork()
		own.queueMu.Lock()
		gone := own.gone
		own.gone = nil
		own.queueMu.Unlock()
		for _, o := range gone {
			fsys.removeOwned(o)
		}
		if fsys.sweepOrphans() {
			sweep.Reset(orphanSweep)
		}
		done()
	}
}

// creatorOwner is the owner of the process behind a request that makes an entry: nil when unowned.
func (fsys *FS) creatorOwner(ctx context.Context) (*owner.Owner, syscall.Errno) {
	if fsys.owners == nil {
		return nil, 0
	}
	_, _, tid := caller(ctx)
	o, err := fsys.owners.tracker.Of(tid)
	if err == nil && fsys.owners.outOfFds.Load() {
		fsys.owners.outOfFds.Store(false)
	}
	return o, fsys.ownerErrno(err)
}

func (fsys *FS) ownerErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, owner.ErrCallerGone):
		return syscall.ENOENT // the caller was killed mid-request: nobody will see the answer
	case outOfDescriptors(err):
		// No descriptor left to watch a new owner with: said once (not once per create), then answered as
		// toErrno answers every descriptor limit, without its log line.
		if fsys.owners.outOfFds.CompareAndSwap(false, true) {
			fsys.log.Warn("no descriptor left to watch a new owner: creating answers ENOSPC", "err", err)
		}
		return toErrno(discardLog, "owner", err)
	}
	return toErrno(fsys.log, "owner", err)
}

// tag binds a new entry (or a new name of one) to its owner, under FS.ownMu. It reports an owner that ended
// meanwhile, which the caller queues again once its locks are released (see requeue), so that the entry goes
// with it. The caller holds the lock under which the entry got its name (entriesMu of its directory).
func (fsys *FS) tag(n node, o *owner.Owner) (ended *owner.Owner) {
	if o == nil {
		return nil
	}
	fsys.ownMu.Lock()
	defer fsys.ownMu.Unlock()
	return fsys.tagLocked(n, o)
}

// retagIfGone is tag for a new name of an entry whose owner ended while it was being removed: the name goes
// too.
func (fsys *FS) retagIfGone(n node) (ended *owner.Owner) {
	if fsys.owners == nil {
		return nil
	}
	fsys.ownMu.Lock()
	defer fsys.ownMu.Unlock()
	if o := n.ownerTag().owner; o != nil && o.Gone() {
		return fsys.tagLocked(n, o)
	}
	return nil
}

// tagLocked is tag with FS.ownMu held.
func (fsys *FS) tagLocked(n node, o *owner.Owner) (ended *owner.Owner) {
	if o == nil {
		return nil
	}
	n.ownerTag().owner = o
	fsys.noteNode(n)
	set := fsys.owners.accountLocked(o)
	set.add(n)
	if set.size() >= set.pruneAt {
		set.pruneLocked()
	}
	fsys.chargeToLocked(n, set)
	if o.Gone() {
		return o
	}
	return nil
}

// accountLocked is an owner's set of entries, which also holds its --owner-quota account; made on first use.
// The caller holds FS.ownMu.
func (own *ownership) accountLocked(o *owner.Owner) *ownedEntries {
	set := own.entries[o]
	if set == nil {
		set = &ownedEntries{pruneAt: minPruneAt}
		own.entries[o] = set
	}
	return set
}

// requeue queues again an owner that ended while an entry was being tagged with it.
func (fsys *FS) requeue(o *owner.Owner) {
	if o != nil {
		fsys.owners.reportGone(o)
	}
}

// pruneLocked drops entries that have no name left: removing them with their owner has nothing to do. The
// caller holds FS.ownMu.
func (set *ownedEntries) pruneLocked() {
	set.few = slices.DeleteFunc(set.few, func(n node) bool { return !named(n) })
	maps.DeleteFunc(set.many, func(n node, _ struct{}) bool { return !named(n) })
	set.pruneAt = max(minPruneAt, 2*set.size())
}

// named reports whether a node still has a name in the tree; it takes no lock (see the lock order above).
func named(n node) bool {
	switch n := n.(type) {
	case *Dir:
		return !n.removed.Load()
	case leafNode:
		return n.leafPart().nlink.Load() > 0
	}
	return false
}

// untagLocked takes a node out of its owner's set; kept says whether it is kept from now on. The caller
// holds FS.ownMu.
func (fsys *FS) untagLocked(n node, kept bool) {
	tag := n.ownerTag()
	if tag.owner != nil && fsys.owners != nil {
		if set := fsys.owners.entries[tag.owner]; set != nil {
			set.remove(n)
		}
	}
	tag.owner, tag.kept = nil, kept
	fsys.noteNode(n)
	fsys.chargeToLocked(n, nil)
	if d, ok := n.(*Dir); ok && fsys.owners != nil {
		if _, orphan := fsys.owners.orphans[d]; orphan {
			delete(fsys.owners.orphans, d)
			fsys.noteOwners()
		}
	}
}

// removeOwned removes every entry of a gone owner: leaves at once, each of their names; directories as soon
// as they hold nothing (sweepOrphans).
func (fsys *FS) removeOwned(o *owner.Owner) {
	own := fsys.owners
	var leaves []leafNode
	fsys.ownMu.Lock()
	set := own.entries[o]
	delete(own.entries, o)
	fsys.noteOwners()
	if set != nil {
		set.each(func(n node) {
			if n.ownerTag().owner != o {
				return // handed over or kept since
			}
			switch n := n.(type) {
			case *Dir:
				if !n.removed.Load() {
					own.orphans[n] = struct{}{}
				}
			case leafNode:
				if n.leafPart().nlink.Load() > 0 {
					leaves = append(leaves, n)
				}
			}
		})
	}
	fsys.ownMu.Unlock()
	for _, l := range leaves {
		if fsys.removeOwnedLeaf(o, l) {
			own.removed.Add(1)
		}
	}
}

// maxRemovalRounds bounds removeOwnedLeaf's retries against a client that keeps renaming the entry.
const maxRemovalRounds = 100

// removeOwnedLeaf removes every name of a gone owner's leaf. A rename between reading its names and removing
// one makes that removal miss, so the names are read again until none is left (or the leaf changed hands).
func (fsys *FS) removeOwnedLeaf(o *owner.Owner, l leafNode) (removed bool) {
	for range maxRemovalRounds {
		lp := l.leafPart()
		lp.stateMu.Lock()
		links := slices.Clone(lp.links)
		lp.stateMu.Unlock()
		fsys.ownMu.Lock()
		mine := l.ownerTag().owner == o
		fsys.ownMu.Unlock()
		if !mine || len(links) == 0 {
			return removed
		}
		for _, ln := range links {
			removed = fsys.removeOwnedName(ln.dir, ln.name, l) || removed
		}
	}
	fsys.log.Warn("an entry of a gone owner kept changing names; left in place", "owner", o.String())
	return removed
}

// removeOwnedName removes the name (d, name) of a gone owner's leaf as unlink would: a file still open
// keeps working for its holders and is freed at its last close. The name leaves the directory in one step
// (Dir.dropLeafNameLocked, as the last close and the reaper remove names); go-fuse's tree and the kernel are
// told afterwards.
func (fsys *FS) removeOwnedName(d *Dir, name string, l leafNode) bool {
	d.entriesMu.Lock()
	lp := l.leafPart()
	lp.stateMu.Lock()
	if f, ok := l.(*File); ok && f.isGeneratedLocked(d, name) {
		f.persistLocked() // the generated name goes now: nothing is left to remove at last close
	}
	dropped := d.dropLeafNameLocked(l, name)
	unused := dropped && l.takeUnusedLocked()
	lp.stateMu.Unlock()
	d.entriesMu.Unlock()
	if !dropped {
		return false
	}
	d.forgetChild(name, l)
	fsys.noteRemoved(removedOwnerGone, 1)
	fsys.notifyKernel(func() {
		if errno := d.NotifyDelete(name, l.EmbeddedInode()); errno != 0 && errno != syscall.ENOENT {
			fsys.log.Debug("notify delete", "name", name, "errno", errno)
		}
	})
	d.attrs.touchModified()
	if unused {
		l.free()
	}
	return true
}

// sweepOrphans removes orphaned directories that are empty now, deepest first (a parent emptied by its
// child's removal goes on the same sweep), and reports whether some are left to check later.
func (fsys *FS) sweepOrphans() (left bool) {
	own := fsys.owners
	for {
		type orphan struct {
			dir, parent *Dir
			name        string
		}
		var empty []orphan
		fsys.ownMu.Lock()
		dirs := slices.Collect(maps.Keys(own.orphans))
		fsys.ownMu.Unlock()
		var gone []*Dir
		for _, d := range dirs {
			d.entriesMu.RLock()
			switch {
			case d.removed.Load() || d.parent.Load() == nil:
				gone = append(gone, d)
			case len(d.children) == 0:
				empty = append(empty, orphan{d, d.parent.Load(), d.name})
			}
			d.entriesMu.RUnlock()
		}
		fsys.ownMu.Lock()
		for _, d := range gone {
			delete(own.orphans, d)
		}
		if len(gone) > 0 {
			fsys.noteOwners()
		}
		left = len(own.orphans) > len(empty)
		fsys.ownMu.Unlock()
		if len(empty) == 0 {
			return left
		}
		progress := false
		for _, e := range empty {
			if fsys.reapSubdir(e.parent, e.name, e.dir) {
				own.removed.Add(1)
				fsys.noteRemoved(removedOwnerGone, 1)
				progress = true
			}
		}
		if !progress {
			return true // raced with a change: look again on the next sweep
		}
	}
}

// ownerXattr answers user.tempfs.owner: the owner in words, "kept", or "none".
func (fsys *FS) ownerXattr(n node) string {
	fsys.ownMu.Lock()
	tag := *n.ownerTag()
	fsys.ownMu.Unlock()
	switch {
	case tag.owner != nil && tag.owner.Gone():
		return tag.owner.String() + " (gone)"
	case tag.owner != nil:
		return tag.owner.String()
	case tag.kept:
		return "kept"
	}
	return "none"
}

// handToParent answers setxattr user.tempfs.owner=parent: a member of the entry's owner hands the entry to
// the owner of its parent process. A file made from a template then no longer goes at its last close: it
// goes with its new owner (tempfs mktemp gives its file to the shell that called it).
func (fsys *FS) handToParent(ctx context.Context, n node) syscall.Errno {
	if fsys.owners == nil {
		return syscall.EPERM // no owners on this mount: user.tempfs.lifetime=keep keeps an entry
	}
	_, _, tid := caller(ctx)
	mine, err := fsys.owners.tracker.Of(tid)
	if errno := fsys.ownerErrno(err); errno != 0 {
		return errno
	}
	parent, err := fsys.owners.tracker.ParentOf(tid)
	if errors.Is(err, owner.ErrNoParent) {
		return syscall.EPERM
	}
	if errno := fsys.ownerErrno(err); errno != 0 {
		return errno
	}
	f, isFile := n.(*File)
	if isFile {
		f.stateMu.Lock() // its lifetime changes with its owner
		defer f.stateMu.Unlock()
	}
	fsys.ownMu.Lock()
	tag := n.ownerTag()
	switch {
	case !named(n):
		fsys.ownMu.Unlock()
		return syscall.ENOENT // its last name went meanwhile: nothing is left to hand over
	case mine == nil || tag.owner != mine:
		fsys.ownMu.Unlock()
		return syscall.EPERM
	}
	if isFile {
		f.persistLocked()
	}
	fsys.untagLocked(n, false)
	ended := fsys.tagLocked(n, parent)
	fsys.ownMu.Unlock()
	fsys.requeue(ended)
	return 0
}

// keep takes an entry out of its owner's hands (user.tempfs.lifetime=keep), under FS.ownMu.
func (fsys *FS) keep(n node) {
	if fsys.owners != nil {
		fsys.ownMu.Lock()
		fsys.untagLocked(n, true)
		fsys.ownMu.Unlock()
	}
}

// ownerStats fills the owner counts of Stats.
func (fsys *FS) ownerStats(s *Stats) {
	if fsys.owners == nil {
		s.OwnerScope = owner.None.String()
		return
	}
	ts := fsys.owners.tracker.Stats()
	s.OwnerScope = fsys.owners.tracker.Scope().String()
	s.OwnersLive = int64(ts.Live)
	s.OwnersGone = ts.Gone
	s.EntriesRemovedWithOwner = fsys.owners.removed.Load()
	s.NamesRemovedWithOwner = fsys.activity.removed[removedOwnerGone].Load()
}

// OwnerUsage is one live owner in `tempfs status --owners`.
type OwnerUsage struct {
	Owner     string `json:"owner"`
	Entries   int64  `json:"entries"`
	RAMBytes  int64  `json:"ram_bytes"`
	DiskBytes int64  `json:"disk_bytes"`
}

// OwnersReport is what user.tempfs.owners answers on the root: the live owners that have entries, most
// bytes first. An xattr value holds at most 64 KiB, so the list stops at maxOwnersListed; Omitted counts
// the rest.
type OwnersReport struct {
	Scope   string       `json:"owner_scope"`
	Owners  []OwnerUsage `json:"owners"`
	Omitted int          `json:"omitted"`
}

const maxOwnersListed = 200

// OwnersReport gathers the live owners' entries and bytes.
func (fsys *FS) OwnersReport() OwnersReport {
	report := OwnersReport{Scope: owner.None.String(), Owners: []OwnerUsage{}}
	own := fsys.owners
	if own == nil {
		return report
	}
	report.Scope = own.tracker.Scope().String()
	type owned struct {
		usage OwnerUsage
		files []*File
	}
	var all []owned
	fsys.ownMu.Lock()
	for o, set := range own.entries {
		if o.Gone() {
			continue
		}
		set.pruneLocked()
		if set.size() == 0 {
			continue
		}
		e := owned{usage: OwnerUsage{Owner: o.String(), Entries: int64(set.size())}}
		set.each(func(n node) {
			if f, ok := n.(*File); ok {
				e.files = append(e.files, f)
			}
		})
		all = append(all, e)
	}
	fsys.ownMu.Unlock()
	for i := range all {
		for _, f := range all[i].files {
			bytes := f.data.Stat().Blocks * 512
			if f.data.Where().OnDisk() {
				all[i].usage.DiskBytes += bytes
			} else {
				all[i].usage.RAMBytes += bytes
			}
		}
	}
	slices.SortFunc(all, func(a, b owned) int {
		ta, tb := a.usage.RAMBytes+a.usage.DiskBytes, b.usage.RAMBytes+b.usage.DiskBytes
		switch {
		case ta != tb:
			return cmp.Compare(tb, ta)
		case a.usage.Entries != b.usage.Entries:
			return cmp.Compare(b.usage.Entries, a.usage.Entries)
		}
		return strings.Compare(a.usage.Owner, b.usage.Owner)
	})
	for i, e := range all {
		if i == maxOwnersListed {
			report.Omitted = len(all) - i
			break
		}
		report.Owners = append(report.Owners, e.usage)
	}
	return report
}
