package fs

// Lock order: handle.fsyncMu, then the spool file's own locks (spool.File.Sync).

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/spool"
)

// handle is one open file description of a File. Handles served by passthrough still implement Read and Write:
// if the kernel or go-fuse turned passthrough off, requests come here and are served all the same.
type handle struct {
	file        *File
	flags       uint32
	passthrough bool
	keepCache   bool
	// directIO: the handle's reads and writes go straight to the daemon, not through the FUSE page cache.
	// Write-only handles are opened so (bypassesPageCache), when the kernel allows mmap on them: the bytes
	// are kept once, in the spool, until a reader reads them; a write costs one copy
	// fewer; and the kernel skips the GETXATTR security.capability round trip that a cached write makes on
	// every new inode (tempfs drops suid/sgid itself, see attrs.wrote).
	directIO bool
	fsyncMu  sync.Mutex // guards synced: a handle's fsyncs may run concurrently
	// synced is what this handle's fsyncs were told of the store's writeback errors (see spool.File.Sync).
	synced spool.WritebackMark
	// templateDentry: set on the handle of a template's CREATE until the kernel's dentry for the template
	// name is invalidated (see templateDentry).
	templateDentry atomic.Pointer[templateDentry]
}

// openFlags are the FOPEN_* flags the handle is answered with.
func (h *handle) openFlags() uint32 {
	var flags uint32
	if h.directIO {
		flags |= fuse.FOPEN_DIRECT_IO
	}
	if h.keepCache {
		// Also on direct-I/O handles: without it the kernel drops the inode's cached pages at every open.
		flags |= fuse.FOPEN_KEEP_CACHE
	}
	return flags
}

var (
	_ = (fusefs.FileReader)((*handle)(nil))
	_ = (fusefs.FileWriter)((*handle)(nil))
	_ = (fusefs.FileReleaser)((*handle)(nil))
	_ = (fusefs.FileFlusher)((*handle)(nil))
	_ = (fusefs.FileFsyncer)((*handle)(nil))
	_ = (fusefs.FileAllocater)((*handle)(nil))
	_ = (fusefs.FileLseeker)((*handle)(nil))
	_ = (fusefs.FilePassthroughFder)((*handle)(nil))
)

// PassthroughFd is asked by go-fuse once per inode, at the first open, to register the backing file.
func (h *handle) PassthroughFd() (int, bool) {
	// A handle carried over in a take-over keeps the backing id the kernel has (fsys.adoptedBacking).
	if !h.passthrough || h.file.fs.adopting != nil {
		return -1, false
	}
	return h.file.data.PassthroughFd()
}

// notePassthroughMiss is called when a request reaches a handle that was meant to be served by the kernel:
// passthrough did not take effect (go-fuse turns it off for the whole mount when registration fails).
func (h *handle) notePassthroughMiss() {
	fsys := h.file.fs
	if fsys.passthroughLogged.CompareAndSwap(false, true) {
		fsys.log.Warn("passthrough did not take effect; serving file data from the daemon")
	}
	fsys.passthrough.Store(false)
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.passthrough {
		h.notePassthroughMiss()
	}
	ext, ok, err := h.file.data.ReadExtent(off, len(dest))
	if err != nil {
		return nil, toErrno(h.file.fs.log, "read", err)
	}
	h.file.fs.atime.accessed(&h.file.attrs)
	if !ok {
		return fuse.ReadResultData(nil), 0
	}
	h.file.fs.activity.bytesRead.Add(int64(ext.Len))
	return &extentResult{ext: ext, log: h.file.fs.log}, 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.passthrough {
		h.notePassthroughMiss()
	}
	if h.templateDentry.Load() != nil {
		h.dropTemplateDentry(true)
	}
	// An append-only file only grows at its end. The kernel cannot refuse fcntl(F_SETFL) clearing O_APPEND
	// on a FUSE inode (it keeps no flags for it), so a write before the end is refused here.
	if h.file.attrs.hasFlag(flagAppend) && off < h.file.data.Size() {
		return 0, syscall.EPERM
	}
	// Under --owner-quota a write that would take the file's owner past its cap writes nothing (the spool
	// answers EDQUOT).
	n, err := h.file.data.WriteAt(data, off)
	if n > 0 {
		if h.file.attrs.wrote(ctx) {
			h.file.privDropped()
		}
		h.file.fs.counts.bytesWritten.Add(int64(n))
	}
	if err != nil {
		return uint32(n), toErrno(h.file.fs.log, "write", err)
	}
	return uint32(n), 0
}

// Flush answers ENOSYS: nothing needs it, and the kernel then stops sending FLUSH on every close(2), which
// saves a round trip per close (docs/kernel.md, Round trips).
func (h *handle) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }

// Fsync promises no durability (nothing outlives the mount) but hides no loss: for a file whose bytes are in
// the store it waits for their writeback and answers the store's error (EIO, ENOSPC) once to this handle, as a
// disk filesystem does to each open file. RAM files answer 0 at once. fsync and fdatasync are served alike.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.fsyncMu.Lock()
	defer h.fsyncMu.Unlock()
	return toErrno(h.file.fs.log, "fsync", h.file.data.Sync(&h.synced))
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	if h.passthrough && h.flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		h.file.data.Refresh() // disk_bytes catches up with what the kernel wrote by passthrough
	}
	h.dropTemplateDentry(false)
	h.file.release(h)
	return 0
}

func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := h.file.attrs.allocateDenied(mode); errno != 0 {
		return errno
	}
	if err := h.file.data.Allocate(int64(off), int64(size), mode); err != nil {
		return toErrno(h.file.fs.log, "fallocate", err)
	}
	h.file.attrs.touchModified()
	// fallocate drops the privilege bits as a write does (the VFS's file_modified).
	if h.file.attrs.killPrivForWrite(ctx) {
		h.file.privDropped()
	}
	return 0
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	pos, err := h.file.data.Seek(int64(off), int(whence))
	if err != nil {
		return 0, toErrno(h.file.fs.log, "lseek", err)
	}
	return uint64(pos), 0
}
