package fs

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/spool"
)

// File is a regular file. Its bytes live in a spool.File; this node keeps names, open counts and the lifetime
// rule of docs/guarantees.md, Lifetimes: a file made from a template loses its generated name when its last handle is
// released, unless it was persisted (rename, or user.tempfs.lifetime=keep).
//
// Lock order: see fs.go (a directory's entriesMu, then the file's stateMu, then FS.ownMu, then attrs.mu, then
// the spool file's lock).
type File struct {
	fusefs.Inode
	leaf
	fs   *FS
	data *spool.File

	// Guarded by leaf.stateMu.
	opens       int32 // open handles of every kind
	cachedOpens int32 // handles served by the daemon (the others by passthrough)
	// ephemeral: links[0] is the generated name, removed at last close; false once persisted.
	ephemeral bool
	ptWritten bool // a writable passthrough handle was handed out: the data changed behind the page cache
	// A file's bytes go when the last of its names, its open handles and the kernel's lookups goes. The
	// kernel keeps a node it looked up usable after its last name went (a rename over it, an unlink): it
	// may still OPEN, SETATTR or exec it by node ID until it sends FORGET. unpinned: names and handles are
	// gone and go-fuse was told the node is no longer persistent, so that it calls OnForget once the kernel
	// holds no lookup; forgotten: OnForget came; freed: the bytes are released.
	unpinned  bool
	forgotten bool
	freed     atomic.Bool // written under stateMu; read without it by the quota bookkeeping
	// linkable: made by O_TMPFILE without O_EXCL and not linked yet, so linkat may give it its first name
	// (the kernel's I_LINKABLE). Any other file without names cannot get one back.
	linkable bool

	// lookedUp is set once the kernel may hold a dentry for one of the file's real names (a LOOKUP or
	// READDIRPLUS answered it). A file made from a template and never looked up by its real name has none,
	// and its removal at last close needs no delete notification.
	lookedUp atomic.Bool

	// opened is when the file was last opened or closed (Mono clock, nanoseconds), for lastUse: a file is in use
	// while it is open, and passthrough writes and reads from the page cache never reach the daemon.
	opened atomic.Int64

	// ptWriters counts the open writable passthrough handles (a shared mapping keeps its handle open until
	// munmap). While there is one, the kernel may write the backing file behind the daemon, through write(2)
	// (after which the kernel itself asks GETATTR again) or through a shared mapping (after which it does
	// not): attributes are then answered with timeout 0, so that each stat asks, and GETATTR takes the
	// backing file's mtime with one fstat, as a stat on tmpfs sees a write through a mapping at once.
	ptWriters atomic.Int32

	// backingSeen is the backing file's mtime (nanoseconds) when tempfs last took it over into attrs.mtime
	// (guarded by attrs.mu). Passthrough writes move only the backing file's mtime; a later one means new
	// writes.
	backingSeen int64
}

var (
	_ = (fusefs.NodeOpener)((*File)(nil))
	_ = (fusefs.NodeGetattrer)((*File)(nil))
	_ = (fusefs.NodeSetattrer)((*File)(nil))
	_ = (fusefs.NodeGetxattrer)((*File)(nil))
	_ = (fusefs.NodeSetxattrer)((*File)(nil))
	_ = (fusefs.NodeListxattrer)((*File)(nil))
	_ = (fusefs.NodeRemovexattrer)((*File)(nil))
	_ = (fusefs.NodeOnForgetter)((*File)(nil))
	_ = (leafNode)((*File)(nil))
)

func (f *File) base() *attrs { return &f.attrs }

// newFileNode is a new regular file of mode and owner ids, with empty bytes of its own in the pool.
func (fsys *FS) newFileNode(mode, uid, gid uint32) *File {
	f := &File{leaf: leaf{attrs: newAttrs(mode, uid, gid)}, fs: fsys, data: fsys.pool.NewFile()}
	f.data.SetTag(f)
	return f
}

func (f *File) getattr(out *fuse.Attr) {
	st := f.data.Stat()
	if st.External {
		f.adoptBackingMtime(st.ModTime)
	}
	f.attrs.fill(out, f.StableAttr().Ino)
	out.Size = uint64(st.Size)
	out.Blocks = uint64(st.Blocks)
	out.Nlink = f.nlink.Load()
}

// adoptBackingMtime takes over the backing file's mtime when passthrough writes moved it since the last look:
// the kernel wrote the file without the daemon seeing it. An explicit utimens since then stays in force.
func (f *File) adoptBackingMtime(nanos int64) {
	f.attrs.mu.Lock()
	if f.backingSeen < nanos {
		f.backingSeen = nanos
		backing := timespecFromNanos(nanos)
		f.attrs.mtime = laterOf(f.attrs.mtime, backing)
		f.attrs.ctime = laterOf(f.attrs.ctime, backing)
	}
	f.attrs.mu.Unlock()
}

// lastUse counts the last open too: reads served from the page cache or by passthrough never reach the daemon,
// and relatime moves atime at most daily, but every open does reach it.
func (f *File) lastUse() int64 {
	return max(f.leaf.lastUse(), f.opened.Load())
}

// takeUnusedLocked reports true when free must run: once when the file has lost its last name and its last
// handle (free then unpins it: it is no longer an entry, and its bytes go at OnForget), and once more if the
// kernel, which may still open the node by ID after that, forgot it before the RELEASE of such a later
// handle came (the kernel's FORGET may overtake a RELEASE): free then releases the bytes. The caller holds
// f.stateMu.
func (f *File) takeUnusedLocked() bool {
	if len(f.links) > 0 || f.opens > 0 || f.freed.Load() {
		return false
	}
	if !f.unpinned {
		f.unpinned = true
		return true
	}
	if f.forgotten {
		f.freed.Store(true)
		return true
	}
	return false
}

// free releases the bytes when the kernel forgot the node already. Otherwise the file stops being counted as
// an entry and go-fuse is told the node is no longer persistent, so that it calls OnForget when the kernel
// holds no lookup of it: at once if it holds none. It runs without stateMu, which OnForget takes.
func (f *File) free() {
	if f.freed.Load() {
		f.releaseData()
		return
	}
	f.fs.uncharge(f)
	f.fs.counts.files.Add(-1)
	f.ForgetPersistent()
}

// OnForget is go-fuse's word that the kernel holds no lookup of the node and it is not persistent (it was
// unpinned): no request can name it any more. Its bytes go now unless a handle is still open (the kernel's
// FORGET may arrive before the RELEASE of the last handle: release frees them then).
func (f *File) OnForget() {
	f.stateMu.Lock()
	f.forgotten = true
	release := f.unpinned && len(f.links) == 0 && f.opens == 0 && !f.freed.Load()
	if release {
		f.freed.Store(true)
	}
	f.stateMu.Unlock()
	if release {
		f.releaseData()
	}
}

// releaseData gives the file's bytes back; it runs once, after freed was set.
func (f *File) releaseData() {
	if err := f.data.Close(); err != nil {
		f.fs.log.Warn("closing spool file", "err", err)
	}
}

// ephemeralLocked reports whether the file still goes away at its last close. The caller holds f.stateMu.
func (f *File) ephemeralLocked() bool { return f.ephemeral }

// isGeneratedLocked reports whether (d, name) is the generated name that goes at the last close. The caller
// holds f.stateMu.
func (f *File) isGeneratedLocked(d *Dir, name string) bool {
	return f.ephemeral && len(f.links) > 0 && f.links[0] == link{d, name}
}

// persistLocked makes the file ordinary: it keeps its names after the last close. The caller holds f.stateMu.
func (f *File) persistLocked() {
	if f.ephemeral {
		f.ephemeral = false
		f.fs.counts.ephemeralFiles.Add(-1)
	}
}

func (f *File) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.getattr(&out.Attr)
	out.SetTimeout(f.attrTimeout())
	return 0
}

// attrTimeout is how long the kernel may keep the file's attributes: 0 while passthrough may write it
// unseen (see ptWriters).
func (f *File) attrTimeout() time.Duration {
	if f.ptWriters.Load() > 0 {
		return 0
	}
	return f.fs.opts.AttrTimeout
}

func (f *File) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := f.attrs.setattrDenied(in); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		if size > uint64(spool.MaxFileSize) {
			return syscall.EFBIG
		}
		if err := f.data.Truncate(int64(size)); err != nil {
			return toErrno(f.fs.log, "truncate", err)
		}
		f.attrs.touchModified()
	}
	if st := f.data.Stat(); st.External {
		f.adoptBackingMtime(st.ModTime) // so that the new times below win over older writes
	}
	f.attrs.setattr(ctx, in)
	f.getattr(&out.Attr)
	out.SetTimeout(f.attrTimeout())
	return 0
}

// Open hands out a handle. A disk-resident file may be served by passthrough; the kernel refuses to mix
// passthrough and daemon-served handles on one inode, so passthrough is offered only while no daemon-served
// handle is open, and RAM-resident files are always daemon-served (the daemon must see their writes to roll
// them over and keep the memory cap).
func (f *File) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if a := f.fs.adopting; a != nil && a.next != nil { // a handle carried over: see adopt
		h := a.next
		a.next = nil
		return h, 0, 0
	}
	if errno := f.attrs.openDenied(flags); errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := f.data.Truncate(0); err != nil {
			return nil, 0, toErrno(f.fs.log, "open O_TRUNC", err)
		}
		if f.attrs.wrote(ctx) {
			f.privDropped()
		}
	}
	f.stateMu.Lock()
	if f.freed.Load() {
		f.stateMu.Unlock()
		return nil, 0, syscall.ENOENT
	}
	h := f.openLocked(flags)
	f.stateMu.Unlock()
	if h.passthrough && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		// Passthrough writes never reach the daemon, which must drop set-user-ID and set-group-ID for an
		// unprivileged writer (FUSE_HANDLE_KILLPRIV_V2): drop them when such a writer opens the file.
		// The kernel may hold attributes with the usual timeout from before: drop them, so that the next
		// stat asks (see ptWriters). The same notification tells it of dropped set-ID bits.
		f.attrs.killPrivForWrite(ctx)
		f.privDropped()
	}
	f.fs.handles.made(ctx, h)
	return h, h.openFlags(), 0
}

// privDropped tells the kernel that the daemon dropped set-user-ID or set-group-ID in answer to a request whose
// reply carries no attributes (WRITE, OPEN with O_TRUNC, FALLOCATE): the kernel may have cached the old mode
// for the attribute timeout, and stat and execve would see the bits until then. Only attributes are
// invalidated (offset -1), which takes no lock the request in progress holds.
func (f *File) privDropped() {
	if errno := f.NotifyContent(-1, 0); errno != 0 && errno != syscall.ENOENT {
		f.fs.log.Debug("notify attributes after dropping set-ID bits", "errno", errno)
	}
}

// openLocked counts a new handle and decides how the kernel serves it. The caller holds f.stateMu.
func (f *File) openLocked(flags uint32) *handle {
	h := &handle{file: f, flags: flags, synced: f.data.SyncMark()}
	f.opened.Store(monoNow())
	if f.fs.passthrough.Load() && f.cachedOpens == 0 && f.data.Where().OnDisk() {
		h.passthrough = true
		if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			f.data.NoteExternalWrite()
			if !f.ptWritten {
				// The backing file's mtime so far is the daemon's own writes (and the rollover), which
				// attrs.mtime already tells, or a utimens overruled: only later moves are the kernel's.
				st := f.data.Stat()
				f.attrs.mu.Lock()
				f.backingSeen = max(f.backingSeen, st.ModTime)
				f.attrs.mu.Unlock()
			}
			f.ptWritten = true
			f.ptWriters.Add(1)
		}
		f.fs.counts.passthroughOpens.Add(1)
	} else {
		f.cachedOpens++
		// The kernel may keep the page cache across opens when every change of the data went through it:
		// always, unless passthrough wrote the backing file behind the FUSE inode's cache.
		h.keepCache = !f.ptWritten
		h.directIO = f.fs.directWrites.Load() && bypassesPageCache(flags)
	}
	f.opens++
	f.fs.counts.openHandles.Add(1)
	return h
}

// bypassesPageCache tells which daemon-served handles are opened with FOPEN_DIRECT_IO (see handle.directIO):
// the write-only ones. What they write is kept once, in the spool, until a reader's READs bring it into the
// page cache. Read-write handles, the ones that create a file included (a database, mkstemp's scratch file, a
// test's store), stay cached: a program that writes a file and keeps working in it reads it back, and each of
// those reads would otherwise be a round trip. Their cost is one GETXATTR security.capability per
// new file at its first write, which the kernel asks before a cached write and then remembers for the inode.
func bypassesPageCache(flags uint32) bool {
	return flags&syscall.O_ACCMODE == syscall.O_WRONLY
}

// release is the end of one handle; at the last one an ephemeral file loses its generated name and a file
// without names frees its data. RELEASE is the only reliable last-close signal (docs/kernel.md, Last close). It arrives
// asynchronously, so a rename, link or setxattr of the generated name can race with it: the name leaves
// the directory in one step under its entriesMu (Dir.dropLeafNameLocked), and those operations either find it whole or
// answer ENOENT.
func (f *File) release(h *handle) {
	fsys := f.fs
	f.opened.Store(monoNow())
	f.stateMu.Lock()
	f.opens--
	if !h.passthrough {
		f.cachedOpens--
	} else if h.flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f.ptWriters.Add(-1)
	}
	var gone link
	// A file that goes at its last close keeps its generated name until then (every other remover of that
	// name persists the file first); the length check only keeps a broken promise from panicking here, with
	// its directory's lock held below.
	last := f.opens == 0 && f.ephemeral && len(f.links) > 0
	if last {
		gone = f.links[0]
	}
	unused := !last && f.takeUnusedLocked()
	f.stateMu.Unlock()
	if last {
		// The generated name goes, under its directory's entriesMu, which comes before stateMu (see fs.go):
		// what changed in between (a new open, a rename or user.tempfs.lifetime=keep persisting the file) is
		// seen again.
		d := gone.dir
		d.entriesMu.Lock()
		f.stateMu.Lock()
		dropped := false
		if f.opens == 0 && f.ephemeral && len(f.links) > 0 && f.links[0] == gone {
			f.persistLocked()
			dropped = d.dropLeafNameLocked(f, gone.name)
		}
		unused = f.takeUnusedLocked()
		f.stateMu.Unlock()
		d.entriesMu.Unlock()
		if !dropped {
			gone = link{}
		}
	}
	fsys.counts.openHandles.Add(-1)

	if gone.dir != nil {
		fsys.noteRemoved(removedLastClose, 1)
		d := gone.dir
		d.forgetChild(gone.name, f)
		d.attrs.touchModified()
		// Tell the kernel the name is gone, so that a cached dentry cannot outlive the file. The
		// notification takes the directory's lock in the kernel: skip it when no dentry can exist, and
		// then only drop the directory's cached attributes (mtime, size), if the kernel has them.
		if f.lookedUp.Load() {
			name := gone.name
			fsys.notifyKernel(func() {
				if errno := d.NotifyDelete(name, f.EmbeddedInode()); errno != 0 && errno != syscall.ENOENT {
					fsys.log.Debug("notify delete", "name", name, "errno", errno)
				}
			})
		} else if d.attrsCached.Swap(false) {
			if errno := d.NotifyContent(-1, 0); errno != 0 && errno != syscall.ENOENT {
				fsys.log.Debug("notify directory attributes", "dir", d.StableAttr().Ino, "errno", errno)
			}
		}
	}
	if unused {
		f.free()
	}
}

func (f *File) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(ctx, f, attr, dest)
}

func (f *File) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return setxattr(ctx, f, attr, data, flags)
}

func (f *File) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(ctx, f, dest)
}

func (f *File) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return removexattr(ctx, f, attr)
}
