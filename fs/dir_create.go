package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/naming"
)

// This file holds the operations that add entries to a directory, and the template rules of
// docs/guarantees.md, Names and templates: a last component with a run of at least six X makes a fresh, private entry under a generated name.

// parseNewName checks a name for a new entry and says whether it is a template.
func (d *Dir) parseNewName(name string) (naming.Template, bool, syscall.Errno) {
	if err := naming.ValidateName(name); err != nil {
		return naming.Template{}, false, toErrno(d.fs.log, "name", err)
	}
	if !naming.IsTemplate(name) {
		return naming.Template{}, false, 0
	}
	t, err := naming.ParseTemplate(name)
	if err != nil {
		return naming.Template{}, false, toErrno(d.fs.log, "template", err)
	}
	return t, true, 0
}

// checkPlainName refuses template names where a template makes no sense (symlink, mknod, link, rename target):
// such an entry could never be looked up.
func (d *Dir) checkPlainName(name string) syscall.Errno {
	if err := naming.ValidateName(name); err != nil {
		return toErrno(d.fs.log, "name", err)
	}
	if naming.IsTemplate(name) {
		return syscall.EINVAL
	}
	return 0
}

// owner decides the owner and permission bits of a new entry: the caller's uid, and the caller's gid unless
// the directory is setgid (then its gid, and new directories inherit the bit), as tmpfs does.
func (d *Dir) owner(ctx context.Context, perm uint32, isDir bool) (uid, gid, mode uint32) {
	uid, gid, _ = caller(ctx)
	d.attrs.mu.Lock()
	if d.attrs.mode&syscall.S_ISGID != 0 {
		gid = d.attrs.gid
		if isDir {
			perm |= syscall.S_ISGID
		}
	}
	d.attrs.mu.Unlock()
	return uid, gid, perm
}

// claimNameLocked picks the entry's real name and links n under it in d, in one step: two creates of one name
// cannot both find it free. pid is the calling process (not thread), for user.tempfs.created. For a template
// it draws a name that is free in d; for a plain name it fails with EEXIST if the name is taken. The caller
// holds d.entriesMu.
func (d *Dir) claimNameLocked(name string, tmpl naming.Template, isTmpl bool, pid uint32, n node) (realName string, errno syscall.Errno) {
	if !isTmpl {
		if errno := d.nameFreeLocked(name); errno != 0 {
			return "", errno
		}
		d.addChildLocked(name, n)
		return name, 0
	}
	if d.removed.Load() {
		return "", syscall.ENOENT
	}
	if errno := d.createDenied(); errno != 0 {
		return "", errno
	}
	realName, err := tmpl.Draw(func(candidate string) bool { return d.children[candidate] != nil })
	if err != nil {
		return "", toErrno(d.fs.log, "template draw", err)
	}
	d.addChildLocked(realName, n)
	if pid != 0 {
		d.recordCreatedLocked(pid, realName)
	}
	d.fs.counts.templateEntries.Add(1)
	return realName, 0
}

// nameFreeLocked answers why a new entry cannot be made under the plain name, or 0. The caller holds d.entriesMu
// and keeps it until the entry is linked (addChildLocked).
func (d *Dir) nameFreeLocked(name string) syscall.Errno {
	if d.removed.Load() {
		return syscall.ENOENT
	}
	if errno := d.createDenied(); errno != 0 {
		return errno
	}
	if d.children[name] != nil {
		return syscall.EEXIST
	}
	return 0
}

// addChildLocked links n under name in d; the name is free. The caller holds d.entriesMu.
func (d *Dir) addChildLocked(name string, n node) {
	if d.children == nil {
		d.children = make(map[string]node)
	}
	d.children[name] = n
	d.fs.noteEntry(d, name, n)
}

// recordCreatedLocked remembers, for user.tempfs.created, the last name process pid made here. The caller holds
// d.entriesMu.
func (d *Dir) recordCreatedLocked(pid uint32, name string) {
	if d.created == nil {
		d.created = make(map[uint32]createdRecord)
	}
	seq := d.fs.createdSeq.Add(1)
	if _, ok := d.created[pid]; !ok && len(d.created) >= maxCreatedRecords {
		var oldest uint32
		oldestSeq := ^uint64(0)
		for p, r := range d.created {
			if r.seq < oldestSeq {
				oldest, oldestSeq = p, r.seq
			}
		}
		delete(d.created, oldest)
	}
	d.created[pid] = createdRecord{name: name, seq: seq}
}

// creatorProcess is the calling process, for user.tempfs.created; only template creates need it.
func (d *Dir) creatorProcess(ctx context.Context, isTmpl bool) uint32 {
	if !isTmpl {
		return 0
	}
	_, _, tid := caller(ctx)
	return d.fs.processOf(tid)
}

// newEntryOut answers a new entry: for a template with entry timeout 0, so the kernel never keeps the template
// name bound to the new entry (docs/kernel.md, Templates). The attribute timeout belongs to the inode, not the name, so
// it is the usual one: with 0 the kernel asked GETATTR right after every template CREATE.
func (d *Dir) newEntryOut(n node, isTmpl bool, out *fuse.EntryOut) {
	n.getattr(&out.Attr)
	d.fs.entryTimeouts(out)
	if isTmpl {
		out.SetEntryTimeout(0)
	}
}

func (d *Dir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	tmpl, isTmpl, errno := d.parseNewName(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	perm := mode & 07777
	if isTmpl {
		perm = 0o600
	}
	perm, inh := d.inheritACL(ctx, perm, false, !isTmpl)
	uid, gid, perm := d.owner(ctx, perm, false)
	pid := d.creatorProcess(ctx, isTmpl)
	creator, errno := d.fs.creatorOwner(ctx)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	f := d.fs.newFileNode(syscall.S_IFREG|perm, uid, gid)
	inh.apply(&f.attrs)
	ch := d.NewPersistentInode(ctx, f, d.fs.stable(syscall.S_IFREG))

	d.lockEntries()
	realName, errno := d.claimNameLocked(name, tmpl, isTmpl, pid, f)
	if errno != 0 {
		d.unlockEntries()
		f.data.Close()
		return nil, nil, 0, errno
	}
	f.stateMu.Lock()
	if isTmpl {
		f.ephemeral = true // links[0], set below, is the generated name
		d.fs.counts.ephemeralFiles.Add(1)
	}
	f.setLinksLocked([]link{{d, realName}})
	h := f.openLocked(flags)
	f.stateMu.Unlock()
	ended := d.fs.tag(f, creator)
	d.unlockEntries()
	d.fs.requeue(ended)

	d.fs.counts.files.Add(1)
	d.fs.counts.created.Add(1)
	d.attrs.touchModified()
	d.newEntryOut(f, isTmpl, out)
	if isTmpl {
		// Dropped at the first write or release (see templateDentry). The open file keeps working; its
		// /proc/self/fd link, which names the template anyway, then reads "(deleted)".
		h.templateDentry.Store(&templateDentry{dir: d, name: name})
	}
	d.fs.handles.made(ctx, h)
	d.fs.refs.add(f)
	return ch, h, h.openFlags(), 0
}

func (d *Dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	tmpl, isTmpl, errno := d.parseNewName(name)
	if errno != 0 {
		return nil, errno
	}
	perm := mode & 07777
	if isTmpl {
		perm = 0o700
	}
	perm, inh := d.inheritACL(ctx, perm, true, !isTmpl)
	uid, gid, perm := d.owner(ctx, perm, !isTmpl)
	pid := d.creatorProcess(ctx, isTmpl)
	creator, errno := d.fs.creatorOwner(ctx)
	if errno != 0 {
		return nil, errno
	}
	sub := &Dir{attrs: newAttrs(syscall.S_IFDIR|perm, uid, gid), fs: d.fs, fromTmpl: isTmpl}
	inh.apply(&sub.attrs)
	ch := d.NewPersistentInode(ctx, sub, d.fs.stable(syscall.S_IFDIR))

	d.lockEntries()
	realName, errno := d.claimNameLocked(name, tmpl, isTmpl, pid, sub)
	if errno != 0 {
		d.unlockEntries()
		return nil, errno
	}
	sub.parent.Store(d)
	sub.name = realName // sub is reachable only through d, which is locked
	d.subdirs++
	ended := d.fs.tag(sub, creator)
	d.unlockEntries()
	d.fs.requeue(ended)

	d.fs.counts.dirs.Add(1)
	d.fs.counts.created.Add(1)
	d.attrs.touchModified()
	d.newEntryOut(sub, isTmpl, out)
	d.fs.refs.add(sub)
	return ch, 0
}

// Tmpfile answers open(dir, O_TMPFILE): a file with no name, freed at its last close unless linkat gives it one.
func (d *Dir) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	perm, inh := d.inheritACL(ctx, mode&07777, false, true)
	uid, gid, perm := d.owner(ctx, perm, false)
	// The file has no owner until linkat names it, but its bytes count against its creator's --owner-quota.
	var creator *owner.Owner
	if d.fs.quota != nil {
		var errno syscall.Errno
		if creator, errno = d.fs.creatorOwner(ctx); errno != 0 {
			return nil, nil, 0, errno
		}
	}
	f := d.fs.newFileNode(syscall.S_IFREG|perm, uid, gid)
	inh.apply(&f.attrs)
	ch := d.NewPersistentInode(ctx, f, d.fs.stable(syscall.S_IFREG))
	if d.removed.Load() {
		f.data.Close()
		return nil, nil, 0, syscall.ENOENT
	}
	f.stateMu.Lock()
	h := f.openLocked(flags)
	f.linkable = flags&syscall.O_EXCL == 0
	f.stateMu.Unlock()
	if creator != nil {
		d.fs.ownMu.Lock()
		d.fs.chargeToLocked(f, d.fs.owners.accountLocked(creator))
		d.fs.ownMu.Unlock()
	}
	d.fs.counts.files.Add(1)
	d.fs.counts.created.Add(1)
	f.getattr(&out.Attr)
	// The kernel's d_tmpfile drops one link from what we answer here; the file has none afterwards.
	out.Attr.Nlink = 1
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	d.fs.handles.made(ctx, h)
	d.fs.refs.add(f)
	return ch, h, h.openFlags(), 0
}

func (d *Dir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if errno := d.checkPlainName(name); errno != 0 {
		return nil, errno
	}
	perm, inh := d.inheritACL(ctx, mode&07777, false, true)
	uid, gid, perm := d.owner(ctx, perm, false)
	var n leafNode
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		n = d.fs.newFileNode(syscall.S_IFREG|perm, uid, gid)
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		s := &Special{leaf: leaf{attrs: newAttrs(mode&syscall.S_IFMT|perm, uid, gid)}, fs: d.fs}
		s.attrs.rdev = dev
		n = s
	default:
		return nil, syscall.EINVAL
	}
	inh.apply(n.base())
	return d.addLeaf(ctx, name, n, out)
}

func (d *Dir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if errno := d.checkPlainName(name); errno != 0 {
		return nil, errno
	}
	uid, gid, _ := d.owner(ctx, 0o777, false)
	s := &Symlink{leaf: leaf{attrs: newAttrs(syscall.S_IFLNK|0o777, uid, gid)}, fs: d.fs, target: []byte(target)}
	return d.addLeaf(ctx, name, s, out)
}

// addLeaf links a new non-directory node under a plain name.
func (d *Dir) addLeaf(ctx context.Context, name string, n leafNode, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	creator, errno := d.fs.creatorOwner(ctx)
	if errno != 0 {
		if f, ok := n.(*File); ok {
			f.data.Close()
		}
		return nil, errno
	}
	ch := d.NewPersistentInode(ctx, n, d.fs.stable(n.base().fileType()))
	d.lockEntries()
	if _, errno := d.claimNameLocked(name, naming.Template{}, false, 0, n); errno != 0 {
		d.unlockEntries()
		if f, ok := n.(*File); ok {
			f.data.Close()
		}
		return nil, errno
	}
	l := n.leafPart()
	l.stateMu.Lock()
	l.setLinksLocked([]link{{d, name}})
	l.stateMu.Unlock()
	ended := d.fs.tag(n, creator)
	d.unlockEntries()
	d.fs.requeue(ended)
	if _, ok := n.(*File); ok {
		d.fs.counts.files.Add(1)
		d.fs.counts.created.Add(1)
	} else {
		d.fs.counts.others.Add(1)
		d.fs.counts.created.Add(1)
	}
	d.attrs.touchModified()
	d.newEntryOut(n, false, out)
	d.fs.refs.add(n)
	return ch, 0
}

// Link adds a name to an existing node. It is also how an O_TMPFILE file gets its first name (linkat).
func (d *Dir) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if errno := d.checkPlainName(name); errno != 0 {
		return nil, errno
	}
	n, ok := target.(leafNode)
	if !ok {
		return nil, syscall.EPERM
	}
	if errno := n.base().protectedErrno(); errno != 0 {
		return nil, errno
	}
	// An O_TMPFILE file's owner is the process that gives it its first name; other links keep the owner.
	creator, errno := d.fs.creatorOwner(ctx)
	if errno != 0 {
		return nil, errno
	}
	var ended *owner.Owner
	d.lockEntries()
	l := n.leafPart()
	l.stateMu.Lock()
	unlock := func() {
		l.stateMu.Unlock()
		d.unlockEntries()
	}
	if errno := d.nameFreeLocked(name); errno != 0 {
		unlock()
		return nil, errno
	}
	firstName := len(l.links) == 0
	if firstName {
		// A node without names gets one only if it is a linkable O_TMPFILE file, and only once, as the
		// kernel's I_LINKABLE rule says; the kernel does not always know (its link count can be stale).
		f, ok := n.(*File)
		if !ok || !f.linkable || f.freed.Load() || f.unpinned {
			unlock()
			return nil, syscall.ENOENT
		}
		// Its bytes move to the owner the name gives it (nobody, for an unowned name), or EDQUOT when they
		// would take that owner past its quota.
		d.fs.ownMu.Lock()
		var set *ownedEntries
		if creator != nil {
			set = d.fs.owners.accountLocked(creator)
		}
		errno := d.fs.moveChargeLocked(f, set)
		d.fs.ownMu.Unlock()
		if errno != 0 {
			unlock()
			return nil, errno
		}
	}
	d.addChildLocked(name, n)
	l.setLinksLocked(append(l.links, link{d, name}))
	if firstName {
		f := n.(*File)
		f.linkable = false
		ended = d.fs.tag(n, creator)
	} else {
		// A new name for an entry whose owner ended while it was being removed: it goes too.
		ended = d.fs.retagIfGone(n)
	}
	unlock()
	d.fs.requeue(ended)
	n.base().touchChanged()
	d.attrs.touchModified()
	d.newEntryOut(n, false, out)
	return d.fs.handedOut(n), 0
}
