package fs

import (
	"context"
	"sync"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The numbers the kernel holds, kept by tempfs so that a new daemon can take a live mount over
// (docs/takeover.md): node ids, the kernel's lookup count of each node, and open handle ids.
//
//   - Node ids are inode numbers, which tempfs hands out itself (FS.newIno) and never reuses; go-fuse is told
//     to use them as node ids (Options.ExternalNodeID). A new daemon makes every node again with its number.
//   - kernelRefs counts, per node, the answers that gave the kernel its node id and the FORGETs that took them
//     back: the same count go-fuse keeps in its own table, which is not exported. Every method that hands a
//     node to go-fuse for an answer (Lookup, also for READDIRPLUS entries; Create, Mkdir, Mknod, Symlink,
//     Link, Tmpfile) counts it just before it returns; tableFS counts FORGET and LOOKUP of ".".
//   - openHandles maps the handle ids go-fuse handed the kernel to tempfs's handles. A node method that makes
//     a handle parks it under the request's cancel channel (unique among the requests in flight); tableFS
//     takes it from there once go-fuse has answered with the id.
//
// Lock order: each table's shard lock is a leaf, taken with anything or nothing held.

const refShards = 64

// refTable is the kernel's lookup count per node id, with the node.
type refTable struct {
	// note is told of each node whose count changes (FS.noteNode); nil in tests that build a table alone.
	note   func(node)
	shards [refShards]struct {
		mu    sync.Mutex
		nodes map[uint64]*kernelRef
	}
}

type kernelRef struct {
	n     node
	count uint64
}

func (t *refTable) shard(ino uint64) *struct {
	mu    sync.Mutex
	nodes map[uint64]*kernelRef
} {
	return &t.shards[ino%refShards]
}

// add counts one more reference of n, handed out in an answer.
func (t *refTable) add(n node) {
	ino := n.EmbeddedInode().StableAttr().Ino
	s := t.shard(ino)
	s.mu.Lock()
	if s.nodes == nil {
		s.nodes = make(map[uint64]*kernelRef)
	}
	if r := s.nodes[ino]; r != nil {
		r.count++
	} else {
		s.nodes[ino] = &kernelRef{n: n, count: 1}
	}
	s.mu.Unlock()
	if t.note != nil {
		t.note(n)
	}
}

// addByID counts one more reference of a node the kernel already holds (LOOKUP "." answers it by id).
func (t *refTable) addByID(ino uint64) {
	s := t.shard(ino)
	s.mu.Lock()
	var n node
	if r := s.nodes[ino]; r != nil {
		r.count++
		n = r.n
	}
	s.mu.Unlock()
	if t.note != nil && n != nil {
		t.note(n)
	}
}

// forget takes back n references of a node id (FORGET).
func (t *refTable) forget(ino, n uint64) {
	s := t.shard(ino)
	s.mu.Lock()
	var gone node
	if r := s.nodes[ino]; r != nil {
		gone = r.n
		if r.count <= n {
			delete(s.nodes, ino)
		} else {
			r.count -= n
		}
	}
	s.mu.Unlock()
	if t.note != nil && gone != nil {
		t.note(gone)
	}
}

// node is the node the kernel knows by ino, nil if it holds no lookup of it.
func (t *refTable) node(ino uint64) node {
	s := t.shard(ino)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.nodes[ino]; r != nil {
		return r.n
	}
	return nil
}

// count is the kernel's lookup count of ino.
func (t *refTable) count(ino uint64) uint64 {
	s := t.shard(ino)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.nodes[ino]; r != nil {
		return r.count
	}
	return 0
}

// set records count references of n (a node restored in a take-over).
func (t *refTable) set(n node, count uint64) {
	ino := n.EmbeddedInode().StableAttr().Ino
	s := t.shard(ino)
	s.mu.Lock()
	if s.nodes == nil {
		s.nodes = make(map[uint64]*kernelRef)
	}
	s.nodes[ino] = &kernelRef{n: n, count: count}
	s.mu.Unlock()
}

// each calls fn with every node the kernel holds and its count; fn must not use the table.
func (t *refTable) each(fn func(n node, count uint64)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, r := range s.nodes {
			fn(r.n, r.count)
		}
		s.mu.Unlock()
	}
}

// handedOut counts a reference of n and returns its Inode: how a node method ends an answer that gives the
// kernel a node id.
func (fsys *FS) handedOut(n node) *fusefs.Inode {
	fsys.refs.add(n)
	return n.EmbeddedInode()
}

// newIno is the inode number (and node id) of a new node.
func (fsys *FS) newIno() uint64 { return fsys.nextIno.Add(1) }

// stable is the go-fuse identity of a new node of file type mode.
func (fsys *FS) stable(mode uint32) fusefs.StableAttr {
	return fusefs.StableAttr{Mode: mode, Ino: fsys.newIno()}
}

// openHandle is a handle tempfs made and the kernel holds by id: a file's or a directory's.
type openHandle interface {
	fusefs.FileHandle
}

// handleTable maps handle ids to tempfs's handles, and requests in flight to the handle they made.
type handleTable struct {
	mu      sync.Mutex
	byID    map[uint64]handleEntry
	pending sync.Map // request cancel channel -> openHandle
}

// handleEntry is an open handle with the passthrough backing id the kernel was answered with (0: none).
type handleEntry struct {
	h         openHandle
	backingID int32
}

// made parks h, made by the request behind ctx, until tableFS learns its id.
func (t *handleTable) made(ctx context.Context, h openHandle) {
	if c, ok := ctx.(*fuse.Context); ok && c.Cancel != nil {
		t.pending.Store(c.Cancel, h)
	}
}

// answered files the handle the request made under the id go-fuse answered with.
func (t *handleTable) answered(fsys *FS, cancel <-chan struct{}, st fuse.Status, out *fuse.OpenOut) {
	v, ok := t.pending.LoadAndDelete(cancel)
	if !ok || !st.Ok() || out.Fh == 0 {
		return
	}
	if h, ok := v.(*handle); ok && h.passthrough && out.OpenFlags&fuse.FOPEN_PASSTHROUGH == 0 {
		fsys.attachAdopted(h.file.StableAttr().Ino, out)
	}
	t.put(out.Fh, handleEntry{h: v.(openHandle), backingID: out.BackingID})
	fsys.noteHandle(out.Fh)
}

func (t *handleTable) put(fh uint64, e handleEntry) {
	t.mu.Lock()
	if t.byID == nil {
		t.byID = make(map[uint64]handleEntry)
	}
	t.byID[fh] = e
	t.mu.Unlock()
}

// handleKnown tells whether the kernel's handle id fh is open (a re-delivered RELEASE may name one released).
func (fsys *FS) handleKnown(node, fh uint64) bool {
	fsys.handles.mu.Lock()
	_, ok := fsys.handles.byID[fh]
	fsys.handles.mu.Unlock()
	return ok
}

// released forgets a handle id.
func (t *handleTable) released(fh uint64) handleEntry {
	t.mu.Lock()
	e := t.byID[fh]
	delete(t.byID, fh)
	t.mu.Unlock()
	return e
}

// rawFS is the tree as go-fuse serves it, with the tables above kept. Node ids are tempfs's inode numbers
// (FS.newIno): small, as tmpfs hands out (go-fuse's automatic ones start at 2^63, which breaks programs built
// without large-file support: stat fails with EOVERFLOW), never reused, and known to tempfs.
func (fsys *FS) rawFS(opts *fusefs.Options) fuse.RawFileSystem {
	opts.ExternalNodeID = true
	return tableFS{RawFileSystem: fusefs.NewNodeFS(fsys.root, opts), fsys: fsys}
}

// tableFS keeps kernelRefs and the handle table in step with the answers go-fuse gives. It sits between
// recordingFS and go-fuse's bridge; every method it does not name is go-fuse's.
type tableFS struct {
	fuse.RawFileSystem
	fsys *FS
}

func (t tableFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Lookup(c, h, name, out)
	if st.Ok() && name == "." {
		t.fsys.refs.addByID(out.NodeId) // go-fuse answers it from its own table, without a node method
	}
	return st
}

func (t tableFS) Forget(nodeID, nlookup uint64) {
	t.RawFileSystem.Forget(nodeID, nlookup)
	t.fsys.refs.forget(nodeID, nlookup)
}

func (t tableFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := t.RawFileSystem.Open(c, in, out)
	t.fsys.handles.answered(t.fsys, c, st, out)
	return st
}

func (t tableFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := t.RawFileSystem.OpenDir(c, in, out)
	t.fsys.handles.answered(t.fsys, c, st, out)
	return st
}

func (t tableFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := t.RawFileSystem.Create(c, in, name, out)
	t.fsys.handles.answered(t.fsys, c, st, &out.OpenOut)
	return st
}

func (t tableFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	st := t.RawFileSystem.Tmpfile(c, in, out)
	t.fsys.handles.answered(t.fsys, c, st, &out.OpenOut)
	return st
}

func (t tableFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t.RawFileSystem.Release(c, in)
	t.fsys.releasedAdopted(t.fsys.handles.released(in.Fh))
	t.fsys.noteHandle(in.Fh)
}

func (t tableFS) ReleaseDir(in *fuse.ReleaseIn) {
	t.RawFileSystem.ReleaseDir(in)
	t.fsys.handles.released(in.Fh)
	t.fsys.noteHandle(in.Fh)
}
