package spool

// Lock order: see the package comment in pool.go. These placements are guarded by their File's mu,
// like the File's other fields.

import (
	"errors"

	"golang.org/x/sys/unix"
)

// ownFd is what the placements with a descriptor of their own share: the file's byte 0 is the fd's
// byte 0, and the fd's size is the file's. id names the fd when the pool is handed over
// (Pool.newDescriptorID).
type ownFd struct {
	fd int
	id uint64
}

func (o *ownFd) at() (int, int64)               { return o.fd, 0 }
func (o *ownFd) sizeNow(f *File) (int64, error) { return f.size, nil }

func (o *ownFd) readAt(_ *File, p []byte, off int64) (int, error) { return preadFull(o.fd, p, off) }

func (o *ownFd) writeAt(_ *File, p []byte, off int64) (int, error) { return pwriteFull(o.fd, p, off) }

func (o *ownFd) grow(size int64) error { return ftruncate(o.fd, size) }

func (o *ownFd) cut(size, _ int64) error { return ftruncate(o.fd, size) }

// cutBack cuts the fd back to oldSize: a partial write may have extended it.
func (o *ownFd) cutBack(oldSize int64) error { return ftruncate(o.fd, oldSize) }

func (o *ownFd) allocate(off, length int64, mode uint32) error {
	return fallocate(o.fd, mode, off, length)
}

// holeBytes is how many bytes of the pages of [off, off+n) the fd does not allocate yet: what an
// operation on that range can add. It asks the fd with SEEK_DATA/SEEK_HOLE, and errs on the high side.
func (o *ownFd) holeBytes(off, n int64) int64 {
	touched := pagesTouched(off, n)
	if touched == 0 {
		return touched
	}
	start := off &^ (pageSize - 1)
	end := start + touched
	var data int64
	for pos := start; pos < end; {
		d, err := unix.Seek(o.fd, pos, unix.SEEK_DATA)
		if err != nil || d >= end {
			break // ENXIO: no data after pos
		}
		h, err := unix.Seek(o.fd, d, unix.SEEK_HOLE)
		if err != nil {
			return touched
		}
		h = min(h, end)
		data += h - d
		pos = h
	}
	return max(touched-data, 0)
}

// seek asks the fd; its own offset is never used for I/O (only pread/pwrite), so moving it is harmless.
func (o *ownFd) seek(_ *File, off int64, whence int) (int64, error) {
	pos, err := unix.Seek(o.fd, off, whence)
	switch {
	case errors.Is(err, unix.ENXIO):
		return 0, errNoData
	case err != nil:
		return 0, mapIOError("seek", err)
	}
	return pos, nil
}

// blocks is the fd's st_blocks.
func (o *ownFd) blocks(f *File) int64 {
	var st unix.Stat_t
	if err := fstat(o.fd, &st); err != nil {
		f.pool.log.Warn("spool: fstat failed", "err", err)
		return 0
	}
	return st.Blocks
}

func (o *ownFd) stat(f *File) Stat {
	var st unix.Stat_t
	if err := fstat(o.fd, &st); err != nil {
		f.pool.log.Warn("spool: fstat failed", "err", err)
		return Stat{Size: f.size}
	}
	return Stat{Size: f.size, Blocks: st.Blocks}
}

// memfdFile is the placement of a RAM file past ArenaMaxFileSize: a memfd of its own. Files never move
// back into the arena.
type memfdFile struct{ ownFd }

func (m *memfdFile) where() Placement { return Memfd }

// allocated is the memfd's pages: tmpfs has no metadata blocks.
func (m *memfdFile) allocated(f *File) (int64, bool) {
	var st unix.Stat_t
	if err := fstat(m.fd, &st); err != nil {
		f.pool.log.Warn("spool: fstat failed; allocation not updated", "err", err)
		return 0, false
	}
	return st.Blocks * 512, true
}

// copyTo copies the file's first size bytes to dst (at offset 0, the only one a memfd is copied to),
// keeping holes, and returns the data bytes copied.
func (m *memfdFile) copyTo(f *File, size int64, dst int, _ int64) (int64, error) {
	return f.pool.copyDataRanges(m.fd, dst, size)
}

func (m *memfdFile) release(f *File) error {
	if err := unix.Close(m.fd); err != nil {
		f.pool.log.Warn("spool: closing a memfd failed", "err", err)
	}
	f.pool.descriptorClosed(memfdDescName(m.id))
	f.pool.noteOwnMemfds(-1)
	return nil
}
