package spool

// Lock order: File.mu → arena.mu. arena.mu is a leaf: it guards the free lists only, and the only
// system calls made under it create or close a chunk's memfd. Hole punching and copies happen
// outside it, on slots that belong to exactly one File.

import (
	"fmt"
	"math/bits"
	"sync"

	"golang.org/x/sys/unix"
)

// The arena keeps small RAM files together in shared memfds, so that the number of files is bounded
// by memory, not by the daemon's descriptors (one memfd per file stopped a mount at RLIMIT_NOFILE),
// and so that a small file costs no memfd_create. Each size class (512 B, 1 KiB, 2 KiB, then every
// multiple of a page up to ArenaMaxFileSize, so that a slot wastes less than a page) has its own chunks: memfds of arenaChunkBytes, cut into equal slots. A file lives in the
// smallest slot that holds its size; growing past it moves it to a bigger slot, and past
// ArenaMaxFileSize to a memfd of its own. Its bytes past its size are always zeros (freed slots and
// shrunk tails are hole-punched), so growth inside a slot needs no work and reads never see another
// file's bytes. A file's data is read and written by offset within its slot, with the same pread,
// pwrite and splice as a memfd of its own.
const (
	arenaMinSlot = 512 // st_blocks counts 512-byte units: a slot is always a whole number of them
	// ArenaMinSlot is the least RAM a file with data takes: the smallest arena slot.
	ArenaMinSlot = arenaMinSlot
	// ArenaMaxFileSize is the largest file kept in the arena; a larger RAM file has a memfd of its own.
	ArenaMaxFileSize = 64 << 10
	arenaChunkBytes  = 16 << 20
	pageSize         = 4096
	arenaClasses     = 3 + ArenaMaxFileSize/pageSize // 512 B, 1 KiB, 2 KiB, 4 KiB, 8 KiB, 12 KiB, ... 64 KiB
)

// arena is a Pool's set of shared memfds for small files.
type arena struct {
	pool *Pool

	mu      sync.Mutex
	classes [arenaClasses]arenaClass
	chunks  int64 // live chunk memfds
}

type arenaClass struct {
	slotSize int64
	// open holds the chunks with a free slot; each chunk knows whether it is listed.
	open []*arenaChunk
}

// arenaChunk is one memfd of arenaChunkBytes, cut into slots of one size. inUse has a bit per slot, so
// that a page shared by several small slots is punched out once all of them are free.
type arenaChunk struct {
	fd     int
	id     uint64 // names the memfd when the pool is handed over (Pool.newDescriptorID)
	class  int
	free   []uint32 // freed slot indexes, reused first (their pages are warm in the page table)
	next   uint32   // slots from next on were never handed out
	used   int
	listed bool
	inUse  []uint64
}

// arenaSlot is where an arena file's bytes are: [off, off+size) of chunk.fd.
type arenaSlot struct {
	chunk *arenaChunk
	off   int64
	size  int64
}

func (a *arena) init(p *Pool) {
	a.pool = p
	for i := range a.classes {
		a.classes[i].slotSize = arenaClassSize(i)
	}
}

func arenaClassSize(class int) int64 {
	if class < 3 {
		return arenaMinSlot << class
	}
	return int64(class-2) * pageSize
}

// arenaClassFor is the class whose slots hold size bytes (1 <= size <= ArenaMaxFileSize).
func arenaClassFor(size int64) int {
	switch {
	case size <= arenaMinSlot:
		return 0
	case size <= pageSize/2:
		return bits.Len64(uint64(size-1)) - bits.Len64(arenaMinSlot-1)
	}
	return 2 + int((size+pageSize-1)/pageSize)
}

// arenaSlotSize is the slot size a file of size bytes takes in the arena.
func arenaSlotSize(size int64) int64 { return arenaClassSize(arenaClassFor(size)) }

// alloc hands out a zeroed slot that holds size bytes (1 <= size <= ArenaMaxFileSize). It fails only
// when a new chunk's memfd cannot be made (descriptors or memory exhausted).
func (a *arena) alloc(size int64) (*arenaSlot, error) {
	class := arenaClassFor(size)
	a.mu.Lock()
	defer a.mu.Unlock()
	c := &a.classes[class]
	if len(c.open) == 0 {
		chunk, err := a.newChunkLocked(class)
		if err != nil {
			return nil, err
		}
		chunk.listed = true
		c.open = append(c.open, chunk)
	}
	chunk := c.open[len(c.open)-1]
	var idx uint32
	if n := len(chunk.free); n > 0 {
		idx = chunk.free[n-1]
		chunk.free = chunk.free[:n-1]
	} else {
		idx = chunk.next
		chunk.next++
	}
	chunk.used++
	chunk.inUse[idx/64] |= 1 << (idx % 64)
	if chunk.full(c.slotSize) {
		chunk.listed = false
		c.open = c.open[:len(c.open)-1]
	}
	return &arenaSlot{chunk: chunk, off: int64(idx) * c.slotSize, size: c.slotSize}, nil
}

func (ch *arenaChunk) full(slotSize int64) bool {
	return len(ch.free) == 0 && int64(ch.next) >= arenaChunkBytes/slotSize
}

func (a *arena) newChunkLocked(class int) (*arenaChunk, error) {
	fd, err := unix.MemfdCreate("tempfs-arena", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, a.pool.descriptorError("memfd_create for the small-file arena", err)
	}
	if err := ftruncate(fd, arenaChunkBytes); err != nil {
		unix.Close(fd)
		return nil, mapIOError("sizing an arena memfd", err)
	}
	id := a.pool.newDescriptorID()
	if err := a.pool.descriptorMade(chunkDescName(id), fd, func() { unix.Close(fd) }); err != nil {
		return nil, err
	}
	slots := arenaChunkBytes / a.classes[class].slotSize
	a.chunks++
	return &arenaChunk{fd: fd, id: id, class: class, inUse: make([]uint64, (slots+63)/64)}, nil
}

// release gives a slot back. Its bytes are punched out first (whole pages are freed; the part of a page
// that other slots still use is zeroed), so the next owner starts from zeros. A chunk left empty is
// closed at once: an idle mount holds no memfd, and the daemon's descriptors come back to where they
// were (a new chunk costs a memfd_create and an ftruncate, a few microseconds against a FUSE round trip).
func (a *arena) release(s *arenaSlot) {
	if w := a.pool.watcher; w != nil {
		// The punch destroys the bytes a crash record may still place here: it waits until the record says
		// the file is elsewhere. The slot stays in use until then, so nothing else can have it.
		w.Later(func() { a.releaseNow(s) })
		return
	}
	a.releaseNow(s)
}

// releaseNow is release, at once.
func (a *arena) releaseNow(s *arenaSlot) {
	ch := s.chunk
	slotSize := s.size
	idx := uint32(s.off / slotSize)
	a.mu.Lock()
	ch.inUse[idx/64] &^= 1 << (idx % 64)
	punchOff, punchLen := s.off, slotSize
	if slotSize < pageSize {
		// The whole page goes only when every slot on it is free.
		perPage := uint32(pageSize / slotSize)
		first := idx / perPage * perPage
		allFree := true
		for i := first; i < first+perPage; i++ {
			if ch.inUse[i/64]&(1<<(i%64)) != 0 {
				allFree = false
				break
			}
		}
		if allFree {
			punchOff, punchLen = int64(first)*slotSize, pageSize
		}
	}
	// Punched under the lock: the slot (and, for a whole page, its free neighbours) must be zeros before
	// anyone can be handed them. A punch is a page-table operation, not I/O.
	if err := fallocate(ch.fd, allocPunchHole, punchOff, punchLen); err != nil {
		// The slot cannot be trusted to read as zeros: leave it out of the free list (a leak of slotSize
		// bytes of address space, not of data).
		a.mu.Unlock()
		a.pool.log.Warn("spool: punching a freed arena slot failed; the slot is not reused", "err", err)
		return
	}
	ch.free = append(ch.free, idx)
	ch.used--
	c := &a.classes[ch.class]
	if ch.used == 0 {
		if ch.listed {
			c.remove(ch)
		}
		a.chunks--
		a.mu.Unlock()
		if err := unix.Close(ch.fd); err != nil {
			a.pool.log.Warn("spool: closing an empty arena memfd failed", "err", err)
		}
		a.pool.descriptorClosed(chunkDescName(ch.id))
		return
	}
	if !ch.listed {
		ch.listed = true
		c.open = append(c.open, ch)
	}
	a.mu.Unlock()
}

func (c *arenaClass) remove(ch *arenaChunk) {
	for i, o := range c.open {
		if o == ch {
			c.open[i] = c.open[len(c.open)-1]
			c.open = c.open[:len(c.open)-1]
			ch.listed = false
			return
		}
	}
}

// chunkCount is the number of memfds the arena holds.
func (a *arena) chunkCount() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.chunks
}

// copyFromSlot copies the first size bytes of a slot to dst at dstOff, which must read as zeros there
// already, and returns the bytes written. In a slot of a page or more, only the pages that hold data are
// copied (SEEK_DATA in the shared memfd), so that holes stay holes and written zeros stay written, as a
// copy of a tmpfs file would; a smaller slot is copied whole.
func (p *Pool) copyFromSlot(s *arenaSlot, size int64, dst int, dstOff int64) (int64, error) {
	if s.size < pageSize {
		return size, p.copyBetween(s.chunk.fd, s.off, dst, dstOff, size)
	}
	var copied int64
	end := s.off + size
	for pos := s.off; pos < end; {
		d, err := unix.Seek(s.chunk.fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && d >= end) {
			break
		}
		if err != nil {
			return copied, err
		}
		h, err := unix.Seek(s.chunk.fd, d, unix.SEEK_HOLE)
		if err != nil {
			return copied, err
		}
		h = min(h, end)
		if err := p.copyBetween(s.chunk.fd, d, dst, dstOff+d-s.off, h-d); err != nil {
			return copied, err
		}
		copied += h - d
		pos = h
	}
	return copied, nil
}

// copyBetween copies n (<= copyBufferSize) bytes at srcOff of src to dstOff of dst.
func (p *Pool) copyBetween(src int, srcOff int64, dst int, dstOff, n int64) error {
	bufp := p.copyBuffer()
	defer p.copyBuffers.Put(bufp)
	b := (*bufp)[:n]
	got, err := preadFull(src, b, srcOff)
	if err != nil {
		return err
	}
	if int64(got) < n {
		return fmt.Errorf("arena slot read %d of %d bytes", got, n)
	}
	_, err = pwriteFull(dst, b, dstOff)
	return err
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
