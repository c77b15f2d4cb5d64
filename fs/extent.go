package fs

import (
	"log/slog"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/spool"
)

// extentResult answers a READ with bytes of a spool file in place: go-fuse splices them from the memfd or
// store file into /dev/fuse, so they are copied once, by the kernel, instead of through a daemon buffer.
// The extent holds the spool file's read lock until go-fuse calls Done after sending the reply (for every
// result with a non-zero Size, which is why empty reads are answered with plain data instead).
type extentResult struct {
	ext spool.Extent
	log *slog.Logger
}

var (
	_ = (fuse.ReadResult)((*extentResult)(nil))
	// Seekable is what makes go-fuse splice (its seekableResult interface, not exported).
	_ = (interface {
		Seekable() (uintptr, int64, int)
	})((*extentResult)(nil))
)

func (r *extentResult) Size() int { return r.ext.Len }

func (r *extentResult) Seekable() (fd uintptr, off int64, sz int) {
	return uintptr(r.ext.Fd), r.ext.Off, r.ext.Len
}

// Bytes is go-fuse's fallback when splicing is not possible: a plain read into its buffer.
func (r *extentResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(buf) < r.ext.Len {
		buf = make([]byte, r.ext.Len)
	}
	n, err := r.ext.ReadInto(buf)
	if err != nil {
		return nil, fuse.Status(toErrno(r.log, "read", err))
	}
	return buf[:n], fuse.OK
}

func (r *extentResult) Done() { r.ext.Release() }
