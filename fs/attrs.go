package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// attrs holds the metadata every node has. It is embedded by value in each node type.
//
// Lock order: the namespace locks (see fs.go), then attrs.mu, then the spool file's own lock. attrs.mu
// is a leaf for everything in this package: no method holding it calls into go-fuse or takes a namespace lock.
type attrs struct {
	mu    sync.Mutex
	mode  uint32 // S_IFMT | permission bits
	uid   uint32
	gid   uint32
	rdev  uint32
	atime timespec
	mtime timespec
	ctime timespec
	// used is when the entry was last used (created, read, written, its times set), on the Mono clock: what
	// --max-age counts from. atime and mtime are wall-clock times that a user may set and the wall clock may
	// step, so they cannot tell idle time.
	used  int64
	btime timespec // birth: when the node was made (statx STATX_BTIME); never changes
	flags uint32   // FS_*_FL file flags (chattr): see flags.go
	// xattrs holds stored extended attributes (user.*, trusted.*, security.*); nil until the first one is set.
	xattrs map[string][]byte
}

// timespec is a file time as the kernel keeps it: seconds (any int64, before 1970 too) and nanoseconds.
// int64 nanoseconds would overflow past 2262, which touch -d can ask for; time.Time is larger than needed.
type timespec struct {
	sec  int64
	nsec uint32
}

func timespecOf(t time.Time) timespec { return timespec{sec: t.Unix(), nsec: uint32(t.Nanosecond())} }

func timeNow() timespec { return timespecOf(clock.Wall()) }

// timespecFromNanos converts nanoseconds since the epoch, flooring so that times before 1970 stay right.
func timespecFromNanos(n int64) timespec {
	sec, nsec := n/1e9, n%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return timespec{sec: sec, nsec: uint32(nsec)}
}

func (t timespec) before(u timespec) bool {
	return t.sec < u.sec || t.sec == u.sec && t.nsec < u.nsec
}

func laterOf(t, u timespec) timespec {
	if t.before(u) {
		return u
	}
	return t
}

func newAttrs(mode, uid, gid uint32) attrs {
	now := timeNow()
	return attrs{mode: mode, uid: uid, gid: gid, atime: now, mtime: now, ctime: now, btime: now, used: monoNow()}
}

// fill copies the metadata and the inode number into out; the caller fills size, blocks and nlink, which depend
// on the node type. Every attribute reply must carry the inode number: the kernel copies it from each LOOKUP,
// CREATE, GETATTR and SETATTR reply into its inode, and go-fuse fills it in for GETATTR only, so a SETATTR
// answered without it renumbered the entry to 0 until the next lookup (docs/kernel.md, Attributes and inode numbers).
func (a *attrs) fill(out *fuse.Attr, ino uint64) {
	out.Ino = ino
	a.mu.Lock()
	out.Mode = a.mode
	out.Uid = a.uid
	out.Gid = a.gid
	out.Rdev = a.rdev
	setTime(&out.Atime, &out.Atimensec, a.atime)
	setTime(&out.Mtime, &out.Mtimensec, a.mtime)
	setTime(&out.Ctime, &out.Ctimensec, a.ctime)
	a.mu.Unlock()
	out.Blksize = 4096
}

func setTime(sec *uint64, nsec *uint32, t timespec) {
	*sec = uint64(t.sec) // the FUSE protocol carries the two's complement of negative seconds
	*nsec = t.nsec
}

// touchModified records a change of content: mtime and ctime move, as write(2) and truncate(2) move them.
func (a *attrs) touchModified() {
	now, used := timeNow(), monoNow()
	a.mu.Lock()
	a.mtime, a.ctime = now, now
	a.used = used
	a.mu.Unlock()
}

// touchChanged records a change of metadata only (chmod, link count, rename): ctime moves.
func (a *attrs) touchChanged() {
	now := timeNow()
	a.mu.Lock()
	a.ctime = now
	a.mu.Unlock()
}

// setattr applies mode, owner and times from in. Size is the caller's business (only files have data).
// Permission checks were done by the kernel (default_permissions), or the caller is root. The reply carries
// the new attributes, so the kernel's cache sees a dropped privilege bit at once.
func (a *attrs) setattr(ctx context.Context, in *fuse.SetAttrIn) {
	now := timeNow()
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	// tempfs negotiates FUSE_HANDLE_KILLPRIV_V2 (it saves a GETXATTR round trip on every write), so the
	// kernel leaves it to us to drop set-user-ID and set-group-ID where the kernel would: on chown of any
	// non-directory (by root too, as the VFS's chown_common asks), and on a truncate by an unprivileged
	// caller (FATTR_KILL_SUIDGID). Both are judged on the mode and group before this change, as the VFS does.
	_, chownUID := in.GetUID()
	_, chownGID := in.GetGID()
	_, chmod := in.GetMode()
	kill := (chownUID || chownGID) && !chmod || in.Valid&fuse.FATTR_KILL_SUIDGID != 0
	if kill {
		a.killPrivLocked(ctx)
	}
	if mode, ok := in.GetMode(); ok {
		a.mode = a.mode&syscall.S_IFMT | mode&07777
		a.chmodACLLocked(mode) // chmod sets an access ACL's owner, mask and other entries, as on tmpfs
		changed = true
	}
	if uid, ok := in.GetUID(); ok {
		a.uid = uid
		changed = true
	}
	if gid, ok := in.GetGID(); ok {
		a.gid = gid
		changed = true
	}
	if t, ok := in.GetATime(); ok {
		a.atime = timespecOf(t)
		changed = true
		a.used = monoNow()
	}
	if t, ok := in.GetMTime(); ok {
		a.mtime = timespecOf(t)
		changed = true
		a.used = monoNow()
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		changed = true
		a.used = monoNow()
	}
	if changed {
		a.ctime = now
	}
	if t, ok := in.GetCTime(); ok {
		a.ctime = timespecOf(t)
	}
}

// killPrivLocked drops set-user-ID always, and set-group-ID when group execute is set (otherwise it marks
// mandatory locking) or when an unprivileged caller is outside the file's group, as the kernel's
// setattr_should_drop_suidgid does. It is the one place that drops them, for write, truncate, fallocate and
// chown alike, and reports whether it dropped any. Directories keep both: Linux never clears them there
// (setgid on a directory is inheritance, not privilege). Only regular files are written or truncated; chown
// reaches fifos, sockets and device nodes too, and Linux clears their bits as well. The caller holds a.mu.
func (a *attrs) killPrivLocked(ctx context.Context) bool {
	if a.mode&syscall.S_IFMT == syscall.S_IFDIR || a.mode&(syscall.S_ISUID|syscall.S_ISGID) == 0 {
		return false
	}
	kill := a.mode & syscall.S_ISUID
	if a.mode&syscall.S_ISGID != 0 {
		uid, gid, pid := caller(ctx)
		if a.mode&syscall.S_IXGRP != 0 || uid != 0 && !inGroup(gid, pid, a.gid) {
			kill |= syscall.S_ISGID
		}
	}
	a.mode &^= kill
	return kill != 0
}

// killPrivForWrite drops the privilege bits before a write, O_TRUNC open or fallocate by a caller that is not
// root, which is when the kernel would set FUSE_WRITE_KILL_SUIDGID (go-fuse does not pass that flag on). It
// reports whether it dropped any: the kernel's cached attributes must then be invalidated, since the reply to
// those requests carries none.
func (a *attrs) killPrivForWrite(ctx context.Context) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.killPrivForWriteLocked(ctx)
}

// killPrivForWriteLocked is killPrivForWrite with a.mu held by the caller.
func (a *attrs) killPrivForWriteLocked(ctx context.Context) bool {
	if a.mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		if uid, _, _ := caller(ctx); uid != 0 {
			return a.killPrivLocked(ctx)
		}
	}
	return false
}

// wrote records a write by the caller in one lock round: privilege bits dropped as killPrivForWrite says
// (reported as it does), mtime and ctime moved as touchModified does. It is on every daemon-served write.
func (a *attrs) wrote(ctx context.Context) (killed bool) {
	now, used := timeNow(), monoNow()
	a.mu.Lock()
	killed = a.killPrivForWriteLocked(ctx)
	a.mtime, a.ctime = now, now
	a.used = used
	a.mu.Unlock()
	return killed
}

func (a *attrs) fileType() uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mode & syscall.S_IFMT
}
