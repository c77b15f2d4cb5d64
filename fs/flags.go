package fs

import (
	"context"
	"encoding/binary"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// File flags (chattr, lsattr): append-only, immutable, nodump and noatime, the ones tmpfs keeps. The kernel
// passes FS_IOC_GETFLAGS and FS_IOC_SETFLAGS on to the daemon after its own checks (owner,
// CAP_LINUX_IMMUTABLE), but a FUSE inode has no flags of its own in the kernel: the VFS cannot enforce
// append-only and immutable, so the daemon refuses here what the VFS refuses on tmpfs (EPERM). fcntl(F_SETFL)
// clearing O_APPEND on a descriptor of an append-only file never reaches the daemon: a write before the end
// of such a file is refused instead.

// The flags' values (linux/fs.h), and the ioctl numbers x/sys/unix does not name.
const (
	flagImmutable   = 0x10
	flagAppend      = 0x20
	flagNodump      = 0x40
	flagNoatime     = 0x80
	fsIoc32GetFlags = 0x80046601
	fsIoc32SetFlags = 0x40046602
	fsIocFSGetXattr = 0x801c581f
	fsIocFSSetXattr = 0x401c5820
	fsxattrSize     = 28 // struct fsxattr
	// settableFlags are the flags tmpfs lets users change; others answer EOPNOTSUPP, as there.
	settableFlags = flagImmutable | flagAppend | flagNodump | flagNoatime
)

var (
	_ = (fusefs.NodeIoctler)((*File)(nil))
	_ = (fusefs.NodeIoctler)((*Dir)(nil))
)

func (f *File) Ioctl(ctx context.Context, fh fusefs.FileHandle, cmd uint32, arg uint64, in, out []byte) (int32, syscall.Errno) {
	return ioctlFlags(&f.attrs, cmd, in, out)
}

func (d *Dir) Ioctl(ctx context.Context, fh fusefs.FileHandle, cmd uint32, arg uint64, in, out []byte) (int32, syscall.Errno) {
	return ioctlFlags(&d.attrs, cmd, in, out)
}

// xflags pairs each flag with its FS_XFLAG_* twin of struct fsxattr (FS_IOC_FSGETXATTR), which the kernel asks
// too: it reads the old flags that way before it sets new ones.
var xflags = [...]struct{ flag, xflag uint32 }{
	{flagImmutable, 0x8}, {flagAppend, 0x10}, {flagNoatime, 0x40}, {flagNodump, 0x80}, // FS_XFLAG_*
}

// ioctlFlags answers FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (an int, as the kernel passes them),
// FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR (struct fsxattr, of which only the flags mean something here), and
// ENOTTY for every other ioctl.
func ioctlFlags(a *attrs, cmd uint32, in, out []byte) (int32, syscall.Errno) {
	switch cmd {
	case fsIocFSGetXattr:
		if len(out) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		a.mu.Lock()
		flags := a.flags
		a.mu.Unlock()
		var x uint32
		for _, f := range xflags {
			if flags&f.flag != 0 {
				x |= f.xflag
			}
		}
		clear(out[:fsxattrSize])
		binary.NativeEndian.PutUint32(out, x)
		return 0, 0
	case fsIocFSSetXattr:
		if len(in) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		x := binary.NativeEndian.Uint32(in)
		var flags uint32
		for _, f := range xflags {
			if x&f.xflag != 0 {
				flags |= f.flag
				x &^= f.xflag
			}
		}
		if x != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		a.setFlags(flags)
		return 0, 0
	case uint32(unix.FS_IOC_GETFLAGS), fsIoc32GetFlags:
		if len(out) < 4 {
			return 0, syscall.EINVAL
		}
		a.mu.Lock()
		binary.NativeEndian.PutUint32(out, a.flags)
		a.mu.Unlock()
		return 0, 0
	case uint32(unix.FS_IOC_SETFLAGS), fsIoc32SetFlags:
		if len(in) < 4 {
			return 0, syscall.EINVAL
		}
		v := binary.NativeEndian.Uint32(in)
		if v&^settableFlags != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		a.setFlags(v)
		return 0, 0
	}
	return 0, syscall.ENOTTY
}

// setFlags sets the file flags; ctime moves, as on tmpfs.
func (a *attrs) setFlags(flags uint32) {
	now := timeNow()
	a.mu.Lock()
	a.flags = flags
	a.ctime = now
	a.mu.Unlock()
}

// hasFlag reports whether any of the flags is set on a.
func (a *attrs) hasFlag(flags uint32) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.flags&flags != 0
}

// protectedErrno is EPERM when a is immutable or append-only: it cannot be removed, renamed, linked, or have
// its xattrs changed.
func (a *attrs) protectedErrno() syscall.Errno {
	if a.hasFlag(flagImmutable | flagAppend) {
		return syscall.EPERM
	}
	return 0
}

// removeDenied is EPERM when the entry of n in d may not go (unlink, rmdir, rename from or over it): either is
// immutable or append-only.
func removeDenied(d *Dir, n node) syscall.Errno {
	if errno := d.attrs.protectedErrno(); errno != 0 {
		return errno
	}
	return n.base().protectedErrno()
}

// createDenied is EPERM when d is immutable: no entry may be made in it.
func (d *Dir) createDenied() syscall.Errno {
	if d.attrs.hasFlag(flagImmutable) {
		return syscall.EPERM
	}
	return 0
}

// openDenied is EPERM for an open for writing of an immutable file, or of an append-only one without
// O_APPEND or with O_TRUNC.
func (a *attrs) openDenied(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0 {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.flags&flagImmutable != 0:
		return syscall.EPERM
	case a.flags&flagAppend != 0 && (flags&syscall.O_APPEND == 0 || flags&syscall.O_TRUNC != 0):
		return syscall.EPERM
	}
	return 0
}

// setattrDenied is EPERM for any change of an immutable node, and for a change of size, mode, owner or an
// explicit time of an append-only one (setting times to now stays allowed there), as the VFS's notify_change
// and truncate rules say.
func (a *attrs) setattrDenied(in *fuse.SetAttrIn) syscall.Errno {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.flags&flagImmutable != 0:
		return syscall.EPERM
	case a.flags&flagAppend == 0:
		return 0
	}
	explicitTimes := in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 &&
		in.Valid&(fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) == 0
	if in.Valid&(fuse.FATTR_SIZE|fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 || explicitTimes {
		return syscall.EPERM
	}
	return 0
}

// allocateDenied is EPERM for fallocate of an immutable file, and of an append-only one in any mode but
// plain allocation (mode 0 or FALLOC_FL_KEEP_SIZE).
func (a *attrs) allocateDenied(mode uint32) syscall.Errno {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flags&flagImmutable != 0 || a.flags&flagAppend != 0 && mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EPERM
	}
	return 0
}
