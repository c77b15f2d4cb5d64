package spool

// Lock order: see the package comment in pool.go (File.mu → Pool.mu, arena.mu, Store.mu; other Files
// only by TryLock).
// Methods whose names end in "Locked" need f.mu held for writing unless their comment says otherwise.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"
)

// File is one regular file's bytes. All methods are safe for concurrent use: reads share f.mu,
// everything that changes data, size or tier holds it exclusively, so a rollover is atomic with
// respect to every other call on the File.
type File struct {
	pool *Pool
	// tag is the caller's, set once before the File is shared (fs keeps its node there, for a Watcher).
	tag any

	mu sync.RWMutex
	// Guarded by mu.
	// place is where the bytes live, with what depends on it; noBytes while a RAM file is empty.
	place placement
	// size is the logical size; not used by a passthroughFile (fstat is then the truth). An arena
	// file's fd says nothing of its size.
	size   int64
	tier   Tier // place.where().Tier() outside a move, written under mu and pool.mu both, so either lock suffices to read it
	closed bool

	// syncMu guards the writeback errors Sync collected (a leaf, taken with f.mu held for reading): syncSeq
	// counts them, syncErr is the last.
	syncMu  sync.Mutex
	syncSeq WritebackMark
	syncErr error

	// Guarded by pool.mu.
	accounted int64 // this file's share of pool.ramBytes or pool.diskBytes, by tier: allocated bytes
	heapIndex int   // position in pool.ramFiles, -1 when absent
	// account is charged accounted too; nil for none. Changed under mu and pool.mu both (File.ChargeTo).
	account *Account
}

// ReadAt reads like pread(2): a short count at end of file and 0, nil past it (never io.EOF,
// since the FUSE layer answers with plain counts). Holes read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case f.closed:
		return 0, ErrClosed
	case off < 0:
		return 0, fmt.Errorf("spool: read at negative offset %d: %w", off, errInvalid)
	case len(p) == 0 || off >= MaxFileSize:
		return 0, nil
	}
	if int64(len(p)) > MaxFileSize-off {
		p = p[:MaxFileSize-off]
	}
	n, err := f.place.readAt(f, p, off)
	if err != nil {
		return n, mapIOError("read", err)
	}
	return n, nil
}

// Extent is a range of a File's bytes that the caller hands to the kernel by splice(2) from Fd, so that they
// reach their reader without a copy through the daemon's memory (and without touching fresh heap pages, which
// fault in slowly). The File cannot change while an Extent is held: it keeps the File's read lock, so writes,
// truncates, rollovers and Close wait until Release, which must be called exactly once.
type Extent struct {
	Fd  int
	Off int64
	Len int // bytes available at Off: at most the length asked for, fewer at the end of the file
	f   *File
}

// ReadInto copies the Extent's bytes into p (at least Len long) with pread: the fallback where they cannot be
// spliced. It returns the count read, short only if the file ends sooner.
func (e Extent) ReadInto(p []byte) (int, error) {
	n, err := preadFull(e.Fd, p[:e.Len], e.Off)
	if err != nil {
		return n, mapIOError("read", err)
	}
	return n, nil
}

// Release ends the Extent.
func (e Extent) Release() {
	if e.f != nil {
		e.f.mu.RUnlock()
	}
}

// ReadExtent is ReadAt for splicing: the bytes at [off, off+n) that exist, in place. ok is false, with no
// lock held, when there is nothing to hand over: an empty range, a RAM file that was never written, or
// an offset at or past the end.
func (f *File) ReadExtent(off int64, n int) (e Extent, ok bool, err error) {
	f.mu.RLock()
	switch {
	case f.closed:
		f.mu.RUnlock()
		return Extent{}, false, ErrClosed
	case off < 0:
		f.mu.RUnlock()
		return Extent{}, false, fmt.Errorf("spool: read at negative offset %d: %w", off, errInvalid)
	}
	size, err := f.currentSizeLocked()
	fd, base := f.place.at()
	if err != nil || n <= 0 || fd < 0 || off >= size {
		f.mu.RUnlock()
		return Extent{}, false, err
	}
	if avail := size - off; int64(n) > avail {
		n = int(avail)
	}
	return Extent{Fd: fd, Off: base + off, Len: n, f: f}, true, nil
}

// WriteAt writes like pwrite(2), extending the file if needed and leaving any gap before off as a
// hole. A write that takes the file past MaxSize, or that the memory budget cannot hold, moves the
// file to disk first. On failure the file keeps its old size; the count returned is the number of
// bytes that stay written (only ever inside the old size).
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return 0, ErrClosed
	case off < 0:
		return 0, fmt.Errorf("spool: write at negative offset %d: %w", off, errInvalid)
	case len(p) == 0:
		return 0, nil
	case int64(len(p)) > MaxFileSize || off > MaxFileSize-int64(len(p)):
		return 0, fmt.Errorf("spool: write of %d bytes at %d: %w", len(p), off, ErrTooLarge)
	}
	oldSize, err := f.currentSizeLocked()
	if err != nil {
		return 0, err
	}
	newSize := max(oldSize, off+int64(len(p)))
	f.beginDiskChangeLocked(off, int64(len(p)), oldSize, newSize)
	if err := f.prepareLocked(oldSize, newSize, off, int64(len(p)), "write"); err != nil {
		return 0, err
	}
	n, err := f.place.writeAt(f, p, off)
	if err != nil {
		f.undoGrowthLocked(oldSize)
		return int(min(int64(n), max(0, oldSize-off))), mapIOError("write", err)
	}
	f.commitSizeLocked(newSize)
	return n, nil
}

// Truncate sets the size like ftruncate(2). Growing past MaxSize, or past what the memory budget
// holds, moves the file to disk first; shrinking never moves it back. A Memory file truncated to 0
// gives its memfd back, so idle empty files hold no descriptor.
func (f *File) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return ErrClosed
	case size < 0:
		return fmt.Errorf("spool: truncate to %d: %w", size, errInvalid)
	case size > MaxFileSize:
		return fmt.Errorf("spool: truncate to %d: %w", size, ErrTooLarge)
	}
	oldSize, err := f.currentSizeLocked()
	if err != nil {
		return err
	}
	f.beginDiskChangeLocked(0, 0, oldSize, size)
	switch {
	case size > oldSize:
		// Growth allocates nothing (the new range is a hole), but it may move the file. A file grown past
		// what its account has room for could never be written full: that truncate fails like a write.
		if err := f.pool.sizeFitsAccount(f, size); err != nil {
			return err
		}
		if err := f.prepareLocked(oldSize, size, 0, 0, "truncate"); err != nil {
			return err
		}
		if err := f.place.grow(size); err != nil {
			f.undoGrowthLocked(oldSize)
			return mapIOError("truncate", err)
		}
	case size < oldSize:
		if err := f.place.cut(size, oldSize); err != nil {
			f.refreshAllocationLocked()
			return mapIOError("truncate", err)
		}
		if f.tier == Memory && size == 0 {
			f.dropDataLocked()
		}
	}
	f.commitSizeLocked(size)
	return nil
}

// The fallocate(2) modes Allocate serves: the ones a memfd supports too, so that a file behaves
// the same in both tiers.
const (
	allocKeepSize  = unix.FALLOC_FL_KEEP_SIZE
	allocPunchHole = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
)

// Allocate is fallocate(2) for mode 0 (allocate, extending the size), FALLOC_FL_KEEP_SIZE and
// FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE; other modes answer EOPNOTSUPP. Growth by mode 0 obeys
// MaxSize and both caps like a write. With KEEP_SIZE only the part inside the current size is
// allocated: blocks past the end are invisible to the size accounting that the caps rest on, so
// honouring them would let a client fill RAM or disk past the caps; the size and the data a
// reader sees are the same either way.
func (f *File) Allocate(off, length int64, mode uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return ErrClosed
	case mode != 0 && mode != allocKeepSize && mode != allocPunchHole:
		return fmt.Errorf("spool: fallocate mode %#x: %w", mode, errUnsupported)
	case off < 0 || length <= 0:
		return fmt.Errorf("spool: fallocate offset %d length %d: %w", off, length, errInvalid)
	case length > MaxFileSize || off > MaxFileSize-length:
		return fmt.Errorf("spool: fallocate offset %d length %d: %w", off, length, ErrTooLarge)
	}
	oldSize, err := f.currentSizeLocked()
	if err != nil {
		return err
	}
	end := off + length
	if mode != 0 { // keep size, or punch a hole: nothing past the end matters
		end = min(end, oldSize)
		if off >= end { // an empty RAM file, which has no place, ends here too
			return nil
		}
		f.beginDiskChangeLocked(off, end-off, oldSize, oldSize)
		if mode == allocKeepSize {
			// Allocating inside the size fills holes: it counts against the caps like a write.
			if err := f.prepareLocked(oldSize, oldSize, off, end-off, "fallocate"); err != nil {
				return err
			}
		}
		if err := f.place.allocate(off, end-off, mode); err != nil {
			f.refreshAllocationLocked()
			return mapIOError("fallocate", err)
		}
		f.commitSizeLocked(oldSize)
		return nil
	}
	newSize := max(oldSize, end)
	f.beginDiskChangeLocked(off, length, oldSize, newSize)
	if err := f.prepareLocked(oldSize, newSize, off, length, "fallocate"); err != nil {
		return err
	}
	if err := f.place.allocate(off, length, 0); err != nil {
		f.undoGrowthLocked(oldSize)
		return mapIOError("fallocate", err)
	}
	f.commitSizeLocked(newSize)
	return nil
}

// pageBits has the bits of pages [first, last) set.
func pageBits(first, last int64) uint16 {
	if last <= first {
		return 0
	}
	return uint16((uint32(1)<<last - 1) &^ (uint32(1)<<first - 1))
}

// Seek answers lseek(2) with SEEK_DATA or SEEK_HOLE (other whence values are EINVAL): the
// offset of the next data or hole at or after off, or an error wrapping ENXIO when off is
// negative or at or past the end, or when no data follows, as the kernel does. The answer has
// the backing filesystem's granularity (a page in RAM, a block on disk).
func (f *File) Seek(off int64, whence int) (int64, error) {
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, fmt.Errorf("spool: seek whence %d: %w", whence, errInvalid)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, errNoData
	}
	return f.place.seek(f, off, whence)
}

// Size is the logical size. After NoteExternalWrite it comes from fstat, and the pool's DiskBytes
// catches up with it here.
func (f *File) Size() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0
	}
	size, err := f.currentSizeLocked()
	if err != nil {
		f.pool.log.Warn("spool: fstat of a passthrough file failed", "err", err)
		return f.size
	}
	return size
}

// Blocks is the number of 512-byte blocks the backing fd has allocated, as stat(2)'s st_blocks;
// 0 for an empty RAM file, which has no fd, and for a closed file.
func (f *File) Blocks() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0
	}
	return f.place.blocks(f)
}

// Stat is what stat(2) needs of a File, read with at most one fstat.
type Stat struct {
	Size   int64
	Blocks int64 // 512-byte blocks allocated
	// ModTime is the backing file's modification time in nanoseconds, set only when the kernel may write
	// the file directly (External): the daemon does not see those writes, so only the backing file knows.
	ModTime  int64
	External bool
}

// Stat returns size, allocated blocks and, for a file written by passthrough, the backing file's mtime.
func (f *File) Stat() Stat {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return Stat{Size: f.size}
	}
	return f.place.stat(f)
}

// Refresh brings the pool's counters up to date with what a passthrough file's backing file allocates
// now (the kernel wrote it without the daemon). It does nothing for other files, which are always
// up to date.
func (f *File) Refresh() {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.closed {
		if _, err := f.currentSizeLocked(); err != nil {
			f.pool.log.Warn("spool: fstat of a passthrough file failed", "err", err)
		}
	}
}

// Tier says where the bytes are now.
func (f *File) Tier() Tier {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.tier
}

// Rollover moves the file to disk now, as SpooledTemporaryFile.rollover(); it is a no-op on a
// file already there. If the disk cap or the store refuses, the file stays in RAM unchanged.
func (f *File) Rollover() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return ErrClosed
	case f.tier == Disk:
		return nil
	}
	if err := f.rolloverLocked(f.ramDataBoundLocked(), "explicit", false); err != nil {
		return err
	}
	f.refreshAllocationLocked()
	return nil
}

// WritebackMark is what one open file description of a File has been told of its writeback errors: pass the
// same mark to every Sync of that description, starting from the File's SyncMark at its open.
type WritebackMark uint64

// SyncMark is the mark of a description opened now: errors reported before it are not its own.
func (f *File) SyncMark() WritebackMark {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	return f.syncSeq
}

// Sync waits until a disk file's bytes are written back to the store and returns the store's writeback error
// (EIO, ErrNoSpace) once to each mark that has not been told of it, as the kernel's fsync does for each open
// file of a disk filesystem; a RAM file has nothing to write back and makes no syscall. It does not ask the
// store for durability (no journal commit, no cache flush of the device): nothing outlives the mount, but a
// loss must never be hidden. The kernel tells the backing fd of an error once: the File keeps it for the
// other marks.
func (f *File) Sync(mark *WritebackMark) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case f.closed:
		return ErrClosed
	case f.tier == Memory:
		return nil
	}
	fd, _ := f.place.at()
	err := syncRange(fd)
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	if err != nil {
		f.syncSeq++
		f.syncErr = mapIOError("writeback", err)
		f.pool.log.Error("spool: the store failed to write a file back; fsync answers the error", "err", err)
	}
	if *mark == f.syncSeq {
		return nil
	}
	*mark = f.syncSeq
	return f.syncErr
}

// PassthroughFd returns the disk backing fd when the file is on disk, for the FUSE layer to
// register with the kernel; (-1, false) otherwise. The fd stays owned by the File: it is valid
// until Close, and the caller must not close it. A RAM file is never handed out, because its
// writes must pass through the daemon to keep MaxSize and the memory budget exact.
func (f *File) PassthroughFd() (fd int, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed || f.tier != Disk {
		return -1, false
	}
	fd, _ = f.place.at()
	return fd, true
}

// NoteExternalWrite tells the File that the kernel may now write its backing fd directly
// (passthrough), so its cached size can no longer be trusted: from now on Size and every
// size-dependent operation use fstat, and the pool's DiskBytes is brought up to date lazily
// (whenever the daemon looks at the size). It is a no-op on a RAM file, which is never handed out.
func (f *File) NoteExternalWrite() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.place.(*diskFile); ok && !f.closed {
		f.place = &passthroughFile{d.ownFd}
		f.pool.noteExternal(f, true)
	}
}

// Close frees the file's RAM or disk space, its account's charge and its descriptor. Calls after the first return
// ErrClosed and change nothing, as do all other methods.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	f.closed = true
	var err error
	if f.tier == Memory {
		f.dropDataLocked()
	} else {
		err = f.place.release(f)
		f.place = noBytes
	}
	p := f.pool
	p.mu.Lock()
	p.setAccounted(f, 0)
	f.account = nil // its charge went with its bytes
	p.files--
	if f.tier == Memory {
		p.memoryFiles--
	} else {
		p.diskFiles--
	}
	p.mu.Unlock()
	return err
}

// currentSizeLocked is the logical size. f.mu may be held for reading only: for a passthrough file it
// fstats and refreshes the pool's DiskBytes, which pool.mu guards.
func (f *File) currentSizeLocked() (int64, error) { return f.place.sizeNow(f) }

// pagesTouched is the bytes of the whole pages that [off, off+n) touches: the most that writing or
// allocating that range can add to a file's allocation.
func pagesTouched(off, n int64) int64 {
	if n <= 0 {
		return 0
	}
	start := off &^ (pageSize - 1)
	end := (off + n + pageSize - 1) &^ (pageSize - 1)
	return end - start
}

func roundUpPage(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// prepareLocked readies the file for an operation that takes it from oldSize to newSize (>= oldSize) and
// may allocate the pages of [off, off+n): it moves the file to disk if MaxSize or the memory budget
// requires it, gives it a place big enough (a bigger arena slot, or a memfd of its own past
// ArenaMaxFileSize), and reserves the allocation the operation can reach in its tier's counter
// (checking the disk cap). Nothing changes if it fails. The caller then does the I/O and calls
// commitSizeLocked on success or undoGrowthLocked on failure, which set the reservation to the real allocation.
func (f *File) prepareLocked(oldSize, newSize, off, n int64, op string) error {
	p := f.pool
	touched := pagesTouched(off, n)
	if f.tier == Disk {
		// The pages touched are an upper bound, exact for appends; near the cap or the quota, the holes
		// among them are counted instead, so that overwriting data in place never fails for lack of space.
		err := p.reserveDisk(f, f.accounted+touched)
		if err != nil {
			err = p.reserveDisk(f, f.accounted+f.place.holeBytes(off, n))
		}
		if err != nil {
			if d, ok := f.place.(*diskFile); ok {
				d.change = diskChange{} // nothing changed
			}
			return fmt.Errorf("spool: %s to size %d: %w", op, newSize, err)
		}
		return nil
	}
	if p.cfg.MaxSize > 0 && newSize > p.cfg.MaxSize {
		return f.rolloverLocked(f.ramDataBoundLocked()+f.place.holeBytes(off, n), "max-size", true)
	}
	var need int64
	switch place := f.place.(type) {
	case *arenaFile:
		if newSize <= place.slot.size {
			return nil // the slot holds it and is counted already
		}
		if newSize <= ArenaMaxFileSize {
			need = arenaSlotSize(newSize) // a bigger slot
		} else {
			need = roundUpPage(oldSize) + touched // out of the arena into a memfd of its own
		}
	case *memfdFile:
		need = f.accounted + touched // files never move back into the arena
		if !p.roomFor(f, need) {
			need = f.accounted + place.holeBytes(off, n)
		}
	default: // empty
		if newSize <= ArenaMaxFileSize {
			need = arenaSlotSize(newSize) // into the arena
		} else {
			need = roundUpPage(oldSize) + touched // a memfd of its own
		}
	}
	if need <= p.memoryCap.Load() {
		switch err := f.reserveRAMLocked(need); err {
		case nil:
			if err := f.placeLocked(oldSize, newSize); err != nil {
				f.refreshAllocationLocked() // gives the reservation back
				return err
			}
			return nil
		case errRAMFull: // the file moves to disk instead
		default:
			return fmt.Errorf("spool: %s to size %d: %w", op, newSize, err)
		}
	}
	return f.rolloverLocked(f.ramDataBoundLocked()+f.place.holeBytes(off, n), "memory-cap", true)
}

// placeLocked gives a RAM file a place that holds newSize bytes, keeping its first oldSize bytes: a slot
// of the arena up to ArenaMaxFileSize, else a memfd of its own.
func (f *File) placeLocked(oldSize, newSize int64) error {
	p := f.pool
	old, inArena := f.place.(*arenaFile)
	switch {
	case inArena && newSize <= old.slot.size:
		return nil
	case f.place.where() == Memfd:
		return nil
	case newSize <= ArenaMaxFileSize:
		s, err := p.arena.alloc(newSize)
		if err != nil {
			return err
		}
		a := &arenaFile{slot: s}
		if inArena {
			if _, err := old.copyTo(f, oldSize, s.chunk.fd, s.off); err == nil {
				err = old.refallocate(s.chunk.fd, s.off, s.size)
			}
			if err != nil {
				p.arena.release(s)
				return mapIOError("moving a file to a bigger arena slot", err)
			}
			p.arena.release(old.slot)
			a.fallocPages = old.fallocPages
			a.pages.Store(-1) // the copy's pages, found at the next stat
		} else {
			p.noteArenaFiles(1)
			a.pages.Store(0) // a free slot is a hole: released slots are punched
		}
		f.place = a
		return nil
	}
	fd, err := unix.MemfdCreate("tempfs", unix.MFD_CLOEXEC)
	if err != nil {
		return p.descriptorError("memfd_create", err)
	}
	id := p.newDescriptorID()
	if err := p.descriptorMade(memfdDescName(id), fd, func() { unix.Close(fd) }); err != nil {
		return err
	}
	if inArena {
		err := ftruncate(fd, oldSize)
		if err == nil {
			_, err = old.copyTo(f, oldSize, fd, 0)
		}
		if err == nil {
			err = old.refallocate(fd, 0, oldSize)
		}
		if err != nil {
			unix.Close(fd)
			p.descriptorClosed(memfdDescName(id))
			return mapIOError("moving a file out of the arena", err)
		}
		// Not dropDataLocked: that also gives back the file's share of the RAM counter, which prepareLocked has just
		// reserved for the new memfd. Given back, other files could take it before this write is counted.
		old.release(f)
	}
	f.place = &memfdFile{ownFd{fd: fd, id: id}}
	p.noteOwnMemfds(1)
	return nil
}

// ramDataBoundLocked is at most how many bytes a rollover of this RAM file writes to disk.
func (f *File) ramDataBoundLocked() int64 {
	if _, inArena := f.place.(*arenaFile); inArena {
		return roundUpPage(f.size)
	}
	return f.accounted
}

// refreshAllocationLocked sets the file's share of its tier's counter to what it really allocates (holes are
// free): its arena slot, its own memfd's st_blocks × 512, or its backing file's data blocks
// (Pool.diskAllocation). f.mu may be held for reading only for a passthrough file.
func (f *File) refreshAllocationLocked() {
	if allocated, ok := f.place.allocated(f); ok {
		f.pool.account(f, allocated)
	}
}

// beginDiskChangeLocked tells a disk file, before an operation that may change the data blocks of
// [off, off+n) and the size from oldSize to newSize, to record what it has there now, so that
// refreshAllocationLocked measures only that range again (diskFile.beginChange). Nothing is recorded for a
// RAM file (a rollover during the operation measures the whole new backing file) or a passthrough file
// (counted by st_blocks).
func (f *File) beginDiskChangeLocked(off, n, oldSize, newSize int64) {
	if d, ok := f.place.(*diskFile); ok {
		d.beginChange(f, off, n, oldSize, newSize)
	}
}

// errRAMFull is reserveRAMLocked's answer when it cannot make room in the memory budget.
var errRAMFull = errors.New("spool: no room in the memory budget")

// reserveRAMLocked grows the file's share of the memory budget (and its account's charge) to size, first
// moving other RAM files to disk, largest first, while the budget is short. It answers ErrOverQuota when
// the file's account has no room, and errRAMFull when it cannot make room in the budget (no other RAM file
// could be locked without waiting, or the disk refused one); the caller then moves this file to disk
// instead. Victims are locked with TryLock while f.mu is held, which is why this cannot deadlock against a
// writer of a victim doing the same with f.
func (f *File) reserveRAMLocked(size int64) error {
	p := f.pool
	for {
		p.mu.Lock()
		if err := p.accountRoomLocked(f, size); err != nil {
			p.mu.Unlock()
			return err
		}
		if size-f.accounted <= p.memoryCap.Load()-p.ramBytes {
			p.setAccounted(f, size)
			p.mu.Unlock()
			return nil
		}
		victim := p.lockLargestVictim(f)
		p.mu.Unlock()
		if victim == nil {
			return errRAMFull
		}
		err := victim.rolloverLocked(victim.ramDataBoundLocked(), "memory budget (largest other RAM file)", false)
		if err == nil {
			victim.refreshAllocationLocked()
		}
		victim.mu.Unlock()
		if err != nil {
			// A full disk is an expected state under --disk; anything else deserves a look.
			level := slog.LevelWarn
			if errors.Is(err, ErrNoSpace) {
				level = slog.LevelDebug
			}
			p.log.Log(context.Background(), level, "spool: could not move a file to disk to make room in RAM", "err", err)
			return errRAMFull
		}
	}
}

// rolloverLocked moves a Memory file to a new backing file in the store, keeping holes, and reserves
// reserve (>= its size) bytes of disk for it. Under the disk cap and on store errors it fails
// with the file still in RAM, unchanged. ownGrowth says that the rollover is part of an operation on the
// file that grows it: then what the reservation adds to the file's allocation must fit its account too
// (else ErrOverQuota); a file moved for other reasons keeps its charge, whatever the move costs.
func (f *File) rolloverLocked(reserve int64, reason string, ownGrowth bool) error {
	p := f.pool
	p.mu.Lock()
	if ownGrowth {
		if err := p.accountRoomLocked(f, reserve); err != nil {
			p.mu.Unlock()
			return fmt.Errorf("spool: rollover of %d bytes: %w", reserve, err)
		}
	}
	if p.cfg.DiskCap > 0 && reserve > p.cfg.DiskCap-p.diskBytes {
		p.mu.Unlock()
		return fmt.Errorf("spool: rollover of %d bytes: disk cap %d reached: %w", reserve, p.cfg.DiskCap, ErrNoSpace)
	}
	// Held for this file while copying, so concurrent rollovers cannot overbook the disk, nor other files
	// of the file's account take the room its growth needs.
	p.diskBytes += reserve
	var held int64
	if ownGrowth && f.account != nil {
		held = max(0, reserve-f.accounted)
		f.account.used += held
	}
	p.mu.Unlock()

	backing, backingID, copied, err := f.copyToBackingLocked()
	if err != nil {
		p.mu.Lock()
		p.diskBytes -= reserve
		if held > 0 {
			f.account.used -= held
		}
		p.mu.Unlock()
		return mapIOError("rollover", err)
	}

	// The arena slot or memfd goes, and the file leaves the RAM counter and the heap for the disk counter,
	// all under one hold of p.mu, so that its account never shows the room it has only for the move.
	f.place.release(f)
	f.place = noBytes
	p.mu.Lock()
	p.setAccounted(f, 0)
	f.tier = Disk
	p.diskBytes -= reserve // the reservation becomes the file's own share
	if held > 0 {
		f.account.used -= held
	}
	p.setAccounted(f, reserve)
	p.memoryFiles--
	p.diskFiles++
	p.rollovers++
	p.spilledBytes += copied
	p.diskWrittenBytes += copied
	p.mu.Unlock()

	f.place = &diskFile{ownFd: ownFd{fd: backing, id: backingID}}
	p.moved(f)
	p.log.Debug("spool: rolled over to disk", "reason", reason, "size", f.size, "copied", copied)
	return nil
}

// copyToBackingLocked makes a backing file of the same size with the same data ranges as f's place in RAM,
// and returns it with the number of data bytes copied.
func (f *File) copyToBackingLocked() (backing int, id uint64, copied int64, err error) {
	backing, err = f.pool.cfg.Store.createBackingFd()
	if err != nil {
		return -1, 0, 0, f.pool.descriptorError("creating a backing file in the store", err)
	}
	id = f.pool.newDescriptorID()
	if err := f.pool.descriptorMade(diskDescName(id), backing, func() { unix.Close(backing) }); err != nil {
		return -1, 0, 0, err
	}
	if f.size > 0 {
		err = ftruncate(backing, f.size)
		if err == nil {
			copied, err = f.place.(ramPlacement).copyTo(f, f.size, backing, 0)
		}
		if err != nil {
			unix.Close(backing)
			f.pool.descriptorClosed(diskDescName(id))
			return -1, 0, 0, err
		}
	}
	return backing, id, copied, nil
}

// undoGrowthLocked puts the size back after prepareLocked succeeded but the I/O failed: the file is cut back
// to oldSize (a partial write may have extended it) and its reservation shrinks to what it allocates.
func (f *File) undoGrowthLocked(oldSize int64) {
	if err := f.place.cutBack(oldSize); err != nil {
		f.pool.log.Warn("spool: cutting back after a failed write failed", "size", oldSize, "err", err)
	}
	if f.tier == Memory && oldSize == 0 {
		f.dropDataLocked()
	}
	f.refreshAllocationLocked()
}

// commitSizeLocked records the size after a successful operation and sets the file's share of its tier's
// counter from the reservation prepareLocked made to what the file really allocates now.
func (f *File) commitSizeLocked(size int64) {
	if _, live := f.place.(*passthroughFile); !live { // its size is the backing file's
		f.size = size
	}
	f.refreshAllocationLocked()
}

// dropDataLocked gives back a RAM file's arena slot or memfd, and its share of the RAM counter.
func (f *File) dropDataLocked() {
	f.place.release(f)
	f.place = noBytes
	f.pool.account(f, 0)
}
