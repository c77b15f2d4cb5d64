package spool

// Lock order: see the package comment in pool.go. A File's placement is guarded by the File's mu, like
// its other fields.

import (
	"errors"
	"fmt"
)

// Placement is where a File's bytes live now: the one question the FUSE layer asks of a File's
// storage, so that it needs to know nothing of tiers, arenas or memfds.
type Placement int

const (
	// Empty: an empty RAM file, which holds no descriptor.
	Empty Placement = iota
	// Arena: a slot of an arena memfd shared with other small files.
	Arena
	// Memfd: a memfd of the file's own (past ArenaMaxFileSize; files never move back into the arena).
	Memfd
	// DiskFile: an unlinked backing file in the Store, written only by the daemon.
	DiskFile
	// DiskPassthrough: an unlinked backing file that the kernel may write directly (passthrough).
	DiskPassthrough
)

// Tier is the counter the placement is charged to: Memory for Empty, Arena and Memfd.
func (p Placement) Tier() Tier {
	if p >= DiskFile {
		return Disk
	}
	return Memory
}

// OnDisk says whether the bytes are in the Store, where the kernel may be handed the backing fd.
func (p Placement) OnDisk() bool { return p.Tier() == Disk }

func (p Placement) String() string {
	switch p {
	case Empty:
		return "empty"
	case Arena:
		return "arena"
	case Memfd:
		return "memfd"
	case DiskFile:
		return "disk"
	case DiskPassthrough:
		return "disk (passthrough)"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// Where says where the bytes are now.
func (f *File) Where() Placement {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.place.where()
}

// placement is where a File's bytes live, with what depends on it: one type per placement (emptyFile,
// arenaFile, memfdFile, diskFile, passthroughFile). The File keeps the size, the lock, its share of the
// caps and the moves from one placement to another. Methods are called with f.mu held for writing,
// except readAt, sizeNow, seek, blocks and stat, which need it for reading only.
type placement interface {
	where() Placement
	// at is the descriptor holding the bytes and where the file's byte 0 is in it; -1 for none.
	at() (fd int, base int64)
	// sizeNow is the logical size: f.size, except for a file the kernel writes directly.
	sizeNow(f *File) (int64, error)
	// readAt reads at off like pread, at most to the size (p is not longer than MaxFileSize-off).
	readAt(f *File, p []byte, off int64) (int, error)
	// writeAt writes at off like pwrite; the place holds off+len(p) already.
	writeAt(f *File, p []byte, off int64) (int, error)
	// grow makes the place read as zeros up to size (> the old size), which it holds already.
	grow(size int64) error
	// cut drops the bytes from size to oldSize.
	cut(size, oldSize int64) error
	// cutBack undoes whatever a failed write or fallocate left past oldSize.
	cutBack(oldSize int64) error
	// allocate is fallocate(2) of [off, off+length) with the modes File.Allocate serves.
	allocate(off, length int64, mode uint32) error
	// allocated is what the caps count for the file now, or false to leave its share as it is.
	allocated(f *File) (int64, bool)
	// holeBytes is at most how many bytes writing [off, off+n) can add to the allocation.
	holeBytes(off, n int64) int64
	// seek answers SEEK_DATA or SEEK_HOLE at off >= 0 like lseek(2), with errNoData for ENXIO.
	seek(f *File, off int64, whence int) (int64, error)
	// blocks is st_blocks, and stat is what File.Stat answers.
	blocks(f *File) int64
	stat(f *File) Stat
	// release gives back the descriptor or slot, and nothing of the caps.
	release(f *File) error
}

// ramPlacement is a placement in RAM that a rollover can copy to disk.
type ramPlacement interface {
	placement
	// copyTo copies the file's first size bytes to dst at dstOff, keeping holes, and returns the data
	// bytes copied.
	copyTo(f *File, size int64, dst int, dstOff int64) (int64, error)
}

// emptyFile is the placement of a RAM file that holds no bytes and no descriptor, so that idle empty
// files cost nothing. Operations that give it bytes move it first (File.placeLocked).
type emptyFile struct{}

// noBytes is the one emptyFile.
var noBytes placement = emptyFile{}

func (emptyFile) where() Placement                               { return Empty }
func (emptyFile) at() (int, int64)                               { return -1, 0 }
func (emptyFile) sizeNow(f *File) (int64, error)                 { return f.size, nil }
func (emptyFile) readAt(*File, []byte, int64) (int, error)       { return 0, nil }
func (emptyFile) writeAt(*File, []byte, int64) (int, error)      { return 0, errNoPlace }
func (emptyFile) grow(int64) error                               { return errNoPlace }
func (emptyFile) cut(int64, int64) error                         { return nil }
func (emptyFile) cutBack(int64) error                            { return nil }
func (emptyFile) allocate(int64, int64, uint32) error            { return errNoPlace }
func (emptyFile) allocated(*File) (int64, bool)                  { return 0, true }
func (emptyFile) holeBytes(off, n int64) int64                   { return pagesTouched(off, n) }
func (emptyFile) seek(*File, int64, int) (int64, error)          { return 0, errNoData }
func (emptyFile) blocks(*File) int64                             { return 0 }
func (emptyFile) stat(f *File) Stat                              { return Stat{Size: f.size} }
func (emptyFile) release(*File) error                            { return nil }
func (emptyFile) copyTo(*File, int64, int, int64) (int64, error) { return 0, nil }

// errNoPlace is an emptyFile asked to hold bytes: File.prepareLocked places a file before any I/O.
var errNoPlace = errors.New("spool: internal error: I/O on a file with no place")
