package spool

// Lock order: see the package comment in pool.go. These placements are guarded by their File's mu,
// like the File's other fields, except where a comment says otherwise.

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diskFile is the placement of a file the pool moved to disk: an unlinked backing file in the Store,
// written only by the daemon.
type diskFile struct {
	ownFd
	// change is what beginChange recorded for the operation in progress.
	change diskChange
}

// diskChange is the range of a disk file's pages an operation may change, with the file's share of the
// disk counter and the data it had in that range before the operation.
type diskChange struct {
	set            bool
	from, to       int64
	base, dataWere int64
}

func (d *diskFile) where() Placement { return DiskFile }

// writeAt counts what reaches the store in Stats.DiskWrittenBytes.
func (d *diskFile) writeAt(f *File, p []byte, off int64) (int, error) {
	n, err := pwriteFull(d.fd, p, off)
	if err == nil {
		f.pool.addDiskWritten(int64(n))
	}
	return n, err
}

// beginChange records, before an operation that may change the data blocks of [off, off+n) and the size
// from oldSize to newSize, the file's share of the disk counter and the data it has in those pages now;
// allocated then measures only them again. The whole file would cost FIEMAP time per extent at every
// write, and a file written at random places has thousands. Nothing is recorded without FIEMAP.
func (d *diskFile) beginChange(f *File, off, n, oldSize, newSize int64) {
	d.change = diskChange{}
	if f.pool.fiemapUnsupported.Load() {
		return
	}
	// The pages written or allocated, and those the size passes over: a write or truncate past the end
	// brings in whatever the filesystem preallocated there, which counted nothing while past the size.
	from, to := off, off+n
	if n == 0 {
		from, to = newSize, newSize
	}
	if oldSize != newSize {
		from, to = min(from, oldSize, newSize), max(to, oldSize, newSize)
	}
	from, to = from&^(pageSize-1), roundUpPage(to)
	var were int64
	if end := min(to, roundUpPage(oldSize)); end > from {
		var ok bool
		if were, ok = f.pool.diskDataIn(d.fd, from, end); !ok {
			return
		}
	}
	d.change = diskChange{set: true, from: from, to: to, base: f.accounted, dataWere: were}
}

// allocated is what the file's data blocks take now (Pool.diskAllocation): the share recorded by
// beginChange with its range measured again, or else the whole file measured.
func (d *diskFile) allocated(f *File) (int64, bool) {
	change := d.change
	d.change = diskChange{}
	if change.set {
		var now int64
		ok := true
		if end := min(change.to, roundUpPage(f.size)); end > change.from {
			now, ok = f.pool.diskDataIn(d.fd, change.from, end)
		}
		if ok {
			return change.base - change.dataWere + now, true
		}
	}
	n, err := f.pool.diskAllocation(d.fd, f.size, nil)
	if err != nil {
		f.pool.log.Warn("spool: fstat failed; allocation not updated", "err", err)
		return 0, false
	}
	return n, true
}

func (d *diskFile) release(f *File) error {
	err := unix.Close(d.fd)
	f.pool.descriptorClosed(diskDescName(d.id))
	if err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}

// passthroughFile is a diskFile whose backing fd the kernel may write directly (passthrough): the daemon
// does not see those writes, so the backing file's fstat is the truth for the size and the allocation,
// and the pool's DiskBytes catches up whenever the daemon looks.
type passthroughFile struct{ ownFd }

func (x *passthroughFile) where() Placement { return DiskPassthrough }

// sizeNow fstats, and refreshes the pool's DiskBytes, which pool.mu guards: the File's mu may be held
// for reading only.
func (x *passthroughFile) sizeNow(f *File) (int64, error) {
	var st unix.Stat_t
	if err := fstat(x.fd, &st); err != nil {
		return 0, mapIOError("fstat", err)
	}
	f.pool.accountExternal(f, st.Blocks*512)
	return st.Size, nil
}

// allocated accounts from fstat, if anything changed, itself: the File's mu may be held for reading only.
func (x *passthroughFile) allocated(f *File) (int64, bool) {
	if _, err := x.sizeNow(f); err != nil {
		f.pool.log.Warn("spool: fstat of a passthrough file failed; allocation not updated", "err", err)
	}
	return 0, false
}

func (x *passthroughFile) stat(f *File) Stat {
	var st unix.Stat_t
	if err := fstat(x.fd, &st); err != nil {
		f.pool.log.Warn("spool: fstat failed", "err", err)
		return Stat{Size: f.size}
	}
	f.pool.accountExternal(f, st.Blocks*512)
	return Stat{Size: st.Size, Blocks: st.Blocks, ModTime: st.Mtim.Nano(), External: true}
}

func (x *passthroughFile) release(f *File) error {
	err := unix.Close(x.fd)
	f.pool.descriptorClosed(diskDescName(x.id))
	f.pool.noteExternal(f, false)
	if err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}
