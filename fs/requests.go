package fs

import (
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/reqstats"
)

// Request accounting: every FUSE request that reaches the filesystem is counted by opcode, with the time its
// handler took and the errno it answered. go-fuse v2.12.1 has no request hook (RecordLatencies does
// nothing), so recordingFS wraps the fuse.RawFileSystem that fusefs.NewNodeFS returns and forwards every method.
// Requests go-fuse answers by itself (INIT, DESTROY, INTERRUPT, NOTIFY_REPLY, and opcodes it does not implement)
// never reach it and are not counted. The handler time ends when the answer is ready: the reply's write to
// /dev/fuse (for READ, the splice of the data) comes after. No lock is held here.

// opcode numbers the FUSE operations densely, for reqstats; names are the kernel's (FUSE_LOOKUP is LOOKUP).
type opcode int

const (
	opLookup opcode = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	numOpcodes
)

// opcodeNames are the names status and metrics show; FORGET counts one per node forgotten, a BATCH_FORGET
// of n nodes as n.
var opcodeNames = [numOpcodes]string{
	opLookup: "LOOKUP", opForget: "FORGET", opGetattr: "GETATTR", opSetattr: "SETATTR", opMknod: "MKNOD",
	opMkdir: "MKDIR", opUnlink: "UNLINK", opRmdir: "RMDIR", opRename: "RENAME", opLink: "LINK",
	opSymlink: "SYMLINK", opReadlink: "READLINK", opAccess: "ACCESS", opGetxattr: "GETXATTR",
	opListxattr: "LISTXATTR", opSetxattr: "SETXATTR", opRemovexattr: "REMOVEXATTR", opCreate: "CREATE",
	opTmpfile: "TMPFILE", opOpen: "OPEN", opRead: "READ", opLseek: "LSEEK", opGetlk: "GETLK", opSetlk: "SETLK",
	opSetlkw: "SETLKW", opRelease: "RELEASE", opWrite: "WRITE", opCopyFileRange: "COPY_FILE_RANGE",
	opIoctl: "IOCTL", opFlush: "FLUSH", opFsync: "FSYNC", opFallocate: "FALLOCATE", opOpendir: "OPENDIR",
	opReaddir: "READDIR", opReaddirplus: "READDIRPLUS", opReleasedir: "RELEASEDIR", opFsyncdir: "FSYNCDIR",
	opStatfs: "STATFS", opStatx: "STATX",
}

func newRequestRecorder() *reqstats.Recorder { return reqstats.New(opcodeNames[:]) }

// recordingFS forwards every request to fs and records it in rec.
type recordingFS struct {
	fs  fuse.RawFileSystem
	rec *reqstats.Recorder
	// enosys: an opcode already answered ENOSYS once (after that the kernel should not send it again).
	enosys [numOpcodes]atomic.Bool

	// gate parks requests during a take-over; journal keeps the results of requests that are not idempotent
	// (gate.go).
	gate    gate
	journal journal
	// replayed counts re-delivered requests answered from the journal instead of the filesystem.
	replayed atomic.Int64
	// handleKnown, if set, tells whether the filesystem knows a file or directory handle: a re-delivered
	// release of one it does not know is answered without reaching it.
	handleKnown func(node, fh uint64) bool
	// crash is the mount's crash record, nil when there is none (record.go); fsys is the tree it records.
	crash atomic.Pointer[crashRecord]
	fsys  *FS
}

var _ = (fuse.RawFileSystem)((*recordingFS)(nil))

// record counts a request of op that started at start and answered *st (nil: a request without an answer,
// FORGET, RELEASE, RELEASEDIR), and lets it out of the gate it entered (enter gives start). Each method below
// defers it: the time is taken when the method starts, the status read after the handler returned, and no
// method holds logic of its own beyond the journal's two calls.
func (r *recordingFS) record(op opcode, s reqStart, st *fuse.Status) {
	defer r.gate.leave()
	s.end()
	start := s.t
	var errno int
	if st != nil {
		errno = int(*st)
	}
	if errno > 0 && r.expectedAnswer(op, errno) {
		r.rec.RecordExpected(int(op), time.Since(start), errno)
		return
	}
	r.rec.Record(int(op), time.Since(start), errno)
}

// expectedAnswer tells the error answers that are part of normal work from failures, so that status does not
// present them as trouble: ENOENT to a LOOKUP (every create starts with the lookup of a name not there yet),
// ENODATA to a GETXATTR (an attribute not set: the kernel asks for security.capability, programs probe), and
// the first ENOSYS of an opcode (how the kernel learns that tempfs does without it, FLUSH among them).
func (r *recordingFS) expectedAnswer(op opcode, errno int) bool {
	switch {
	case op == opLookup && errno == int(syscall.ENOENT):
		return true
	case op == opGetxattr && errno == int(syscall.ENODATA):
		return true
	case (op == opGetxattr || op == opListxattr) && errno == int(syscall.ERANGE):
		// The caller's buffer was too small: the size it asked for first has grown since (user.tempfs.created
		// follows each create), and it asks again.
		return true
	case errno == int(syscall.ENOSYS):
		return r.enosys[op].CompareAndSwap(false, true)
	}
	return false
}

// Forwarding: every method of fuse.RawFileSystem, each the same two lines.

type ch = <-chan struct{}

func (r *recordingFS) String() string      { return r.fs.String() }
func (r *recordingFS) SetDebug(debug bool) { r.fs.SetDebug(debug) }
func (r *recordingFS) Init(s *fuse.Server) { r.fs.Init(s) }
func (r *recordingFS) OnUnmount()          { r.fs.OnUnmount() }

func (r *recordingFS) Lookup(c ch, h *fuse.InHeader, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer r.record(opLookup, r.enter(opLookup), &st)
	return r.fs.Lookup(c, h, name, out)
}
func (r *recordingFS) Forget(node, nlookup uint64) {
	if r.gate.holdForget(node, nlookup) {
		return // frozen: kept for the daemon that serves next (gate.held)
	}
	defer r.record(opForget, r.entered(opForget), nil)
	r.fs.Forget(node, nlookup)
}
func (r *recordingFS) GetAttr(c ch, in *fuse.GetAttrIn, out *fuse.AttrOut) (st fuse.Status) {
	defer r.record(opGetattr, r.enter(opGetattr), &st)
	return r.fs.GetAttr(c, in, out)
}
func (r *recordingFS) SetAttr(c ch, in *fuse.SetAttrIn, out *fuse.AttrOut) (st fuse.Status) {
	defer r.record(opSetattr, r.enter(opSetattr), &st)
	r.noteIno(in.NodeId)
	return r.fs.SetAttr(c, in, out)
}
func (r *recordingFS) Mknod(c ch, in *fuse.MknodIn, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer r.record(opMknod, r.enter(opMknod), &st)
	if r.replay(&in.InHeader, fuseMknod, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseMknod, structBytes(out), &st)
	return r.fs.Mknod(c, in, name, out)
}
func (r *recordingFS) Mkdir(c ch, in *fuse.MkdirIn, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer r.record(opMkdir, r.enter(opMkdir), &st)
	if r.replay(&in.InHeader, fuseMkdir, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseMkdir, structBytes(out), &st)
	return r.fs.Mkdir(c, in, name, out)
}
func (r *recordingFS) Unlink(c ch, h *fuse.InHeader, name string) (st fuse.Status) {
	defer r.record(opUnlink, r.enter(opUnlink), &st)
	if r.replay(h, fuseUnlink, nil, &st) {
		return st
	}
	defer r.keep(h, fuseUnlink, nil, &st)
	return r.fs.Unlink(c, h, name)
}
func (r *recordingFS) Rmdir(c ch, h *fuse.InHeader, name string) (st fuse.Status) {
	defer r.record(opRmdir, r.enter(opRmdir), &st)
	if r.replay(h, fuseRmdir, nil, &st) {
		return st
	}
	defer r.keep(h, fuseRmdir, nil, &st)
	return r.fs.Rmdir(c, h, name)
}
func (r *recordingFS) Rename(c ch, in *fuse.RenameIn, oldName, newName string) (st fuse.Status) {
	defer r.record(opRename, r.enter(opRename), &st)
	// RENAME and RENAME2 (flags) both arrive here; the journal keeps them under one opcode.
	if r.replay(&in.InHeader, fuseRename2, nil, &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseRename2, nil, &st)
	return r.fs.Rename(c, in, oldName, newName)
}
func (r *recordingFS) Link(c ch, in *fuse.LinkIn, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer r.record(opLink, r.enter(opLink), &st)
	if r.replay(&in.InHeader, fuseLink, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseLink, structBytes(out), &st)
	return r.fs.Link(c, in, name, out)
}
func (r *recordingFS) Symlink(c ch, h *fuse.InHeader, target, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer r.record(opSymlink, r.enter(opSymlink), &st)
	if r.replay(h, fuseSymlink, structBytes(out), &st) {
		return st
	}
	defer r.keep(h, fuseSymlink, structBytes(out), &st)
	return r.fs.Symlink(c, h, target, name, out)
}
func (r *recordingFS) Readlink(c ch, h *fuse.InHeader) (out []byte, st fuse.Status) {
	defer r.record(opReadlink, r.enter(opReadlink), &st)
	return r.fs.Readlink(c, h)
}
func (r *recordingFS) Access(c ch, in *fuse.AccessIn) (st fuse.Status) {
	defer r.record(opAccess, r.enter(opAccess), &st)
	return r.fs.Access(c, in)
}
func (r *recordingFS) GetXAttr(c ch, h *fuse.InHeader, attr string, dest []byte) (n uint32, st fuse.Status) {
	defer r.record(opGetxattr, r.enter(opGetxattr), &st)
	return r.fs.GetXAttr(c, h, attr, dest)
}
func (r *recordingFS) ListXAttr(c ch, h *fuse.InHeader, dest []byte) (n uint32, st fuse.Status) {
	defer r.record(opListxattr, r.enter(opListxattr), &st)
	return r.fs.ListXAttr(c, h, dest)
}
func (r *recordingFS) SetXAttr(c ch, in *fuse.SetXAttrIn, attr string, data []byte) (st fuse.Status) {
	defer r.record(opSetxattr, r.enter(opSetxattr), &st)
	r.noteIno(in.NodeId)
	if r.replay(&in.InHeader, fuseSetxattr, nil, &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseSetxattr, nil, &st)
	return r.fs.SetXAttr(c, in, attr, data)
}
func (r *recordingFS) RemoveXAttr(c ch, h *fuse.InHeader, attr string) (st fuse.Status) {
	defer r.record(opRemovexattr, r.enter(opRemovexattr), &st)
	r.noteIno(h.NodeId)
	if r.replay(h, fuseRemovexattr, nil, &st) {
		return st
	}
	defer r.keep(h, fuseRemovexattr, nil, &st)
	return r.fs.RemoveXAttr(c, h, attr)
}
func (r *recordingFS) Create(c ch, in *fuse.CreateIn, name string, out *fuse.CreateOut) (st fuse.Status) {
	defer r.record(opCreate, r.enter(opCreate), &st)
	if r.replay(&in.InHeader, fuseCreate, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseCreate, structBytes(out), &st)
	return r.fs.Create(c, in, name, out)
}
func (r *recordingFS) Tmpfile(c ch, in *fuse.CreateIn, out *fuse.CreateOut) (st fuse.Status) {
	defer r.record(opTmpfile, r.enter(opTmpfile), &st)
	if r.replay(&in.InHeader, fuseTmpfile, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseTmpfile, structBytes(out), &st)
	return r.fs.Tmpfile(c, in, out)
}
func (r *recordingFS) Open(c ch, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer r.record(opOpen, r.enter(opOpen), &st)
	r.noteIno(in.NodeId)
	if r.replay(&in.InHeader, fuseOpen, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseOpen, structBytes(out), &st)
	return r.fs.Open(c, in, out)
}
func (r *recordingFS) Read(c ch, in *fuse.ReadIn, buf []byte) (res fuse.ReadResult, st fuse.Status) {
	defer r.record(opRead, r.enter(opRead), &st)
	return r.fs.Read(c, in, buf)
}
func (r *recordingFS) Lseek(c ch, in *fuse.LseekIn, out *fuse.LseekOut) (st fuse.Status) {
	defer r.record(opLseek, r.enter(opLseek), &st)
	return r.fs.Lseek(c, in, out)
}
func (r *recordingFS) GetLk(c ch, in *fuse.LkIn, out *fuse.LkOut) (st fuse.Status) {
	defer r.record(opGetlk, r.enter(opGetlk), &st)
	return r.fs.GetLk(c, in, out)
}
func (r *recordingFS) SetLk(c ch, in *fuse.LkIn) (st fuse.Status) {
	defer r.record(opSetlk, r.enter(opSetlk), &st)
	return r.fs.SetLk(c, in)
}
func (r *recordingFS) SetLkw(c ch, in *fuse.LkIn) (st fuse.Status) {
	defer r.record(opSetlkw, r.enter(opSetlkw), &st)
	return r.fs.SetLkw(c, in)
}
func (r *recordingFS) Release(c ch, in *fuse.ReleaseIn) {
	defer r.record(opRelease, r.enter(opRelease), nil)
	r.noteIno(in.NodeId)
	if r.skipRelease(in, fuseRelease) {
		return
	}
	r.fs.Release(c, in)
	r.journaled(r.journal.record(in.Unique, fuseRelease, fuse.OK, nil))
}
func (r *recordingFS) Write(c ch, in *fuse.WriteIn, data []byte) (n uint32, st fuse.Status) {
	defer r.record(opWrite, r.enter(opWrite), &st)
	r.noteIno(in.NodeId)
	r.noteHandle(in.Fh) // its template name goes at the first write
	return r.fs.Write(c, in, data)
}
func (r *recordingFS) CopyFileRange(c ch, in *fuse.CopyFileRangeIn) (n uint32, st fuse.Status) {
	defer r.record(opCopyFileRange, r.enter(opCopyFileRange), &st)
	r.noteIno(in.NodeIdOut)
	return r.fs.CopyFileRange(c, in)
}
func (r *recordingFS) Ioctl(c ch, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) (st fuse.Status) {
	defer r.record(opIoctl, r.enter(opIoctl), &st)
	r.noteIno(in.NodeId)
	return r.fs.Ioctl(c, in, inbuf, out, outbuf)
}
func (r *recordingFS) Flush(c ch, in *fuse.FlushIn) (st fuse.Status) {
	defer r.record(opFlush, r.enter(opFlush), &st)
	return r.fs.Flush(c, in)
}
func (r *recordingFS) Fsync(c ch, in *fuse.FsyncIn) (st fuse.Status) {
	defer r.record(opFsync, r.enter(opFsync), &st)
	return r.fs.Fsync(c, in)
}
func (r *recordingFS) Fallocate(c ch, in *fuse.FallocateIn) (st fuse.Status) {
	defer r.record(opFallocate, r.enter(opFallocate), &st)
	r.noteIno(in.NodeId)
	return r.fs.Fallocate(c, in)
}
func (r *recordingFS) OpenDir(c ch, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer r.record(opOpendir, r.enter(opOpendir), &st)
	if r.replay(&in.InHeader, fuseOpendir, structBytes(out), &st) {
		return st
	}
	defer r.keep(&in.InHeader, fuseOpendir, structBytes(out), &st)
	return r.fs.OpenDir(c, in, out)
}
func (r *recordingFS) ReadDir(c ch, in *fuse.ReadIn, out *fuse.DirEntryList) (st fuse.Status) {
	defer r.record(opReaddir, r.enter(opReaddir), &st)
	r.noteIno(in.NodeId)
	r.noteHandle(in.Fh)
	return r.fs.ReadDir(c, in, out)
}
func (r *recordingFS) ReadDirPlus(c ch, in *fuse.ReadIn, out *fuse.DirEntryList) (st fuse.Status) {
	defer r.record(opReaddirplus, r.enter(opReaddirplus), &st)
	r.noteIno(in.NodeId)
	r.noteHandle(in.Fh)
	return r.fs.ReadDirPlus(c, in, out)
}
func (r *recordingFS) ReleaseDir(in *fuse.ReleaseIn) {
	defer r.record(opReleasedir, r.enter(opReleasedir), nil)
	if r.skipRelease(in, fuseReleasedir) {
		return
	}
	r.fs.ReleaseDir(in)
	r.journaled(r.journal.record(in.Unique, fuseReleasedir, fuse.OK, nil))
}
func (r *recordingFS) FsyncDir(c ch, in *fuse.FsyncIn) (st fuse.Status) {
	defer r.record(opFsyncdir, r.enter(opFsyncdir), &st)
	return r.fs.FsyncDir(c, in)
}
func (r *recordingFS) StatFs(c ch, h *fuse.InHeader, out *fuse.StatfsOut) (st fuse.Status) {
	defer r.record(opStatfs, r.enter(opStatfs), &st)
	return r.fs.StatFs(c, h, out)
}
func (r *recordingFS) Statx(c ch, in *fuse.StatxIn, out *fuse.StatxOut) (st fuse.Status) {
	defer r.record(opStatx, r.enter(opStatx), &st)
	return r.fs.Statx(c, in, out)
}

// Writev is how go-fuse serves WRITE. On ENOSYS it falls back to Write, which then records the request.
func (r *recordingFS) Writev(c ch, in *fuse.WriteIn, data [][]byte) (n uint32, st fuse.Status) {
	start := r.enter(opWrite)
	defer func() {
		if st != fuse.ENOSYS {
			r.record(opWrite, start, &st)
		} else {
			start.end()
			r.gate.leave()
		}
	}()
	r.noteIno(in.NodeId)
	r.noteHandle(in.Fh)
	return r.fs.Writev(c, in, data)
}
