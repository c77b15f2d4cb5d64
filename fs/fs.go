// Package fs serves tempfs's node tree over FUSE. It is the only package that speaks FUSE or returns
// syscall.Errno: names come from package naming, file bytes from package spool, and the lifetimes of
// docs/guarantees.md (open counts, removal at last close, persisting) live here.
//
// Names: each Dir owns its entries (Dir.children, name to node). Lookup, readdir, create, link, unlink,
// rename, rmdir, the last close, --max-age and owner removal read and change only that map; a node's own
// record of its names (the links of a leaf, the parent and name of a directory) changes with it, under the
// same lock. go-fuse's Inode tree is told of each change (the bridge links the node a LOOKUP, CREATE, MKDIR
// or LINK answers, and moves or drops names after RENAME, UNLINK and RMDIR; the daemon's own removals drop
// the name with Dir.forgetChild) but is never asked what exists. It may lag or hold names tempfs no longer
// has, such as the template name go-fuse links to the entry a template CREATE or MKDIR made, or a name whose
// LOOKUP was answered just before the daemon removed it: nothing reads them, the next entry of that name
// replaces them, and they go with their node when the kernel forgets it.
//
// Lock order (every file of the package; no lock serializes all requests):
//
//	FS.renameMu  →  Dir.entriesMu (ancestor before descendant; two unrelated directories by inode number)
//	             →  leaf.stateMu  →  FS.ownMu  →  attrs.mu  →  the spool file's locks (a quota account's too)
//	             →  go-fuse's own Inode locks (inside GetChild/AddChild/RmChild)
//
// FS.background (held for reading by the reaper, owner removal and a memory cap move, for writing by a frozen
// take-over) comes before everything else. ownership.queueMu and handle.fsyncMu are leaves. What each namespace lock guards:
//
//   - Dir.entriesMu (a RWMutex) guards a directory's children and what goes with them (subdirectory count,
//     user.tempfs.created records) and the directory's own name; parent and removed are written under it
//     and also read atomically. An operation that changes a directory's entries holds its entriesMu for
//     writing; one that also changes a child directory's place (rmdir, rename, the reaper) takes that child's
//     entriesMu after its parent's. LOOKUP, READDIR and GETATTR of a directory hold only its entriesMu for
//     reading, and a reader holds one at a time and nothing else while it does: lookups, stats and listings
//     never wait for changes in other directories.
//   - FS.renameMu is taken only by a rename between two directories (as the kernel's s_vfs_rename_mutex),
//     before either directory's lock, so that no directory moves meanwhile and ancestry decides the order,
//     and by user.tempfs.path to read a path that no such rename tears.
//   - leaf.stateMu guards a leaf's links and a File's open counts and lifetime state. A goroutine holds one
//     at a time. The last close, which learns under it which name to remove, releases it and takes the
//     directory's entriesMu and then stateMu again, checking what changed.
//   - FS.ownMu guards owner tags and the ownership maps (owners.go, quota.go): under it, names are read only
//     through atomics (leaf.nlink, Dir.removed).
//   - GETATTR of a leaf takes no namespace lock: its link count is an atomic copy (leaf.nlink).
//
// No namespace lock is held across a kernel notification or a call into package owner. A function named
// ...Locked needs the locks its comment names.
package fs

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/fs/reqstats"
	"github.com/tempfs/tempfs/spool"
)

// Options configure a filesystem.
type Options struct {
	// Mountpoint is the absolute path where the tree is mounted; user.tempfs.path answers below it.
	Mountpoint string
	// Pool stores the bytes of every regular file.
	Pool *spool.Pool
	// RootMode is the permission bits of the root directory (like /tmp: 01777); 0 means 0000, the most
	// restrictive request, never a default.
	RootMode uint32
	// RootUID and RootGID own the root directory: the user who mounted.
	RootUID, RootGID uint32
	// OwnerQuota caps each owner's file data in bytes (--owner-quota; 0: no cap).
	OwnerQuota int64
	// StoreOnFUSE: the pool's store is on a FUSE filesystem. With the pool's disk cap, OwnerQuota and the
	// daemon's privilege, it decides whether disk-resident files are served by passthrough (passthrough.go).
	StoreOnFUSE bool
	// EntryTimeout and AttrTimeout are how long the kernel may cache ordinary names and attributes. Entries
	// made from templates are always answered with 0 (docs/kernel.md, Templates).
	EntryTimeout, AttrTimeout time.Duration
	// MemorySource says where the pool's memory cap came from (--memory, host RAM, a cgroup limit), for
	// status.
	MemorySource string
	// LogWhere says where the daemon's log goes (a file, the journal, stderr), for status.
	LogWhere string
	// Logger receives errors that collapse to EIO and other events worth a line.
	Logger *slog.Logger
	// MetricsAddress is where Prometheus metrics are served (host:port), shown in the status; empty when off.
	MetricsAddress string
	// PanicProbe arms a test hook: getxattr "user.tempfs.test.panic" panics inside the request, so that
	// integration tests can check that a panicking request is answered EIO and the daemon lives on.
	PanicProbe bool
}

// FS is one mounted tempfs.
type FS struct {
	opts Options
	log  *slog.Logger
	pool *spool.Pool
	root *Dir

	// renameMu serializes renames between two directories; ownMu guards owner tags and the ownership maps
	// (see the lock order above).
	renameMu sync.Mutex
	ownMu    sync.Mutex

	passthrough       atomic.Bool
	passthroughLogged atomic.Bool
	// passthroughOff says why passthrough was off from the start, for status (passthroughRule).
	passthroughOff string
	// directWrites: write-only handles bypass the FUSE page cache (FOPEN_DIRECT_IO, see bypassesPageCache).
	// Set at mount when the kernel can still mmap such files (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6).
	directWrites atomic.Bool
	started      time.Time
	counts       counters
	createdSeq   atomic.Uint64
	threads      owner.ThreadGroups // thread ids to process ids, for user.tempfs.created
	// requests counts FUSE requests by opcode (recordingFS); activity the rest of Activity.
	requests *reqstats.Recorder
	activity activityCounters
	// owners binds entries to the processes, groups, sessions or cgroups that made them (--owner); nil
	// with --owner none.
	owners *ownership
	// quota caps each owner's file data (--owner-quota); nil without.
	quota *quota
	// memorySource replaces Options.MemorySource once the cap moved while mounted (SetMemoryCap); nil before.
	memorySource atomic.Pointer[string]
	// atime is when reads and listings move atime (the mount's atime options); set before serving.
	atime atimePolicy
	// acl is whether POSIX ACLs are on: the kernel negotiated FUSE_POSIX_ACL and FUSE_DONT_MASK (see acl.go).
	acl atomic.Bool
	// nextIno is the last inode number handed out (the root's is 1); refs and handles are the numbers the
	// kernel holds (kernelrefs.go).
	nextIno atomic.Uint64
	// crash is the crash record, nil when there is none (record.go).
	crash   atomic.Pointer[crashRecord]
	refs    refTable
	handles handleTable
	// adopting is set while a new daemon rebuilds go-fuse's tables (adopt.go), before it serves; adoptedBacking
	// holds the passthrough backing ids the previous daemon gave the kernel.
	adopting       *adoption
	adoptedBacking *adoptedBacking
	// background is held for reading by work the daemon does on its own (the reaper's sweeps, owner removal,
	// a move of the memory cap), and for writing by a take-over while it describes the frozen tree.
	background sync.RWMutex
}

// backgroundWork starts work the daemon does on its own, which changes the tree: not while a take-over
// describes it (FS.background), and, with a crash record, one at a time with the requests that change it.
// The function returned ends it.
func (fsys *FS) backgroundWork() (done func()) {
	fsys.background.RLock()
	r := fsys.crash.Load()
	if r != nil {
		r.begin()
	}
	return func() {
		if r != nil {
			r.end()
		}
		fsys.background.RUnlock()
	}
}

// SetMemoryCap moves the pool's memory cap while mounted (the daemon's memory limit moved), spilling RAM files
// to disk down to it, and says why in the status from now on.
func (fsys *FS) SetMemoryCap(size int64, source string) error {
	defer fsys.backgroundWork()()
	fsys.memorySource.Store(&source)
	return fsys.pool.SetMemoryCap(size)
}

// memorySourceNow is where the memory cap in force came from.
func (fsys *FS) memorySourceNow() string {
	if s := fsys.memorySource.Load(); s != nil {
		return *s
	}
	return fsys.opts.MemorySource
}

// counters are what `tempfs status` reports about the tree.
type counters struct {
	files, dirs, others atomic.Int64
	openHandles         atomic.Int64
	templateEntries     atomic.Int64 // entries made from templates so far
	created             atomic.Int64 // entries made so far, of every kind (O_TMPFILE files too)
	ephemeralFiles      atomic.Int64 // live files that go away at last close
	bytesWritten        atomic.Int64
	passthroughOpens    atomic.Int64
}

// New builds the tree; mount it with Mount.
func New(opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	fsys := &FS{opts: opts, log: opts.Logger, pool: opts.Pool, started: time.Now(), requests: newRequestRecorder()}
	on, off := passthroughRule(opts.Pool.Config().DiskCap, opts.OwnerQuota, opts.StoreOnFUSE, syscall.Geteuid() == 0)
	fsys.passthrough.Store(on)
	fsys.passthroughOff = off
	switch {
	case opts.Pool.Config().DiskCap > 0:
		fsys.log.Info("passthrough off: with --disk the daemon must see every write to keep the cap")
	case off == ownerQuotaOff:
		fsys.log.Info("passthrough off: " + off)
	}
	fsys.setOwnerQuota(opts.OwnerQuota)
	fsys.root = &Dir{attrs: newAttrs(syscall.S_IFDIR|opts.RootMode&07777, opts.RootUID, opts.RootGID)}
	fsys.root.fs = fsys
	fsys.nextIno.Store(fuse.FUSE_ROOT_ID)
	fsys.refs.note = fsys.noteNode
	fsys.counts.dirs.Add(1)
	return fsys
}

// Root is the root node, for fusefs.NewNodeFS.
func (fsys *FS) Root() fusefs.InodeEmbedder { return fsys.root }

// caller returns the uid, gid and pid (thread id) of the process behind a request.
func caller(ctx context.Context) (uid, gid, pid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid, c.Pid
	}
	return 0, 0, 0
}

// entryTimeouts sets the cache timeouts for an ordinary entry.
func (fsys *FS) entryTimeouts(out *fuse.EntryOut) {
	out.SetEntryTimeout(fsys.opts.EntryTimeout)
	out.SetAttrTimeout(fsys.opts.AttrTimeout)
}

// node is what every node type of this package is: an InodeEmbedder with attrs and a place in the tree.
type node interface {
	fusefs.InodeEmbedder
	base() *attrs
	// getattr fills out completely (mode, owner, times, size, blocks, nlink).
	getattr(out *fuse.Attr)
	// ownerTag is the entry's owner under --owner (guarded by FS.ownMu).
	ownerTag() *ownerTag
}
