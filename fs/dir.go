package fs

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/naming"
)

// Dir is a directory. It owns its entries: children is the one record of the names in it, which every
// namespace operation reads and changes (see fs.go). go-fuse's Inode children are told of each change but
// never asked.
//
// Lock order: see fs.go.
type Dir struct {
	fusefs.Inode
	attrs
	fs *FS

	// entriesMu guards the fields below up to fromTmpl: a change of this directory's entries holds it for
	// writing, and so does a change of the directory's own place (name, parent, removed), nested inside the
	// parent's (see fs.go). LOOKUP, READDIR and GETATTR hold it for reading.
	entriesMu sync.RWMutex
	name      string                   // name in parent
	children  map[string]node          // the entries, by name; never a template name; its length is st_size's count
	subdirs   int                      // child directories, for st_nlink
	created   map[uint32]createdRecord // user.tempfs.created, by creating thread id
	fromTmpl  bool                     // made by mkdir of a template
	// parent (nil for the root and after rmdir) and removed are written under entriesMu and read without it
	// where a lock would come out of order: a rename's ancestry check, the owners' bookkeeping.
	parent  atomic.Pointer[Dir]
	removed atomic.Bool
	ownedBy ownerTag // guarded by FS.ownMu

	// attrsCached: the kernel may hold this directory's attributes (some answer carried them since the
	// last invalidation). A change the daemon makes behind the kernel's back (a file made from a template
	// leaving at its last close) then invalidates them; otherwise the kernel's own change (create, unlink,
	// rename) did, and no notification is needed.
	attrsCached atomic.Bool
}

var (
	_ = (fusefs.NodeLookuper)((*Dir)(nil))
	_ = (fusefs.NodeOpendirHandler)((*Dir)(nil))
	_ = (fusefs.NodeGetattrer)((*Dir)(nil))
	_ = (fusefs.NodeSetattrer)((*Dir)(nil))
	_ = (fusefs.NodeStatfser)((*Dir)(nil))
	_ = (fusefs.NodeMkdirer)((*Dir)(nil))
	_ = (fusefs.NodeCreater)((*Dir)(nil))
	_ = (fusefs.NodeTmpfiler)((*Dir)(nil))
	_ = (fusefs.NodeMknoder)((*Dir)(nil))
	_ = (fusefs.NodeSymlinker)((*Dir)(nil))
	_ = (fusefs.NodeLinker)((*Dir)(nil))
	_ = (fusefs.NodeUnlinker)((*Dir)(nil))
	_ = (fusefs.NodeRmdirer)((*Dir)(nil))
	_ = (fusefs.NodeRenamer)((*Dir)(nil))
	_ = (fusefs.NodeGetxattrer)((*Dir)(nil))
	_ = (fusefs.NodeSetxattrer)((*Dir)(nil))
	_ = (fusefs.NodeListxattrer)((*Dir)(nil))
	_ = (fusefs.NodeRemovexattrer)((*Dir)(nil))
)

// createdRecord remembers the last entry a thread made from a template in a directory.
type createdRecord struct {
	name string
	seq  uint64
}

// maxCreatedRecords bounds user.tempfs.created memory per directory; the oldest record goes first.
const maxCreatedRecords = 4096

func (d *Dir) base() *attrs { return &d.attrs }

func (d *Dir) ownerTag() *ownerTag { return &d.ownedBy }

// path is the directory's absolute path in the mount, "" once removed. It holds FS.renameMu, so that no
// directory moves to another meanwhile, and each directory's entriesMu in turn to read its name.
func (d *Dir) path() string {
	d.fs.renameMu.Lock()
	defer d.fs.renameMu.Unlock()
	var parts []string
	for p := d; ; {
		p.entriesMu.RLock()
		parent, name := p.parent.Load(), p.name
		p.entriesMu.RUnlock()
		if parent == nil {
			break
		}
		parts = append(parts, name)
		p = parent
	}
	if len(parts) == 0 && d != d.fs.root {
		return "" // removed
	}
	slices.Reverse(parts)
	mp := strings.TrimSuffix(d.fs.opts.Mountpoint, "/")
	if len(parts) == 0 {
		if mp == "" {
			return "/"
		}
		return mp
	}
	return mp + "/" + strings.Join(parts, "/")
}

// lockEntries takes d's entriesMu for writing: how an operation that changes d's entries starts.
func (d *Dir) lockEntries() { d.entriesMu.Lock() }

func (d *Dir) unlockEntries() { d.entriesMu.Unlock() }

func (d *Dir) getattr(out *fuse.Attr) {
	if !d.attrsCached.Load() { // before reading: a change after this point will invalidate
		d.attrsCached.Store(true) // (only when unset: a lookup-heavy directory is not written on every getattr)
	}
	d.attrs.fill(out, d.StableAttr().Ino)
	d.entriesMu.RLock()
	out.Nlink = uint32(2 + d.subdirs)
	out.Size = uint64(40 + 20*len(d.children)) // as tmpfs counts: BOGO_DIRENT_SIZE per entry
	if d.removed.Load() {
		out.Nlink = 0
	}
	d.entriesMu.RUnlock()
	out.Blocks = 0
}

func (d *Dir) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.getattr(&out.Attr)
	out.SetTimeout(d.fs.opts.AttrTimeout)
	return 0
}

func (d *Dir) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := d.attrs.setattrDenied(in); errno != 0 {
		return errno
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	d.attrs.setattr(ctx, in)
	d.getattr(&out.Attr)
	out.SetTimeout(d.fs.opts.AttrTimeout)
	return 0
}

// Lookup finds a real entry. A template name never matches anything (docs/guarantees.md, Names and templates), so a template can
// never be shadowed and open without O_CREAT on it fails with ENOENT.
func (d *Dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if a := d.fs.adopting; a != nil {
		if n := a.byName[name]; n != nil { // a name no kernel sends: see adopt
			n.getattr(&out.Attr)
			return n.EmbeddedInode(), 0
		}
	}
	if len(name) > naming.MaxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	if naming.IsTemplate(name) {
		return nil, syscall.ENOENT
	}
	// Under entriesMu, so that a removal by the daemon itself (File.release) either comes first, and the name
	// is not found, or sees lookedUp and tells the kernel, whose invalidation then waits for this lookup's
	// reply. The child's attributes are read after it is released: a reader holds one directory's lock at a
	// time (see fs.go).
	d.entriesMu.RLock()
	n := d.children[name]
	if f, isFile := n.(*File); isFile && !f.lookedUp.Load() {
		f.lookedUp.Store(true) // the kernel now has a dentry for a real name: see File.release
	}
	d.entriesMu.RUnlock()
	if n == nil {
		return nil, syscall.ENOENT
	}
	n.getattr(&out.Attr)
	d.fs.entryTimeouts(out)
	if f, isFile := n.(*File); isFile {
		out.SetAttrTimeout(f.attrTimeout()) // 0 while passthrough may write it unseen
	}
	return d.fs.handedOut(n), 0
}

// OpendirHandle opens a listing of the live entries, in a stable order (by name) so that concurrent readers of
// one directory see consistent offsets. The handle keeps that listing, so that one pass over the directory
// neither repeats nor skips an entry while others change it; a rewind (rewinddir, lseek to 0) lists afresh.
// The listing is taken at the first READDIR, not at OPENDIR, as on tmpfs.
func (d *Dir) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if a := d.fs.adopting; a != nil && a.next != nil {
		h := a.next
		a.next = nil
		return h, 0, 0
	}
	s := &dirStream{dir: d}
	d.fs.handles.made(ctx, s)
	return s, 0, 0
}

// listing is the directory's entries now, "." and ".." first, the others by name.
func (d *Dir) listing() []fuse.DirEntry {
	d.entriesMu.RLock()
	parent := d.parent.Load()
	if parent == nil {
		parent = d // the root is its own parent
	}
	entries := make([]fuse.DirEntry, 0, len(d.children)+2)
	// go-fuse leaves "." and ".." to the filesystem; ls -a and programs that count entries expect them.
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.StableAttr().Ino},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent.StableAttr().Ino})
	for name, n := range d.children {
		ino := n.EmbeddedInode().StableAttr()
		entries = append(entries, fuse.DirEntry{Name: name, Mode: ino.Mode, Ino: ino.Ino})
	}
	d.entriesMu.RUnlock()
	slices.SortFunc(entries[2:], func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	d.fs.atime.accessed(&d.attrs)
	return entries
}

// Statfs reports the caps: blocks are the RAM cap plus the disk space (the disk cap, or the store's filesystem).
func (d *Dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	d.fs.statfs(out)
	return 0
}

func (d *Dir) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(ctx, d, attr, dest)
}

func (d *Dir) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return setxattr(ctx, d, attr, data, flags)
}

func (d *Dir) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(ctx, d, dest)
}

func (d *Dir) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return removexattr(ctx, d, attr)
}
