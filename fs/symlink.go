package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Symlink is a symbolic link. Its target is immutable, as on every POSIX filesystem.
type Symlink struct {
	fusefs.Inode
	leaf
	fs     *FS
	target []byte
}

var (
	_ = (fusefs.NodeReadlinker)((*Symlink)(nil))
	_ = (fusefs.NodeGetattrer)((*Symlink)(nil))
	_ = (fusefs.NodeSetattrer)((*Symlink)(nil))
	_ = (fusefs.NodeGetxattrer)((*Symlink)(nil))
	_ = (fusefs.NodeSetxattrer)((*Symlink)(nil))
	_ = (fusefs.NodeListxattrer)((*Symlink)(nil))
	_ = (fusefs.NodeRemovexattrer)((*Symlink)(nil))
	_ = (leafNode)((*Symlink)(nil))
)

func (s *Symlink) base() *attrs { return &s.attrs }

func (s *Symlink) getattr(out *fuse.Attr) {
	s.attrs.fill(out, s.StableAttr().Ino)
	out.Size = uint64(len(s.target))
	out.Nlink = s.nlink.Load()
}

// takeUnusedLocked: see leafNode. The caller holds s.stateMu.
func (s *Symlink) takeUnusedLocked() bool { return len(s.links) == 0 }

func (s *Symlink) free() {
	s.fs.counts.others.Add(-1)
	s.ForgetPersistent()
}

func (s *Symlink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s.fs.atime.accessed(&s.attrs)
	return s.target, 0
}

func (s *Symlink) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.getattr(&out.Attr)
	out.SetTimeout(s.fs.opts.AttrTimeout)
	return 0
}

func (s *Symlink) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EINVAL
	}
	s.attrs.setattr(ctx, in)
	s.getattr(&out.Attr)
	out.SetTimeout(s.fs.opts.AttrTimeout)
	return 0
}

func (s *Symlink) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(ctx, s, attr, dest)
}

func (s *Symlink) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return setxattr(ctx, s, attr, data, flags)
}

func (s *Symlink) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(ctx, s, dest)
}

func (s *Symlink) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return removexattr(ctx, s, attr)
}
