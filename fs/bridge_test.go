package fs

import (
	"sort"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// bridge drives a filesystem only through go-fuse's raw bridge (fusefs.NewNodeFS), as the kernel would, without
// a kernel: no directory lock serializes the requests, so concurrent requests meet in tempfs's own locking.
// The namespace model test, the exclusive-create test and the bridge benchmarks use nothing else (the
// answers, GETATTR, READDIR and Stats), so that they hold for any internal shape of the namespace.
type bridge struct {
	fsys *FS
	raw  fuse.RawFileSystem
	pid  uint32 // the caller's process id in requests made with hdr
}

// quietServer stands in for the kernel connection: it accepts every notification.
type quietServer struct{}

func (quietServer) DeleteNotify(parent, child uint64, name string) fuse.Status   { return fuse.OK }
func (quietServer) EntryNotify(parent uint64, name string) fuse.Status           { return fuse.OK }
func (quietServer) InodeNotify(node uint64, off int64, length int64) fuse.Status { return fuse.OK }
func (quietServer) InodeNotifyStoreCache(node uint64, off int64, data []byte) fuse.Status {
	return fuse.OK
}
func (quietServer) InodeRetrieveCache(node uint64, off int64, dest []byte) (int, fuse.Status) {
	return 0, fuse.OK
}

func newBridge(tb testing.TB) *bridge {
	tb.Helper()
	fsys := newTestFS(tb)
	raw := fsys.rawFS(&fusefs.Options{ServerCallbacks: quietServer{}, NullPermissions: true})
	return &bridge{fsys: fsys, raw: raw, pid: 4242}
}

func (b *bridge) hdr(node uint64, pid uint32) fuse.InHeader {
	return fuse.InHeader{NodeId: node, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}, Pid: pid}}
}

func (b *bridge) create(dir uint64, name string, flags uint32, pid uint32) (fuse.CreateOut, fuse.Status) {
	in := &fuse.CreateIn{InHeader: b.hdr(dir, pid), Flags: syscall.O_RDWR | syscall.O_CREAT | flags, Mode: 0o644}
	var out fuse.CreateOut
	st := b.raw.Create(nil, in, name, &out)
	return out, st
}

func (b *bridge) tmpfile(dir uint64, flags uint32, pid uint32) (fuse.CreateOut, fuse.Status) {
	in := &fuse.CreateIn{InHeader: b.hdr(dir, pid), Flags: syscall.O_RDWR | flags, Mode: 0o644}
	var out fuse.CreateOut
	st := b.raw.Tmpfile(nil, in, &out)
	return out, st
}

func (b *bridge) mkdir(dir uint64, name string, pid uint32) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	st := b.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: b.hdr(dir, pid), Mode: 0o755}, name, &out)
	return out, st
}

// mustMkdir makes directory name in dir as the bridge's caller and returns its node id; it fails the test
// otherwise.
func (b *bridge) mustMkdir(tb testing.TB, dir uint64, name string) uint64 {
	tb.Helper()
	out, st := b.mkdir(dir, name, b.pid)
	if st != fuse.OK {
		tb.Fatalf("mkdir %q: %v", name, st)
	}
	return out.NodeId
}

func (b *bridge) mknod(dir uint64, name string, mode uint32, pid uint32) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	st := b.raw.Mknod(nil, &fuse.MknodIn{InHeader: b.hdr(dir, pid), Mode: mode | 0o644}, name, &out)
	return out, st
}

func (b *bridge) link(target, dir uint64, name string, pid uint32) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	st := b.raw.Link(nil, &fuse.LinkIn{InHeader: b.hdr(dir, pid), Oldnodeid: target}, name, &out)
	return out, st
}

func (b *bridge) unlink(dir uint64, name string) fuse.Status {
	h := b.hdr(dir, b.pid)
	return b.raw.Unlink(nil, &h, name)
}

func (b *bridge) rmdir(dir uint64, name string) fuse.Status {
	h := b.hdr(dir, b.pid)
	return b.raw.Rmdir(nil, &h, name)
}

func (b *bridge) rename(dir uint64, name string, newDir uint64, newName string, flags uint32, pid uint32) fuse.Status {
	in := &fuse.RenameIn{InHeader: b.hdr(dir, pid), Newdir: newDir, Flags: flags}
	return b.raw.Rename(nil, in, name, newName)
}

func (b *bridge) release(node, fh uint64) {
	b.raw.Release(nil, &fuse.ReleaseIn{InHeader: b.hdr(node, b.pid), Fh: fh})
}

func (b *bridge) lookup(dir uint64, name string) (fuse.EntryOut, fuse.Status) {
	var out fuse.EntryOut
	h := b.hdr(dir, b.pid)
	st := b.raw.Lookup(nil, &h, name, &out)
	return out, st
}

func (b *bridge) getattr(node uint64) (fuse.AttrOut, fuse.Status) {
	var out fuse.AttrOut
	st := b.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: b.hdr(node, b.pid)}, &out)
	return out, st
}

// readdir lists a directory as READDIR answers it, without "." and "..", sorted by name.
func (b *bridge) readdir(dir uint64) ([]fuse.DirEntry, fuse.Status) {
	var open fuse.OpenOut
	if st := b.raw.OpenDir(nil, &fuse.OpenIn{InHeader: b.hdr(dir, b.pid)}, &open); st != fuse.OK {
		return nil, st
	}
	defer b.raw.ReleaseDir(&fuse.ReleaseIn{InHeader: b.hdr(dir, b.pid), Fh: open.Fh})
	var all []fuse.DirEntry
	off := uint64(0)
	for {
		list := fuse.NewDirEntryList(make([]byte, 4096), off)
		in := &fuse.ReadIn{InHeader: b.hdr(dir, b.pid), Fh: open.Fh, Offset: off, Size: 4096}
		if st := b.raw.ReadDir(nil, in, list); st != fuse.OK {
			return nil, st
		}
		got, err := fuse.ParseDirEntries(list.Bytes())
		if err != nil || len(got) == 0 {
			break
		}
		for _, e := range got {
			if e.Name != "." && e.Name != ".." {
				all = append(all, e)
			}
		}
		off = got[len(got)-1].Off
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all, fuse.OK
}
