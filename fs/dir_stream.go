package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirStream is one open directory handle's listing. go-fuse serializes the requests of one handle, so it needs
// no lock of its own. Offsets are positions in the listing (1 after the first entry): the kernel passes back
// the offset of the last entry it consumed, and a seek to it resumes there, also after a READDIR the kernel
// interrupted, or on a new daemon that took the mount over (its go-fuse starts at offset 0 and seeks).
type dirStream struct {
	dir *Dir
	// listed: entries holds a listing (taken at the first READDIR or seek).
	listed  bool
	entries []fuse.DirEntry
	next    int
}

var (
	_ = (fusefs.FileReaddirenter)((*dirStream)(nil))
	_ = (fusefs.FileSeekdirer)((*dirStream)(nil))
	_ = (fusefs.FileReleasedirer)((*dirStream)(nil))
)

func (s *dirStream) list() {
	s.entries, s.next, s.listed = s.dir.listing(), 0, true
}

// Readdirent hands go-fuse the next entry; nil at the end.
func (s *dirStream) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !s.listed {
		s.list()
	}
	if s.next >= len(s.entries) {
		return nil, 0
	}
	e := s.entries[s.next]
	s.next++
	e.Off = uint64(s.next)
	return &e, 0
}

func (s *dirStream) Releasedir(ctx context.Context, releaseFlags uint32) {}

// Seekdir moves to an offset this stream handed out. Offset 0 is a rewind (rewinddir, lseek(fd, 0), a second
// os.listdir of one descriptor): the directory is listed again, so the reader sees it as it is now, as on
// tmpfs. Any other offset continues the pass in progress, over the listing it started with.
func (s *dirStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 || !s.listed {
		s.list()
		if off == 0 {
			return 0
		}
	}
	if off > uint64(len(s.entries)) {
		return syscall.EINVAL
	}
	s.next = int(off)
	return 0
}
