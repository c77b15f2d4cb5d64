package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// STATX answers what GETATTR does and the birth time, which only STATX carries: the kernel asks it when a
// statx(2) caller wants STATX_BTIME (stat %W), and keeps the answer with the inode's attributes.

var (
	_ = (fusefs.NodeStatxer)((*File)(nil))
	_ = (fusefs.NodeStatxer)((*Dir)(nil))
	_ = (fusefs.NodeStatxer)((*Symlink)(nil))
	_ = (fusefs.NodeStatxer)((*Special)(nil))
)

func (f *File) Statx(ctx context.Context, fh fusefs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return f.fs.statx(f, out)
}

func (d *Dir) Statx(ctx context.Context, fh fusefs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return d.fs.statx(d, out)
}

func (s *Symlink) Statx(ctx context.Context, fh fusefs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return s.fs.statx(s, out)
}

func (s *Special) Statx(ctx context.Context, fh fusefs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return s.fs.statx(s, out)
}

// statx fills out with n's attributes, all of STATX_BASIC_STATS (the kernel takes them over only when all are
// there) and STATX_BTIME.
func (fsys *FS) statx(n node, out *fuse.StatxOut) syscall.Errno {
	var attr fuse.Attr
	n.getattr(&attr)
	a := n.base()
	a.mu.Lock()
	btime := a.btime
	a.mu.Unlock()
	sx := &out.Statx
	sx.Mask = unix.STATX_BASIC_STATS | unix.STATX_BTIME
	sx.Blksize = attr.Blksize
	sx.Nlink = attr.Nlink
	sx.Uid, sx.Gid = attr.Uid, attr.Gid
	sx.Mode = uint16(attr.Mode)
	sx.Ino = attr.Ino
	sx.Size, sx.Blocks = attr.Size, attr.Blocks
	sx.Atime = fuse.SxTime{Sec: attr.Atime, Nsec: attr.Atimensec}
	sx.Mtime = fuse.SxTime{Sec: attr.Mtime, Nsec: attr.Mtimensec}
	sx.Ctime = fuse.SxTime{Sec: attr.Ctime, Nsec: attr.Ctimensec}
	sx.Btime = fuse.SxTime{Sec: uint64(btime.sec), Nsec: btime.nsec}
	sx.RdevMajor, sx.RdevMinor = unix.Major(uint64(attr.Rdev)), unix.Minor(uint64(attr.Rdev))
	if f, isFile := n.(*File); isFile {
		out.SetTimeout(f.attrTimeout())
	} else {
		out.SetTimeout(fsys.opts.AttrTimeout)
	}
	return 0
}
