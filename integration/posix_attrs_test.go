package integration

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// makeNode makes an entry of the given kind at path: file, fifo, socket, char (a device node), symlink or dir.
func makeNode(t testing.TB, kind, path string) {
	t.Helper()
	var err error
	switch kind {
	case "file":
		err = os.WriteFile(path, []byte("data"), 0o644)
	case "fifo":
		err = syscall.Mkfifo(path, 0o644)
	case "socket":
		err = syscall.Mknod(path, syscall.S_IFSOCK|0o644, 0)
	case "char":
		err = syscall.Mknod(path, syscall.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
	case "symlink":
		err = os.Symlink("target", path)
	case "dir":
		err = os.Mkdir(path, 0o755)
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	if err != nil {
		t.Fatalf("make %s %s: %v", kind, path, err)
	}
}

func lstatOf(t testing.TB, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

// TestInodeNumberAfterAttributeChanges checks that an entry keeps its inode number through every attribute
// change (an earlier build's SETATTR reply without it made the kernel show st_ino 0 until the next lookup, which
// breaks git's index, tar and rsync -H hard-link detection, find, du and fsstress).
func TestInodeNumberAfterAttributeChanges(t *testing.T) {
	m := startMount(t)
	changes := []struct {
		name  string
		kinds []string // the kinds the change applies to
		do    func(path string) error
	}{
		{"chmod", []string{"file", "fifo", "dir"}, func(p string) error { return os.Chmod(p, 0o640) }},
		{"chown", []string{"file", "fifo", "symlink", "dir"}, func(p string) error { return os.Lchown(p, 123, 456) }},
		{"utimes", []string{"file", "fifo", "symlink", "dir"}, func(p string) error {
			ts := []unix.Timespec{{Sec: 1_000_000_000}, {Sec: 1_000_000_001}}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"truncate", []string{"file"}, func(p string) error { return os.Truncate(p, 1) }},
		{"truncate-grow", []string{"file"}, func(p string) error { return os.Truncate(p, 1<<20) }},
	}
	for _, c := range changes {
		for _, kind := range c.kinds {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				p := m.Path(c.name + "-" + kind)
				makeNode(t, kind, p)
				before := lstatOf(t, p)
				if before.Ino == 0 {
					t.Fatalf("new %s has inode number 0", kind)
				}
				if err := c.do(p); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if after := lstatOf(t, p); after.Ino != before.Ino {
					t.Errorf("st_ino %d after %s, was %d", after.Ino, c.name, before.Ino)
				}
			})
		}
	}
}

// TestChownDropsSetID checks that a chown by a non-root owner drops set-user-ID, and set-group-ID where group
// execute is set, from every non-directory, as Linux does (tempfs negotiates FUSE_HANDLE_KILLPRIV_V2, so the
// kernel leaves this to the filesystem), and that directories keep them.
func TestChownDropsSetID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run chown as another user")
	}
	m := startMount(t, "-o", "allow_other")
	openPathTo(t, m.Dir)
	const owner, group1, group2 = 65534, 65533, 65532
	for _, tc := range []struct {
		kind string
		want uint32 // permission bits after the owner's chgrp of a 06555 entry
	}{
		{"file", 0o555},
		{"fifo", 0o555},
		{"socket", 0o555},
		{"char", 0o555},
		{"dir", 0o6555},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			p := m.Path("setid-" + tc.kind)
			makeNode(t, tc.kind, p)
			if err := os.Lchown(p, owner, group1); err != nil {
				t.Fatal(err)
			}
			// syscall.Chmod, not os.Chmod: os.FileMode has its own set-ID bits and drops 06000.
			if err := syscall.Chmod(p, 0o6555); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("chgrp", "--no-dereference", "65532", p)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
				Uid: owner, Gid: group1, Groups: []uint32{group1, group2}}}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("chgrp as the owner: %v: %s", err, out)
			}
			st := lstatOf(t, p)
			if st.Gid != group2 {
				t.Errorf("gid %d, want %d", st.Gid, group2)
			}
			if got := st.Mode & 0o7777; got != tc.want {
				t.Errorf("mode %04o after the owner's chgrp of a 6555 %s, want %04o", got, tc.kind, tc.want)
			}
		})
	}
}

// TestRenameOverHardLinkMovesCtime checks that replacing one name of a multiply-linked file by rename changes
// that file's ctime, as unlink would (its link count changed).
func TestRenameOverHardLinkMovesCtime(t *testing.T) {
	m := startMount(t)
	a, b, c := m.Path("a"), m.Path("b"), m.Path("c")
	if err := os.WriteFile(a, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c, []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := lstatOf(t, a)
	// ctime has nanoseconds; make sure the clock moved past it, so that an unchanged ctime is told apart.
	for time.Since(time.Unix(before.Ctim.Unix())) < time.Millisecond {
	}
	if err := os.Rename(c, b); err != nil {
		t.Fatal(err)
	}
	after := lstatOf(t, a)
	if after.Nlink != 1 {
		t.Errorf("nlink %d after its second name was replaced, want 1", after.Nlink)
	}
	if time.Unix(after.Ctim.Unix()).Compare(time.Unix(before.Ctim.Unix())) <= 0 {
		t.Errorf("ctime %v after a rename replaced its other name, was %v", time.Unix(after.Ctim.Unix()), time.Unix(before.Ctim.Unix()))
	}
	if got, err := os.ReadFile(b); err != nil || strings.TrimSpace(string(got)) != "c" {
		t.Errorf("b reads %q, %v; want c's content", got, err)
	}
}
