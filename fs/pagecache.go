package fs

import (
	"syscall"

	"github.com/tempfs/tempfs/spool"
)

// Page-cache fill (issue 13; contract section 4: reading a RAM file is not slower than reading a spilled one).
//
// A write-only handle (a shell's >, tar x, a compiler's output) is a direct-I/O handle (bypassesPageCache): its
// writes reach the daemon, and the kernel drops the page cache of the range written, before the WRITE and
// again after it (kernel 6.18, fuse_direct_io). A spilled file is then read by passthrough at kernel speed,
// but a RAM file was read back through the daemon, with READ round trips. So when a read-only handle opens a
// RAM file that direct writes left out of the page cache, the daemon copies the file's bytes into the kernel's
// page cache (FUSE_NOTIFY_STORE) before it answers the OPEN, and answers it with FOPEN_KEEP_CACHE: that
// reader, and every later one, reads from the page cache and never asks the daemon. A store at every write
// instead would be undone by the kernel's own invalidation after the WRITE, and would cost a copy for the many
// files that are never read back (a tar x, a template cycle).
//
// Why the page cache then holds what the spool holds:
//   - A store is made only while no handle that can write is open (writers == 0), and a writable open waits
//     for a store in progress (the file's store lock, FS.storeLock). Without a writable handle there are no writes, no fallocate, no copy
//     into the file and no shared writable mapping; a mapping's dirty pages were written back when it was
//     unmapped (fuse_vma_close), before its handle's RELEASE. A truncate by path (SETATTR without a handle)
//     takes the store lock too. Rollover to disk and eviction under --memory move the bytes without changing them.
//   - Later direct writes drop the pages they cover (before and after the WRITE), and writes through the page
//     cache update it themselves: a store is never left behind newer bytes.
//   - A READ in flight holds its pages locked; a store waits for it and then writes the same bytes. The store
//     copies the bytes out of the spool first and holds no spool lock while the kernel stores them, so a READ
//     handler (which takes the spool's read lock) can always finish.
// The page cache is the kernel's reclaimable memory: it is not counted against --memory, and under memory
// pressure the kernel drops it; a page dropped is read from the daemon again.

// maxPageCacheFill bounds the bytes stored at one open, so that an open stays short whatever --max-size is;
// the rest of a bigger file is read through READ requests and cached by the kernel as it goes.
const maxPageCacheFill = 64 << 20

// fillChunk is the size of one store: the bytes are copied out of the spool through a buffer this big.
const fillChunk = 1 << 20

// fillBuffers are the buffers fills copy through, kept for the daemon's life: a fresh buffer's pages fault in
// at about 150 MiB/s here (kernel-notes.md), slower than the copy itself, and a sync.Pool drops its buffers
// at every garbage collection. Two, one per core of the machines measured; a third fill waits.
var fillBuffers = make(chan []byte, 2)

func init() {
	for range cap(fillBuffers) {
		fillBuffers <- make([]byte, fillChunk)
	}
}

// fillPageCache stores the file's bytes in the kernel's page cache. The caller holds the store lock, has counted a
// read-only cached handle, and has seen no writable handle open. It reports whether the whole file was stored.
func (f *File) fillPageCache() bool {
	fsys := f.fs
	if f.data.Tier() != spool.Memory {
		return false
	}
	size := f.data.Size()
	if size > maxPageCacheFill {
		return false
	}
	buf := <-fillBuffers
	defer func() { fillBuffers <- buf }()
	for off := int64(0); off < size; {
		n, err := f.data.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil {
			fsys.log.Debug("page cache fill: read", "err", err)
			return false
		}
		if n == 0 {
			break // truncated meanwhile: what is stored is all there is
		}
		switch errno := f.WriteCache(off, buf[:n]); errno {
		case 0:
		case syscall.ENOENT:
			return false // the kernel has no inode for it (the open failed meanwhile)
		default:
			// ENOSYS, EINVAL: the kernel or go-fuse cannot store; reads come from the daemon as before.
			if fsys.pageCacheFill.CompareAndSwap(true, false) {
				fsys.log.Warn("the kernel refused to fill its page cache (FUSE_NOTIFY_STORE); RAM files are read through the daemon", "errno", errno)
			}
			return false
		}
		fsys.activity.pageCacheBytes.Add(int64(n))
		off += int64(n)
	}
	fsys.activity.pageCacheFills.Add(1)
	return true
}
