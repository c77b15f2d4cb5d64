package spool

import (
	"errors"
	"fmt"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The raw descriptor calls, retried on EINTR. They return bare errno values; the File methods
// map them with mapIOError.

// preadFull reads p at off, short only at the end of the file.
func preadFull(fd int, p []byte, off int64) (int, error) { return ioFull(unix.Pread, fd, p, off, nil) }

// pwriteFull writes all of p at off.
func pwriteFull(fd int, p []byte, off int64) (int, error) {
	return ioFull(unix.Pwrite, fd, p, off, io.ErrShortWrite)
}

// ioFull repeats op (pread or pwrite) on the rest of p until all of it is done; a call that does nothing
// ends it with atZero: nil for a read (the end of the file), io.ErrShortWrite for a write.
func ioFull(op func(int, []byte, int64) (int, error), fd int, p []byte, off int64, atZero error) (int, error) {
	done := 0
	for done < len(p) {
		n, err := op(fd, p[done:], off+int64(done))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return done, err
		case n == 0:
			return done, atZero
		}
		done += n
	}
	return done, nil
}

func ftruncate(fd int, size int64) error {
	for {
		if err := unix.Ftruncate(fd, size); err != unix.EINTR {
			return err
		}
	}
}

func fallocate(fd int, mode uint32, off, length int64) error {
	for {
		if err := unix.Fallocate(fd, mode, off, length); err != unix.EINTR {
			return err
		}
	}
}

// syncRange writes back every dirty page of fd and waits for it, and answers the writeback error the kernel
// recorded for the file since fd last asked (the file's errseq, as fsync reports it), with neither the journal
// commit nor the device cache flush that fdatasync adds: tempfs asks for the truth, not for durability.
func syncRange(fd int) error {
	for {
		err := unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		if err != unix.EINTR {
			return err
		}
	}
}

func fstat(fd int, st *unix.Stat_t) error {
	for {
		if err := unix.Fstat(fd, st); err != unix.EINTR {
			return err
		}
	}
}

// mapIOError turns an errno from the backing file into the package's errors: a full disk or
// quota is ErrNoSpace, a size the filesystem refuses is ErrTooLarge; anything else keeps its
// errno, wrapped with the operation's name.
func mapIOError(op string, err error) error {
	switch {
	case errors.Is(err, ErrNoSpace) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("spool: %s: %w", op, ErrNoSpace)
	case errors.Is(err, unix.EFBIG):
		return fmt.Errorf("spool: %s: %w", op, ErrTooLarge)
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

// copyBufferSize is the chunk of the pread/pwrite fallback copy.
const copyBufferSize = 1 << 20

// copyBuffer takes a copyBufferSize buffer from the pool's recycled ones; give it back with
// p.copyBuffers.Put.
func (p *Pool) copyBuffer() *[]byte {
	bufp, _ := p.copyBuffers.Get().(*[]byte)
	if bufp == nil {
		buf := make([]byte, copyBufferSize)
		bufp = &buf
	}
	return bufp
}

// copyDataRanges copies the data ranges of src below size to the same offsets in dst, walking
// SEEK_DATA/SEEK_HOLE so that holes stay holes, and returns the bytes copied. dst must already
// have its size. src's file offset moves; nothing else uses it.
func (p *Pool) copyDataRanges(src, dst int, size int64) (int64, error) {
	var copied int64
	for off := int64(0); off < size; {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return copied, err
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil {
			return copied, err
		}
		hole = min(hole, size)
		if err := p.copyRange(src, dst, data, hole-data); err != nil {
			return copied, err
		}
		copied += hole - data
		off = hole
	}
	return copied, nil
}

// copyRange copies length bytes at off from src to dst: in the kernel with copy_file_range when
// it can, else through a pooled buffer. A memfd and a disk file are on different filesystems, for
// which current kernels refuse copy_file_range (EXDEV); the pool remembers the refusal.
func (p *Pool) copyRange(src, dst int, off, length int64) error {
	end := off + length
	if !p.copyRangeUnsupported.Load() {
		for off < end {
			roff, woff := off, off
			n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(end-off, 1<<30)), 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				if err == unix.ENOSPC || err == unix.EDQUOT || err == unix.EFBIG || err == unix.EIO {
					return err
				}
				// EXDEV, EINVAL, EOPNOTSUPP, ENOSYS, ...: the plain copy below does it.
				p.copyRangeUnsupported.Store(true)
				break
			}
			off += int64(n)
		}
	}
	if off >= end {
		return nil
	}
	bufp := p.copyBuffer()
	defer p.copyBuffers.Put(bufp)
	buf := *bufp
	for off < end {
		chunk := buf[:min(int64(len(buf)), end-off)]
		n, err := preadFull(src, chunk, off)
		if err != nil {
			return err
		}
		if n < len(chunk) {
			return fmt.Errorf("source ended at %d, inside a data range: %w", off+int64(n), io.ErrUnexpectedEOF)
		}
		if _, err := pwriteFull(dst, chunk, off); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// The FS_IOC_FIEMAP request (linux/fiemap.h), asking for fiemapBatch extents at a time.
const (
	fsIocFiemap            = 0xC020660B // _IOWR('f', 11, struct fiemap)
	fiemapBatch            = 32
	fiemapExtentLast       = 0x001
	fiemapExtentDataInline = 0x200 // data kept in the inode's own space: no block of its own
)

type fiemapExtent struct {
	logical, physical, length uint64
	_                         [2]uint64
	flags                     uint32
	_                         [3]uint32
}

type fiemapRequest struct {
	start, length                    uint64
	flags, mappedExtents, extentsMax uint32
	_                                uint32
	extents                          [fiemapBatch]fiemapExtent
}

// fiemapDataBytes is the bytes of [from, to) that fd's file maps to data blocks: written extents,
// unwritten ones (fallocate) and delayed ones (written but not yet placed), not holes, and not the
// filesystem's own metadata. st_blocks counts that metadata too (ext4's extent tree blocks, for
// instance), which the filesystem allocates when it likes: when an operation splits an extent, or
// at writeback seconds later. Data blocks change only by what the daemon does to the file.
// It costs a little per extent in the range (about 1.5 µs on ext4), and returns how many it read. The
// error is the ioctl's errno (EOPNOTSUPP where the filesystem has no FIEMAP, tmpfs for one).
func fiemapDataBytes(fd int, from, to int64) (data int64, extents int, err error) {
	var req fiemapRequest
	for pos := from; pos < to; {
		req = fiemapRequest{start: uint64(pos), length: uint64(to - pos), extentsMax: fiemapBatch}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(&req)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, extents, errno
		}
		if req.mappedExtents == 0 {
			break
		}
		before := pos
		extents += int(req.mappedExtents)
		for _, e := range req.extents[:req.mappedExtents] {
			// An extent may begin before pos (counted up to pos already) or end past to.
			lo, hi := max(int64(e.logical), pos), min(int64(e.logical+e.length), to)
			if hi > lo && e.flags&fiemapExtentDataInline == 0 {
				data += hi - lo
			}
			pos = max(pos, int64(e.logical+e.length))
			if e.flags&fiemapExtentLast != 0 {
				return data, extents, nil
			}
		}
		if pos == before { // only empty extents: asking again would get them again
			break
		}
	}
	return data, extents, nil
}
