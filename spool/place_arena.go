package spool

// Lock order: see the package comment in pool.go. An arenaFile is guarded by its File's mu, like the
// File's other fields, except where a comment says otherwise.

import (
	"errors"
	"math/bits"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// arenaFile is the placement of a small RAM file: a slot of an arena memfd shared with other small
// files. The slot's bytes past the file's size are zeros but not the file's; the memory cap counts
// the whole slot, which the file holds.
type arenaFile struct {
	slot *arenaSlot
	// fallocPages has a bit for each page of the slot that fallocate allocated (bit 0 alone for a
	// slot smaller than a page): a memfd shows such pages neither to SEEK_DATA nor to mincore, and
	// st_blocks must count them as tmpfs does.
	fallocPages uint16
	// pages is the pages of the slot that st_blocks counts (what pagesNow finds with SEEK_DATA/SEEK_HOLE
	// or a pread), or -1 while unknown. Every LOOKUP, GETATTR and READDIRPLUS entry asks for st_blocks,
	// and asking the memfd each time cost ~35 µs per entry: writes keep it current instead, and the
	// operations that change pages otherwise make it unknown, to be found once again. Changed with the
	// File's mu held for writing; a reader holding it for reading may fill it in.
	pages atomic.Int32
}

func (a *arenaFile) where() Placement               { return Arena }
func (a *arenaFile) at() (int, int64)               { return a.slot.chunk.fd, a.slot.off }
func (a *arenaFile) sizeNow(f *File) (int64, error) { return f.size, nil }

func (a *arenaFile) readAt(f *File, p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, nil
	}
	p = p[:min(int64(len(p)), f.size-off)]
	return preadFull(a.slot.chunk.fd, p, a.slot.off+off)
}

// writeAt keeps pages current: a write allocates the pages it touches; in a slot smaller than a page,
// whose page is shared, the file has a page once it holds a nonzero byte.
func (a *arenaFile) writeAt(f *File, p []byte, off int64) (int, error) {
	n, err := pwriteFull(a.slot.chunk.fd, p, a.slot.off+off)
	if err != nil || n == 0 {
		return n, err
	}
	p = p[:n]
	pages := a.pages.Load()
	switch {
	case pages < 0:
	case a.slot.size < pageSize:
		if pages == 0 && !allZero(p) {
			a.pages.Store(1)
		}
	default:
		a.pages.Store(pages | int32(pageBits(off/pageSize, roundUpPage(off+int64(len(p)))/pageSize)))
	}
	return n, nil
}

// grow has nothing to do: the slot reads as zeros past the size already.
func (a *arenaFile) grow(int64) error { return nil }

// cut punches a hole from size to the slot's end, so that the slot reads as zeros past the size again:
// pages fallocate allocated past the old size go too, as on tmpfs.
func (a *arenaFile) cut(size, _ int64) error {
	a.pages.Store(-1)
	if a.slot.size < pageSize {
		if size == 0 {
			a.fallocPages = 0
		}
	} else {
		a.fallocPages &^= pageBits((size+pageSize-1)/pageSize, a.slot.size/pageSize)
	}
	return fallocate(a.slot.chunk.fd, allocPunchHole, a.slot.off+size, a.slot.size-size)
}

// cutBack cuts whatever a partial write left past oldSize.
func (a *arenaFile) cutBack(oldSize int64) error {
	if a.slot.size > oldSize {
		return a.cut(oldSize, a.slot.size)
	}
	return nil
}

// allocate keeps fallocPages up to date: allocated pages are marked, pages a hole punch freed whole are
// not any more.
func (a *arenaFile) allocate(off, length int64, mode uint32) error {
	defer a.pages.Store(-1) // fallocate changes which pages count
	if err := fallocate(a.slot.chunk.fd, mode, a.slot.off+off, length); err != nil {
		return err
	}
	end := off + length
	switch {
	case a.slot.size < pageSize:
		if mode != allocPunchHole {
			a.fallocPages = 1
		}
	case mode == allocPunchHole:
		a.fallocPages &^= pageBits((off+pageSize-1)/pageSize, end/pageSize)
	default:
		a.fallocPages |= pageBits(off/pageSize, (end+pageSize-1)/pageSize)
	}
	return nil
}

// allocated is the slot, counted whole; false (nothing to change, and no pool lock) in the common case
// of a small file's write (accounted changes only under the File's mu).
func (a *arenaFile) allocated(f *File) (int64, bool) {
	return a.slot.size, f.accounted != a.slot.size
}

// holeBytes: the slot is allocated already, except for a move to a bigger place, which counts apart.
func (a *arenaFile) holeBytes(off, n int64) int64 { return pagesTouched(off, n) }

// seek asks the shared memfd at the slot's offset and clips the answer to the file (the end of the file
// is a hole, as everywhere). Pages shared with other small files count as data. f.mu may be held for
// reading.
func (a *arenaFile) seek(f *File, off int64, whence int) (int64, error) {
	if off >= f.size {
		return 0, errNoData
	}
	base := a.slot.off
	pos, err := unix.Seek(a.slot.chunk.fd, base+off, whence)
	switch {
	case errors.Is(err, unix.ENXIO):
		pos = base + f.size // no data after off in the whole memfd
	case err != nil:
		return 0, mapIOError("seek", err)
	}
	pos = min(pos-base, f.size)
	if whence == unix.SEEK_DATA && pos >= f.size {
		return 0, errNoData
	}
	return pos, nil
}

// blocks is what tmpfs would report as st_blocks for the file, so that du and ls -s read the same on
// tempfs as on tmpfs: the pages of its slot that hold data, or one page for a file with data in a slot
// smaller than a page. It costs no syscall while pages is known. f.mu may be held for reading.
func (a *arenaFile) blocks(f *File) int64 {
	const pageBlocks = pageSize / 512
	pages := a.pages.Load()
	if pages < 0 {
		pages = int32(a.pagesNow(f))
		a.pages.Store(pages)
	}
	return int64(bits.OnesCount16(uint16(pages))) * pageBlocks
}

func (a *arenaFile) stat(f *File) Stat { return Stat{Size: f.size, Blocks: a.blocks(f)} }

// pagesNow asks the memfd which pages of the slot blocks counts: bit 0 alone for a slot smaller than a
// page. f.mu may be held for reading.
func (a *arenaFile) pagesNow(f *File) uint16 {
	fd, base := a.at()
	if a.slot.size < pageSize {
		var buf [pageSize / 2]byte
		b := buf[:f.size]
		if n, err := preadFull(fd, b, base); err != nil || !allZero(b[:n]) || a.fallocPages != 0 {
			return 1
		}
		return 0
	}
	// Written pages are data to SEEK_DATA; pages that fallocate allocated are not (nor resident to
	// mincore), so fallocPages keeps them.
	pages := a.fallocPages
	end := base + roundUpPage(f.size)
	for pos := base; pos < end; {
		d, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err != nil || d >= end {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return pageBits(0, roundUpPage(f.size)/pageSize)
		}
		h = min(h, end)
		pages |= pageBits((d-base)/pageSize, (h-base+pageSize-1)/pageSize)
		pos = h
	}
	return pages
}

// refallocate allocates again, at dstOff of dst (a new place of the file, at most limit bytes), the
// pages fallocate allocated in the slot: a copy leaves them out as zeros.
func (a *arenaFile) refallocate(dst int, dstOff, limit int64) error {
	if a.slot.size < pageSize || a.fallocPages == 0 {
		return nil
	}
	for page := int64(0); page < 16; page++ {
		if a.fallocPages&(1<<page) == 0 || page*pageSize >= limit {
			continue
		}
		if err := fallocate(dst, allocKeepSize, dstOff+page*pageSize, min(pageSize, limit-page*pageSize)); err != nil {
			return err
		}
	}
	return nil
}

// copyTo copies the file's first size bytes to dst at dstOff, keeping holes, and returns the data bytes
// copied.
func (a *arenaFile) copyTo(f *File, size int64, dst int, dstOff int64) (int64, error) {
	return f.pool.copyFromSlot(a.slot, size, dst, dstOff)
}

// release gives the slot back, leaving the file's share of the RAM counter as it is.
func (a *arenaFile) release(f *File) error {
	f.pool.arena.release(a.slot)
	f.pool.noteArenaFiles(-1)
	return nil
}
