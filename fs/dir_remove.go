package fs

import (
	"context"
	"slices"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/naming"
)

// This file holds the operations that remove or move entries. go-fuse updates its own tree after each of these
// returns OK; they update the metadata tempfs keeps beside it.

// lookupRealLocked finds a live entry (never a template alias), or answers why there is none. The caller holds
// FS.nsMu.
func (d *Dir) lookupRealLocked(name string) (node, syscall.Errno) {
	if err := naming.ValidateName(name); err != nil {
		return nil, toErrno(d.fs.log, "name", err)
	}
	n := d.liveChildLocked(name)
	if n == nil {
		return nil, syscall.ENOENT
	}
	return n, 0
}

// liveChildLocked is the entry named name in d, or nil. tempfs's own links are the truth about names; go-fuse's
// tree is an index into them that go-fuse also updates by itself after a request returns (it links the node of
// every LOOKUP, CREATE, LINK reply, and moves it at RENAME). A LOOKUP answered just before the daemon removed the
// name on its own (last close of a template file, --max-age) is linked back into the tree after the removal:
// such a stale child, and a template alias, is not a live entry. The caller holds FS.nsMu.
func (d *Dir) liveChildLocked(name string) node {
	ch := d.GetChild(name)
	if ch == nil {
		return d.whiteoutLocked(name)
	}
	n, ok := ch.Operations().(node)
	if !ok || !d.namesLocked(n, name) {
		return d.whiteoutLocked(name)
	}
	return n
}

// whiteoutLocked is the whiteout a RENAME_WHITEOUT left at name that go-fuse's tree does not hold yet, or nil;
// one that lost its name meanwhile is forgotten. The caller holds FS.nsMu.
func (d *Dir) whiteoutLocked(name string) node {
	w, ok := d.whiteouts[name]
	if !ok {
		return nil
	}
	if !d.namesLocked(w, name) {
		delete(d.whiteouts, name)
		return nil
	}
	return w
}

// namesLocked reports whether (d, name) is one of n's names in tempfs's namespace. The caller holds FS.nsMu.
func (d *Dir) namesLocked(n node, name string) bool {
	switch n := n.(type) {
	case *Dir:
		return !n.removed && n.parent == d && n.name == name
	case leafNode:
		return slices.Contains(n.leafPart().links, link{d, name})
	}
	return false
}

// dropLeafNameLocked removes the name (d, name) of l from tempfs's namespace and from go-fuse's tree at once,
// with the template alias go-fuse may have linked to l; it is how the daemon removes a name on its own (last
// close of a template file, --max-age). It reports false, changing nothing, when (d, name) is not a name of l
// any more. The caller holds FS.nsMu and tells the kernel afterwards, without it.
func (d *Dir) dropLeafNameLocked(l leafNode, name string) bool {
	if !l.leafPart().removeLinkLocked(d, name) {
		return false
	}
	d.entries--
	ino := l.EmbeddedInode()
	if d.GetChild(name) == ino {
		d.RmChild(name)
	}
	if d.alias != "" && d.GetChild(d.alias) == ino {
		d.RmChild(d.alias)
	}
	return true
}

// dropSubdirLocked removes the empty directory (d, name) from tempfs's namespace and from go-fuse's tree at
// once, as dropLeafNameLocked does for leaves. The caller holds FS.nsMu.
func (d *Dir) dropSubdirLocked(sub *Dir, name string) bool {
	if sub.entries > 0 || !d.namesLocked(sub, name) {
		return false
	}
	d.removeSubdirLocked(sub)
	if sub.alias != "" {
		sub.RmChild(sub.alias)
		sub.alias = ""
	}
	if d.GetChild(name) == sub.EmbeddedInode() {
		d.RmChild(name)
	}
	return true
}

func (d *Dir) Unlink(ctx context.Context, name string) syscall.Errno {
	d.fs.nsMu.Lock()
	n, errno := d.lookupRealLocked(name)
	if errno != 0 {
		d.fs.nsMu.Unlock()
		return errno
	}
	l, ok := n.(leafNode)
	if !ok {
		d.fs.nsMu.Unlock()
		return syscall.EISDIR
	}
	if errno := removeDenied(d, n); errno != 0 {
		d.fs.nsMu.Unlock()
		return errno
	}
	unused := d.unlinkLeafLocked(l, name)
	d.fs.nsMu.Unlock()
	d.fs.noteRemoved(removedUnlink, 1)
	l.base().touchChanged()
	d.attrs.touchModified()
	if unused {
		l.free()
	}
	return 0
}

// unlinkLeafLocked drops the name (d, name) of l and reports whether l is now unused. The caller holds nsMu.
func (d *Dir) unlinkLeafLocked(l leafNode, name string) bool {
	if f, ok := l.(*File); ok && f.isGeneratedLocked(d, name) {
		f.persistLocked() // the generated name goes now: nothing is left to remove at last close
	}
	if l.leafPart().removeLinkLocked(d, name) {
		d.entries--
	}
	unused := l.takeUnusedLocked()
	return unused
}

func (d *Dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	d.fs.nsMu.Lock()
	n, errno := d.lookupRealLocked(name)
	if errno != 0 {
		d.fs.nsMu.Unlock()
		return errno
	}
	sub, ok := n.(*Dir)
	if !ok {
		d.fs.nsMu.Unlock()
		return syscall.ENOTDIR
	}
	if sub.entries > 0 {
		d.fs.nsMu.Unlock()
		return syscall.ENOTEMPTY
	}
	if errno := removeDenied(d, sub); errno != 0 {
		d.fs.nsMu.Unlock()
		return errno
	}
	d.removeSubdirLocked(sub)
	alias := sub.alias
	sub.alias = ""
	d.fs.nsMu.Unlock()
	sub.dropAlias(alias)
	d.fs.noteRemoved(removedUnlink, 1)
	d.attrs.touchModified()
	d.fs.counts.dirs.Add(-1)
	sub.ForgetPersistent()
	return 0
}

// removeSubdirLocked detaches an empty directory from d. The caller holds nsMu.
func (d *Dir) removeSubdirLocked(sub *Dir) {
	sub.removed = true
	sub.parent = nil
	sub.created = nil
	d.entries--
	d.subdirs--
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
		d.NewPersistentInode(ctx, whiteout, fusefs.StableAttr{Mode: syscall.S_IFCHR})
		defer func() {
			if whiteout != nil { // not used: the rename failed
				whiteout.ForgetPersistent()
			}
		}()
	}
	fsys.nsMu.Lock()
	src, errno := d.lookupRealLocked(name)
	if errno != 0 {
		fsys.nsMu.Unlock()
		return errno
	}
	if nd.removed {
		fsys.nsMu.Unlock()
		return syscall.ENOENT
	}
	dst := nd.liveChildLocked(newName)
	if errno := renameDenied(d, src, nd, dst); errno != 0 {
		fsys.nsMu.Unlock()
		return errno
	}
	switch {
	case flags&unix.RENAME_EXCHANGE != 0:
		if dst == nil {
			fsys.nsMu.Unlock()
			return syscall.ENOENT
		}
		d.moveLocked(src, name, nd, newName)
		nd.moveLocked(dst, newName, d, name)
		fsys.nsMu.Unlock()
		src.base().touchChanged()
		dst.base().touchChanged()
		d.attrs.touchModified()
		nd.attrs.touchModified()
		return 0
	case flags&unix.RENAME_NOREPLACE != 0 && dst != nil:
		fsys.nsMu.Unlock()
		return syscall.EEXIST
	}

	var replaced, freeLeaf leafNode
	var freeDir *Dir
	if dst != nil && dst != src {
		srcDir, srcIsDir := src.(*Dir)
		dstDir, dstIsDir := dst.(*Dir)
		switch {
		case srcIsDir && !dstIsDir:
			fsys.nsMu.Unlock()
			return syscall.ENOTDIR
		case !srcIsDir && dstIsDir:
			fsys.nsMu.Unlock()
			return syscall.EISDIR
		case dstIsDir && dstDir.entries > 0:
			fsys.nsMu.Unlock()
			return syscall.ENOTEMPTY
		case dstIsDir:
			_ = srcDir
			nd.removeSubdirLocked(dstDir)
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
		whiteout.links = []link{{d, name}}
		d.entries++
		if d.whiteouts == nil {
			d.whiteouts = make(map[string]*Special)
		}
		d.whiteouts[name] = whiteout
		ended = fsys.tagLocked(whiteout, creator)
		whiteout = nil
		fsys.counts.others.Add(1)
		fsys.counts.created.Add(1)
	}
	fsys.nsMu.Unlock()
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

// moveLocked changes n's name (d, name) to (nd, newName) in tempfs's metadata. The caller holds nsMu and has
// removed whatever was at the destination.
func (d *Dir) moveLocked(n node, name string, nd *Dir, newName string) {
	switch n := n.(type) {
	case *Dir:
		n.parent, n.name = nd, newName
		d.subdirs--
		nd.subdirs++
	case leafNode:
		if f, ok := n.(*File); ok && f.isGeneratedLocked(d, name) {
			f.persistLocked()
		}
		l := n.leafPart()
		for i := range l.links {
			if l.links[i] == (link{d, name}) {
				l.links[i] = link{nd, newName}
				break
			}
		}
	}
	d.entries--
	nd.entries++
}

// renameDenied is EPERM when file flags forbid the rename: the source's entry cannot go, the one it replaces
// cannot go, or nothing may be made in the target directory. The caller holds FS.nsMu.
func renameDenied(d *Dir, src node, nd *Dir, dst node) syscall.Errno {
	if errno := removeDenied(d, src); errno != 0 {
		return errno
	}
	if dst != nil && dst != src {
		return removeDenied(nd, dst)
	}
	return nd.createDenied()
}
