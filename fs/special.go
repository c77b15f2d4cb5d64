package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Special is a fifo, socket or device node. The kernel serves their I/O itself; tempfs only keeps the entry.
type Special struct {
	fusefs.Inode
	leaf
	fs *FS
}

var (
	_ = (fusefs.NodeGetattrer)((*Special)(nil))
	_ = (fusefs.NodeSetattrer)((*Special)(nil))
	_ = (fusefs.NodeGetxattrer)((*Special)(nil))
	_ = (fusefs.NodeSetxattrer)((*Special)(nil))
	_ = (fusefs.NodeListxattrer)((*Special)(nil))
	_ = (fusefs.NodeRemovexattrer)((*Special)(nil))
	_ = (leafNode)((*Special)(nil))
)

func (s *Special) base() *attrs { return &s.attrs }

func (s *Special) getattr(out *fuse.Attr) {
	s.attrs.fill(out, s.StableAttr().Ino)
	out.Nlink = s.nlink.Load()
}

// takeUnusedLocked: see leafNode. The caller holds s.stateMu.
func (s *Special) takeUnusedLocked() bool { return len(s.links) == 0 }

func (s *Special) free() {
	s.fs.counts.others.Add(-1)
	s.ForgetPersistent()
}

func (s *Special) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	s.getattr(&out.Attr)
	out.SetTimeout(s.fs.opts.AttrTimeout)
	return 0
}

func (s *Special) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EINVAL
	}
	s.attrs.setattr(ctx, in)
	s.getattr(&out.Attr)
	out.SetTimeout(s.fs.opts.AttrTimeout)
	return 0
}

func (s *Special) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(ctx, s, attr, dest)
}

func (s *Special) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return setxattr(ctx, s, attr, data, flags)
}

func (s *Special) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(ctx, s, dest)
}

func (s *Special) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return removexattr(ctx, s, attr)
}
