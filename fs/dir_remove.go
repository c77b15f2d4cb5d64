package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/naming"
)

// This file holds the operations that remove or move entries. Each changes d.children (the names);
// go-fuse updates its own tree after each of these returns OK.

// lockEntry takes d's entriesMu for writing and finds the entry name, as an operation that removes it starts. On
// success the lock stays held; when there is no such entry it is released and the answer says why.
func (d *Dir) lockEntry(name string) (node, syscall.Errno) {
	d.lockEntries()
	n, errno := d.lookupRealLocked(name)
	if errno != 0 {
		d.unlockEntries()
	}
	return n, errno
}

// lookupRealLocked finds an entry, or answers why there is none. The caller holds d.entriesMu.
func (d *Dir) lookupRealLocked(name string) (node, syscall.Errno) {
	if err := naming.ValidateName(name); err != nil {
		return nil, toErrno(d.fs.log, "name", err)
	}
	n := d.children[name]
	if n == nil {
		return nil, syscall.ENOENT
	}
	return n, 0
}

// forgetChild drops name from go-fuse's tree if it still leads to n there: the daemon removed the name on its
// own (last close, --max-age, owner gone), with no request after which go-fuse would. go-fuse's tree is never
// asked what exists; this only keeps it from holding the node under a dead name until the kernel forgets it.
func (d *Dir) forgetChild(name string, n node) {
	if d.GetChild(name) == n.EmbeddedInode() {
		d.RmChild(name)
	}
}

// dropLeafNameLocked removes the name (d, name) of l; it is how the daemon removes a name on its own (last
// close of a template file, --max-age, owner gone). It reports false, changing nothing, when (d, name) is not
// a name of l any more. The caller holds d.entriesMu and l's stateMu, and afterwards, without them, calls
// d.forgetChild and tells the kernel.
func (d *Dir) dropLeafNameLocked(l leafNode, name string) bool {
	if d.children[name] != l {
		return false
	}
	delete(d.children, name)
	l.leafPart().removeLinkLocked(d, name)
	d.fs.noteEntry(d, name, l)
	return true
}

// dropSubdirLocked removes the empty directory (d, name), as dropLeafNameLocked does for leaves. The caller
// holds d.entriesMu and sub.entriesMu.
func (d *Dir) dropSubdirLocked(sub *Dir, name string) bool {
	if len(sub.children) > 0 || d.children[name] != sub {
		return false
	}
	d.removeSubdirLocked(sub, name)
	return true
}

func (d *Dir) Unlink(ctx context.Context, name string) syscall.Errno {
	n, errno := d.lockEntry(name)
	if errno != 0 {
		return errno
	}
	l, ok := n.(leafNode)
	if !ok {
		d.unlockEntries()
		return syscall.EISDIR
	}
	if errno := removeDenied(d, n); errno != 0 {
		d.unlockEntries()
		return errno
	}
	unused := d.unlinkLeafLocked(l, name)
	d.unlockEntries()
	d.fs.noteRemoved(removedUnlink, 1)
	l.base().touchChanged()
	d.attrs.touchModified()
	if unused {
		l.free()
	}
	return 0
}

// unlinkLeafLocked drops the name (d, name) of l and reports whether l is now unused. The caller holds
// d.entriesMu; l's stateMu is taken here.
func (d *Dir) unlinkLeafLocked(l leafNode, name string) bool {
	lp := l.leafPart()
	lp.stateMu.Lock()
	defer lp.stateMu.Unlock()
	if f, ok := l.(*File); ok && f.isGeneratedLocked(d, name) {
		f.persistLocked() // the generated name goes now: nothing is left to remove at last close
	}
	delete(d.children, name)
	lp.removeLinkLocked(d, name)
	d.fs.noteEntry(d, name, l)
	return l.takeUnusedLocked()
}

func (d *Dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	n, errno := d.lockEntry(name)
	if errno != 0 {
		return errno
	}
	sub, ok := n.(*Dir)
	if !ok {
		d.unlockEntries()
		return syscall.ENOTDIR
	}
	sub.entriesMu.Lock() // a child's lock after its parent's (see fs.go)
	if len(sub.children) > 0 {
		sub.entriesMu.Unlock()
		d.unlockEntries()
		return syscall.ENOTEMPTY
	}
	if errno := removeDenied(d, sub); errno != 0 {
		sub.entriesMu.Unlock()
		d.unlockEntries()
		return errno
	}
	d.removeSubdirLocked(sub, name)
	sub.entriesMu.Unlock()
	d.unlockEntries()
	d.fs.noteRemoved(removedUnlink, 1)
	d.attrs.touchModified()
	d.fs.counts.dirs.Add(-1)
	sub.ForgetPersistent()
	return 0
}

// removeSubdirLocked detaches the empty directory (d, name). The caller holds d.entriesMu and sub.entriesMu.
func (d *Dir) removeSubdirLocked(sub *Dir, name string) {
	delete(d.children, name)
	d.fs.noteEntry(d, name, sub)
	d.subdirs--
	sub.removed.Store(true)
	sub.parent.Store(nil)
	sub.created = nil
}

// lockForRename takes the entriesMu of d and nd for writing, and returns what releases them. Between two
// directories it first takes FS.renameMu, as the kernel serializes such renames, so that no other directory
// changes its parent meanwhile; then an ancestor's lock comes before its descendant's, as everywhere (see
// fs.go), and two unrelated directories are taken in the order of their inode numbers.
func lockForRename(d, nd *Dir) (unlock func()) {
	if d == nd {
		d.entriesMu.Lock()
		return d.entriesMu.Unlock
	}
	d.fs.renameMu.Lock()
	first, second := d, nd
	if within(d, nd) || !within(nd, d) && nd.StableAttr().Ino < d.StableAttr().Ino {
		first, second = nd, d
	}
	first.entriesMu.Lock()
	second.entriesMu.Lock()
	return func() {
		second.entriesMu.Unlock()
		first.entriesMu.Unlock()
		d.fs.renameMu.Unlock()
	}
}

// within reports whether d is below anc (or is anc). The caller holds FS.renameMu, so that no directory moves
// to another meanwhile.
func within(d, anc *Dir) bool {
	for p := d; p != nil; p = p.parent.Load() {
		if p == anc {
			return true
		}
	}
	return false
}

// Rename moves an entry, with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT. A file made from a template becomes
// ordinary when its generated name is renamed (a rename persists it: docs/guarantees.md, Lifetimes).
func (d *Dir) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	nd, ok := newParent.(*Dir)
	if !ok {
		return syscall.EXDEV
	}
	if errno := nd.checkPlainName(newName); errno != 0 {
		return errno
	}
	fsys := d.fs
	// RENAME_WHITEOUT leaves a whiteout, a 0:0 character device, at the old name (the kernel checked
	// CAP_MKNOD and refused it with RENAME_EXCHANGE).
	var whiteout *Special
	var creator *owner.Owner
	if flags&unix.RENAME_WHITEOUT != 0 {
		var errno syscall.Errno
		if creator, errno = fsys.creatorOwner(ctx); errno != 0 {
			return errno
		}
		uid, gid, _ := caller(ctx)
		whiteout = &Special{leaf: leaf{attrs: newAttrs(syscall.S_IFCHR, uid, gid)}, fs: fsys}
		d.NewPersistentInode(ctx, whiteout, d.fs.stable(syscall.S_IFCHR))
		defer func() {
			if whiteout != nil { // not used: the rename failed
				whiteout.ForgetPersistent()
			}
		}()
	}
	unlock := lockForRename(d, nd)
	src, errno := d.lookupRealLocked(name)
	if errno != 0 {
		unlock()
		return errno
	}
	if nd.removed.Load() {
		unlock()
		return syscall.ENOENT
	}
	dst := nd.children[newName]
	if dst == src {
		// Two names of one node (or one name twice): rename(2) does nothing, successfully.
		unlock()
		return 0
	}
	if d != nd {
		// A directory cannot move below itself, nor can one be replaced by its own descendant: the kernel
		// refuses both before asking, and the locks below rely on it (a child's lock after its parent's).
		if srcDir, ok := src.(*Dir); ok && within(nd, srcDir) {
			unlock()
			return syscall.EINVAL
		}
		if dstDir, ok := dst.(*Dir); ok && within(d, dstDir) {
			unlock()
			if flags&unix.RENAME_EXCHANGE != 0 {
				return syscall.EINVAL
			}
			return syscall.ENOTEMPTY
		}
	}
	if errno := renameDenied(d, src, nd, dst); errno != 0 {
		unlock()
		return errno
	}
	switch {
	case flags&unix.RENAME_EXCHANGE != 0:
		if dst == nil {
			unlock()
			return syscall.ENOENT
		}
		d.exchangeLocked(src, name, nd, dst, newName)
		unlock()
		src.base().touchChanged()
		dst.base().touchChanged()
		d.attrs.touchModified()
		nd.attrs.touchModified()
		return 0
	case flags&unix.RENAME_NOREPLACE != 0 && dst != nil:
		unlock()
		return syscall.EEXIST
	}

	var replaced, freeLeaf leafNode
	var freeDir *Dir
	if dst != nil {
		srcDir, srcIsDir := src.(*Dir)
		dstDir, dstIsDir := dst.(*Dir)
		switch {
		case srcIsDir && !dstIsDir:
			unlock()
			return syscall.ENOTDIR
		case !srcIsDir && dstIsDir:
			unlock()
			return syscall.EISDIR
		case dstIsDir:
			_ = srcDir
			dstDir.entriesMu.Lock()
			if len(dstDir.children) > 0 {
				dstDir.entriesMu.Unlock()
				unlock()
				return syscall.ENOTEMPTY
			}
			nd.removeSubdirLocked(dstDir, newName)
			dstDir.entriesMu.Unlock()
			freeDir = dstDir
		default:
			replaced = dst.(leafNode)
			if nd.unlinkLeafLocked(replaced, newName) {
				freeLeaf = replaced
			}
		}
	}
	d.moveLocked(src, name, nd, newName)
	var ended *owner.Owner
	if whiteout != nil {
		whiteout.stateMu.Lock()
		whiteout.setLinksLocked([]link{{d, name}})
		whiteout.stateMu.Unlock()
		d.addChildLocked(name, whiteout)
		ended = fsys.tag(whiteout, creator)
		whiteout = nil
		fsys.counts.others.Add(1)
		fsys.counts.created.Add(1)
	}
	unlock()
	fsys.requeue(ended)

	src.base().touchChanged()
	if replaced != nil || freeDir != nil {
		fsys.noteRemoved(removedUnlink, 1) // the destination's name went as unlink(2) or rmdir(2) would take it
	}
	if replaced != nil {
		replaced.base().touchChanged() // it lost a link, as unlink(2) would take it: its other names see the ctime
	}
	d.attrs.touchModified()
	if nd != d {
		nd.attrs.touchModified()
	}
	if freeLeaf != nil {
		freeLeaf.free()
	}
	if freeDir != nil {
		fsys.counts.dirs.Add(-1)
		freeDir.ForgetPersistent()
	}
	return 0
}

// moveLocked changes n's name (d, name) to (nd, newName). The caller holds the entriesMu of d and nd, and has
// removed whatever was at the destination.
func (d *Dir) moveLocked(n node, name string, nd *Dir, newName string) {
	delete(d.children, name)
	d.fs.noteEntry(d, name, n)
	nd.addChildLocked(newName, n)
	d.renamedLocked(n, name, nd, newName)
}

// exchangeLocked swaps the entries (d, name), which is n, and (nd, newName), which is m (RENAME_EXCHANGE). The
// caller holds the entriesMu of d and nd.
func (d *Dir) exchangeLocked(n node, name string, nd *Dir, m node, newName string) {
	d.children[name], nd.children[newName] = m, n
	d.fs.noteEntry(d, name, m)
	d.fs.noteEntry(nd, newName, n)
	d.renamedLocked(n, name, nd, newName)
	nd.renamedLocked(m, newName, d, name)
}

// renamedLocked updates what n knows of its name (d, name), now (nd, newName), under n's own lock (a child
// directory's entriesMu, a leaf's stateMu). The caller holds the entriesMu of d and nd.
func (d *Dir) renamedLocked(n node, name string, nd *Dir, newName string) {
	switch n := n.(type) {
	case *Dir:
		n.entriesMu.Lock()
		n.parent.Store(nd)
		n.name = newName
		n.entriesMu.Unlock()
		d.subdirs--
		nd.subdirs++
	case leafNode:
		l := n.leafPart()
		l.stateMu.Lock()
		if f, ok := n.(*File); ok && f.isGeneratedLocked(d, name) {
			f.persistLocked()
		}
		for i := range l.links {
			if l.links[i] == (link{d, name}) {
				l.links[i] = link{nd, newName}
				break
			}
		}
		l.stateMu.Unlock()
	}
}

// renameDenied is EPERM when file flags forbid the rename: the source's entry cannot go, the one it replaces
// cannot go, or nothing may be made in the target directory. The caller holds the entriesMu of d and nd.
func renameDenied(d *Dir, src node, nd *Dir, dst node) syscall.Errno {
	if errno := removeDenied(d, src); errno != 0 {
		return errno
	}
	if dst != nil {
		return removeDenied(nd, dst)
	}
	return nd.createDenied()
}
