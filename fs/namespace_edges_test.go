package fs

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/owner"
)

// TestLinkEdges: LINK refuses a template name and a directory, gives an O_TMPFILE file its first name once
// (never one made with O_EXCL), and counts the links in GETATTR.
func TestLinkEdges(t *testing.T) {
	b := newBridge(t)
	root := uint64(fuse.FUSE_ROOT_ID)
	f, st := b.create(root, "f", 0, b.pid)
	if st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.link(f.NodeId, root, "aXXXXXX", b.pid); st != fuse.EINVAL {
		t.Errorf("link to a template name = %v, want EINVAL", st)
	}
	dir := b.mustMkdir(t, root, "dir")
	if _, st := b.link(dir, root, "dirlink", b.pid); st != fuse.EPERM {
		t.Errorf("link to a directory = %v, want EPERM", st)
	}
	if _, st := b.link(f.NodeId, dir, "g", b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	if attr, _ := b.getattr(f.NodeId); attr.Nlink != 2 {
		t.Errorf("nlink after link = %d, want 2", attr.Nlink)
	}
	tmp, st := b.tmpfile(root, 0, b.pid)
	if st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.link(tmp.NodeId, root, "named", b.pid); st != fuse.OK {
		t.Fatalf("first link of an O_TMPFILE file = %v", st)
	}
	if st := b.unlink(root, "named"); st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.link(tmp.NodeId, root, "again", b.pid); st != fuse.Status(syscall.ENOENT) {
		t.Errorf("link of a file that lost its only name = %v, want ENOENT", st)
	}
	excl, st := b.tmpfile(root, syscall.O_EXCL, b.pid)
	if st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.link(excl.NodeId, root, "never", b.pid); st != fuse.Status(syscall.ENOENT) {
		t.Errorf("link of an O_TMPFILE|O_EXCL file = %v, want ENOENT", st)
	}
	b.release(tmp.NodeId, tmp.Fh)
	b.release(excl.NodeId, excl.Fh)
	b.release(f.NodeId, f.Fh)
	if s := b.fsys.Stats(); s.Files != 1 || s.OpenHandles != 0 {
		t.Errorf("stats: %d files, %d handles; want 1 (f with two names) and 0", s.Files, s.OpenHandles)
	}
}

// TestRenameAndRmdirEdges: a rename refuses a template target and a non-directory as new parent; rmdir of
// a file is ENOTDIR; mknod refuses an unknown type.
func TestRenameAndRmdirEdges(t *testing.T) {
	b := newBridge(t)
	root := uint64(fuse.FUSE_ROOT_ID)
	f, st := b.create(root, "f", 0, b.pid)
	if st != fuse.OK {
		t.Fatal(st)
	}
	b.release(f.NodeId, f.Fh)
	if st := b.rename(root, "f", root, "gXXXXXX", 0, b.pid); st != fuse.EINVAL {
		t.Errorf("rename to a template name = %v, want EINVAL", st)
	}
	if st := b.rename(root, "f", f.NodeId, "g", 0, b.pid); st != fuse.Status(syscall.EXDEV) && st != fuse.Status(syscall.ENOTDIR) {
		t.Errorf("rename into a file = %v, want EXDEV or ENOTDIR", st)
	}
	if st := b.rmdir(root, "f"); st != fuse.Status(syscall.ENOTDIR) {
		t.Errorf("rmdir of a file = %v, want ENOTDIR", st)
	}
	if _, st := b.mknod(root, "sock", syscall.S_IFSOCK, b.pid); st != fuse.OK {
		t.Errorf("mknod of a socket = %v", st)
	}
	if _, st := b.mknod(root, "bad", 0o170000, b.pid); st != fuse.EINVAL {
		t.Errorf("mknod of an unknown type = %v, want EINVAL", st)
	}
	if _, st := b.mknod(root, "tXXXXXX", syscall.S_IFIFO, b.pid); st != fuse.EINVAL {
		t.Errorf("mknod of a template name = %v, want EINVAL", st)
	}
}

// TestTmpfileEdges: an O_TMPFILE file in a removed directory is refused, and one made under --owner-quota
// is charged to its creator's owner while it has no name (a write past the quota fails with EDQUOT).
func TestTmpfileEdges(t *testing.T) {
	b := newBridge(t)
	root := uint64(fuse.FUSE_ROOT_ID)
	dir := b.mustMkdir(t, root, "gone")
	if st := b.rmdir(root, "gone"); st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.tmpfile(dir, 0, b.pid); st != fuse.Status(syscall.ENOENT) {
		t.Errorf("O_TMPFILE in a removed directory = %v, want ENOENT", st)
	}

	if err := b.fsys.WatchOwners(owner.Process); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.fsys.StopOwners)
	b.fsys.setOwnerQuota(8 << 10)
	creator := ownerProcess(t)
	tmp, st := b.tmpfile(root, 0, uint32(creator.Process.Pid))
	if st != fuse.OK {
		t.Fatal(st)
	}
	write := func(size int) fuse.Status {
		in := &fuse.WriteIn{InHeader: b.hdr(tmp.NodeId, uint32(creator.Process.Pid)), Fh: tmp.Fh, Size: uint32(size)}
		_, st := b.raw.Write(nil, in, make([]byte, size))
		return st
	}
	if st := write(4 << 10); st != fuse.OK {
		t.Errorf("a write within the quota = %v", st)
	}
	if st := write(16 << 10); st != fuse.Status(syscall.EDQUOT) {
		t.Errorf("a write past the creator's quota to a file without a name = %v, want EDQUOT", st)
	}
	b.release(tmp.NodeId, tmp.Fh)
}
