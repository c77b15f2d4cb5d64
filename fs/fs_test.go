package fs

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/naming"
	"github.com/tempfs/tempfs/spool"
)

// These tests drive the node tree through go-fuse's raw bridge (fusefs.NewNodeFS) without a kernel, so that
// go-fuse's own tree updates (such as linking a created node under the template name) happen as on a mount.

// fakeServer stands in for the kernel connection: it records delete notifications.
type fakeServer struct {
	mu      sync.Mutex
	deleted []string
}

func (s *fakeServer) DeleteNotify(parent, child uint64, name string) fuse.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted = append(s.deleted, name)
	return fuse.OK
}
func (s *fakeServer) EntryNotify(parent uint64, name string) fuse.Status           { return fuse.OK }
func (s *fakeServer) InodeNotify(node uint64, off int64, length int64) fuse.Status { return fuse.OK }
func (s *fakeServer) InodeRetrieveCache(node uint64, offset int64, dest []byte) (int, fuse.Status) {
	return 0, fuse.OK
}
func (s *fakeServer) InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status {
	return fuse.OK
}

type testTree struct {
	fsys   *FS
	raw    fuse.RawFileSystem
	server *fakeServer
}

// newTestFS is a filesystem over a pool of its own (1 MiB max-size, 64 MiB of RAM, a store in a test
// directory), with a world-writable sticky root, not yet served.
func newTestFS(tb testing.TB) *FS {
	tb.Helper()
	store, err := spool.OpenStore(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	pool, err := spool.NewPool(spool.Config{MaxSize: 1 << 20, MemoryCap: 64 << 20, Store: store})
	if err != nil {
		tb.Fatal(err)
	}
	return New(Options{Mountpoint: "/mnt", Pool: pool, RootMode: 01777, EntryTimeout: time.Second, AttrTimeout: time.Second})
}

func newTestTree(t *testing.T) *testTree {
	t.Helper()
	fsys := newTestFS(t)
	srv := &fakeServer{}
	// Wrapped as MountFS wraps it, so that the request counters move as on a mount.
	raw := &recordingFS{fs: fsys.rawFS(&fusefs.Options{ServerCallbacks: srv, NullPermissions: true}), rec: fsys.requests}
	return &testTree{fsys: fsys, raw: raw, server: srv}
}

var testCaller = fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}, Pid: 4242}

func (tt *testTree) header(node uint64) fuse.InHeader {
	return fuse.InHeader{NodeId: node, Caller: testCaller}
}

// create opens name in the root with O_CREAT and returns the entry and the file handle.
func (tt *testTree) create(t *testing.T, name string, mode uint32) fuse.CreateOut {
	t.Helper()
	in := &fuse.CreateIn{InHeader: tt.header(fuse.FUSE_ROOT_ID), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: mode}
	var out fuse.CreateOut
	if st := tt.raw.Create(nil, in, name, &out); st != fuse.OK {
		t.Fatalf("create %q: %v", name, st)
	}
	return out
}

// createClosed is create followed by the release of the handle: a file that exists and is not open.
func (tt *testTree) createClosed(t *testing.T, name string, mode uint32) fuse.CreateOut {
	t.Helper()
	out := tt.create(t, name, mode)
	tt.release(out.NodeId, out.Fh)
	return out
}

func (tt *testTree) lookup(name string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	h := tt.header(fuse.FUSE_ROOT_ID)
	st := tt.raw.Lookup(nil, &h, name, &out)
	return out, st
}

func (tt *testTree) release(node, fh uint64) {
	tt.raw.Release(nil, &fuse.ReleaseIn{InHeader: tt.header(node), Fh: fh})
}

// names lists the root as readdir answers it, without "." and "..".
func (tt *testTree) names(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, e := range tt.fsys.root.listing() {
		if e.Name != "." && e.Name != ".." {
			names = append(names, e.Name)
		}
	}
	return names
}

func TestTemplateCreate(t *testing.T) {
	tt := newTestTree(t)
	out := tt.create(t, "jobXXXXXX.txt", 0o666)
	// Entry timeout 0, or the kernel keeps the template name bound to this file (docs/kernel.md, Templates).
	if out.EntryTimeout() != 0 {
		t.Errorf("template entry timeout = %v, want 0", out.EntryTimeout())
	}
	if perm := out.Attr.Mode & 07777; perm != 0o600 {
		t.Errorf("mode = %o, want 0600 whatever was asked", perm)
	}
	if out.Attr.Uid != testCaller.Uid || out.Attr.Gid != testCaller.Gid {
		t.Errorf("owner = %d:%d, want the caller's", out.Attr.Uid, out.Attr.Gid)
	}
	names := tt.names(t)
	if len(names) != 1 || !strings.HasPrefix(names[0], "job") || !strings.HasSuffix(names[0], ".txt") || naming.IsTemplate(names[0]) {
		t.Fatalf("readdir = %q, want one generated job??????.txt name and no template", names)
	}
	if _, st := tt.lookup("jobXXXXXX.txt"); st != fuse.ENOENT {
		t.Errorf("lookup of the template = %v, want ENOENT", st)
	}
	e, st := tt.lookup(names[0])
	if st != fuse.OK || e.NodeId != out.NodeId {
		t.Fatalf("lookup of %q = %v node %d, want node %d", names[0], st, e.NodeId, out.NodeId)
	}
	// A second open of the same file by its real name keeps it alive past the creator's close.
	var open fuse.OpenOut
	if st := tt.raw.Open(nil, &fuse.OpenIn{InHeader: tt.header(out.NodeId), Flags: syscall.O_RDONLY}, &open); st != fuse.OK {
		t.Fatal(st)
	}
	tt.release(out.NodeId, out.Fh)
	if got := tt.names(t); len(got) != 1 {
		t.Fatalf("after the first of two closes readdir = %q, want the file still there", got)
	}
	tt.release(out.NodeId, open.Fh)
	if got := tt.names(t); len(got) != 0 {
		t.Fatalf("after the last close readdir = %q, want empty", got)
	}
	if _, st := tt.lookup(names[0]); st != fuse.ENOENT {
		t.Errorf("lookup after last close = %v, want ENOENT", st)
	}
	if len(tt.server.deleted) != 1 || tt.server.deleted[0] != names[0] {
		t.Errorf("delete notifications = %q, want [%s]", tt.server.deleted, names[0])
	}
	if n := len(tt.fsys.root.Children()); n != 0 {
		t.Errorf("go-fuse tree still holds %d children (template alias leaked?)", n)
	}
	if s := tt.fsys.Stats(); s.Files != 0 || s.OpenHandles != 0 || s.RAMBytes != 0 {
		t.Errorf("stats after last close = %+v, want no files, handles or RAM", s)
	}
}

func TestTemplateRefusals(t *testing.T) {
	tt := newTestTree(t)
	for _, tc := range []struct {
		name string
		want fuse.Status
	}{
		{"aXXXXXXbXXXXXX", fuse.EINVAL},
		{strings.Repeat("a", 256), fuse.Status(syscall.ENAMETOOLONG)},
	} {
		var out fuse.CreateOut
		in := &fuse.CreateIn{InHeader: tt.header(fuse.FUSE_ROOT_ID), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o600}
		if st := tt.raw.Create(nil, in, tc.name, &out); st != tc.want {
			t.Errorf("create %q = %v, want %v", tc.name, st, tc.want)
		}
	}
}

func TestRenamePersistsTemplateFile(t *testing.T) {
	tt := newTestTree(t)
	out := tt.create(t, "XXXXXX", 0o600)
	gen := tt.names(t)[0]
	in := &fuse.RenameIn{InHeader: tt.header(fuse.FUSE_ROOT_ID), Newdir: fuse.FUSE_ROOT_ID}
	if st := tt.raw.Rename(nil, in, gen, "kept"); st != fuse.OK {
		t.Fatal(st)
	}
	tt.release(out.NodeId, out.Fh)
	if got := tt.names(t); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("after rename and close readdir = %q, want [kept]", got)
	}
}

func TestReaperSparesOpenFiles(t *testing.T) {
	tt := newTestTree(t)
	openOut := tt.create(t, "open", 0o644)
	tt.createClosed(t, "closed", 0o644)
	var mk fuse.EntryOut
	if st := tt.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: tt.header(fuse.FUSE_ROOT_ID), Mode: 0o755}, "dir", &mk); st != fuse.OK {
		t.Fatal(st)
	}
	// Nothing is old yet: a sweep at the present removes nothing.
	if n := tt.fsys.Reap(time.Hour, time.Now()); n != 0 {
		t.Fatalf("reaped %d young entries", n)
	}
	n := tt.fsys.Reap(time.Hour, time.Now().Add(2*time.Hour))
	if got := tt.names(t); n != 2 || len(got) != 1 || got[0] != "open" {
		t.Fatalf("reaped %d, left %q; want 2 reaped and only the open file left", n, got)
	}
	tt.release(openOut.NodeId, openOut.Fh)
}

// TestReaperCountsOpensAsUse: a file read from the page cache sends the daemon no READ, and relatime moves
// its atime at most daily; its opens still reach the daemon, and --max-age must count them as use.
func TestReaperCountsOpensAsUse(t *testing.T) {
	tt := newTestTree(t)
	out := tt.createClosed(t, "read-often", 0o644)
	long := uint64(time.Now().Add(-3 * time.Hour).Unix())
	set := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: tt.header(out.NodeId),
		Valid: fuse.FATTR_ATIME | fuse.FATTR_MTIME, Atime: long, Mtime: long}}
	var attr fuse.AttrOut
	if st := tt.raw.SetAttr(nil, set, &attr); st != fuse.OK {
		t.Fatal(st)
	}
	// An open and a close, with the reads in between served by the kernel's cache.
	var open fuse.OpenOut
	if st := tt.raw.Open(nil, &fuse.OpenIn{InHeader: tt.header(out.NodeId), Flags: syscall.O_RDONLY}, &open); st != fuse.OK {
		t.Fatal(st)
	}
	tt.release(out.NodeId, open.Fh)
	if n := tt.fsys.Reap(time.Hour, time.Now()); n != 0 {
		t.Fatalf("reaped %d: a file opened just now, with atime and mtime 3 hours old", n)
	}
	if n := tt.fsys.Reap(time.Hour, time.Now().Add(2*time.Hour)); n != 1 {
		t.Fatalf("reaped %d two hours after its last open, want 1", n)
	}
}

// TestCrossDirectoryRenames: renames between directories, both ways at once, of directories and of a directory
// into its own subtree, beside lookups, stats and listings of the same directories. Without a global lock
// these take two directories' locks: the order (ancestor first, else by inode number) must never deadlock,
// and a directory never moves below itself.
func TestCrossDirectoryRenames(t *testing.T) {
	tt := newTestTree(t)
	mkdir := func(parent uint64, name string) uint64 {
		t.Helper()
		var out fuse.EntryOut
		if st := tt.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: tt.header(parent), Mode: 0o755}, name, &out); st != fuse.OK {
			t.Fatalf("mkdir %q: %v", name, st)
		}
		return out.NodeId
	}
	a := mkdir(fuse.FUSE_ROOT_ID, "a")
	b := mkdir(fuse.FUSE_ROOT_ID, "b")
	x := mkdir(a, "x")
	mkdir(x, "deep")
	mkdir(b, "y")
	rename := func(from uint64, name string, to uint64, newName string) fuse.Status {
		in := &fuse.RenameIn{InHeader: tt.header(from), Newdir: to}
		return tt.raw.Rename(nil, in, name, newName)
	}
	// Moving a below its own child x fails whichever directory holds x now.
	if st := rename(fuse.FUSE_ROOT_ID, "a", x, "a"); st != fuse.EINVAL {
		t.Fatalf("rename of a below a/x = %v, want EINVAL", st)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, mv := range []struct {
		p, q       uint64
		name, back string
	}{{a, b, "x", "x"}, {b, a, "y", "y"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				if rename(mv.p, mv.name, mv.q, mv.back) == fuse.OK {
					rename(mv.q, mv.back, mv.p, mv.name)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 300 {
			// a below b and back, while x and y travel between them; and b below x, which fails
			// whenever x is in b.
			if rename(fuse.FUSE_ROOT_ID, "a", b, "a") == fuse.OK {
				rename(b, "a", fuse.FUSE_ROOT_ID, "a")
			}
			if rename(fuse.FUSE_ROOT_ID, "b", x, "b") == fuse.OK {
				rename(x, "b", fuse.FUSE_ROOT_ID, "b")
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 300 {
			for _, n := range []uint64{fuse.FUSE_ROOT_ID, a, b, x} {
				var attr fuse.AttrOut
				tt.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: tt.header(n)}, &attr)
				var e fuse.EntryOut
				h := tt.header(n)
				tt.raw.Lookup(nil, &h, "x", &e)
			}
		}
	}()
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("renames between directories did not finish: deadlock")
	}
	// Every directory is where one of the moves left it, once: two entries at the root, nlink right.
	var attr fuse.AttrOut
	if st := tt.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: tt.header(fuse.FUSE_ROOT_ID)}, &attr); st != fuse.OK {
		t.Fatal(st)
	}
	if names := tt.names(t); len(names) != 2 || attr.Nlink != 4 {
		t.Errorf("root lists %q with nlink %d, want a and b and nlink 4", names, attr.Nlink)
	}
}
