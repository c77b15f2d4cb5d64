package integration

// Where programs and admins look, tempfs answers as a tmpfs does: a rewound directory handle lists the
// directory as it is now, and a set-user-ID or set-group-ID bit another user's write drops is gone for stat
// and execve at once, not after the kernel's attribute cache expires. Each case runs beside a kernel tmpfs and
// compares what the two print.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// parityTmpfs mounts a tmpfs without nosuid (so that execve honours set-user-ID there, as on a tempfs view
// without nosuid below), unmounted in Cleanup.
func parityTmpfs(t *testing.T) string {
	t.Helper()
	coreRequireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NODEV, "mode=1777"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// suidView bind-mounts dir elsewhere and clears nosuid on that view only (a per-mount flag root may change),
// so that execve there honours set-user-ID as on a filesystem mounted without nosuid.
func suidView(t *testing.T, dir string) string {
	t.Helper()
	view := t.TempDir()
	if err := syscall.Mount(dir, view, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s on %s: %v", dir, view, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(view, 0); err != nil {
			_ = syscall.Unmount(view, syscall.MNT_DETACH)
			t.Errorf("unmount %s: %v", view, err)
		}
	})
	if err := syscall.Mount("", view, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_NODEV, ""); err != nil {
		t.Fatalf("remount %s suid: %v", view, err)
	}
	return view
}

// TestRewinddirSeesNow: a directory handle that read the directory, rewound (lseek to 0, rewinddir, a second
// os.listdir of the same descriptor), lists the names made and removed since.
func TestRewinddirSeesNow(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t)
	const script = `
import ctypes, os
os.mkdir("d")
for n in ("a", "b", "c"):
    open("d/" + n, "w").close()
fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
print("first", sorted(os.listdir(fd)))
open("d/new", "w").close()
os.unlink("d/a")
print("listdir again", sorted(os.listdir(fd)))
os.rename("d/b", "d/b2")
os.lseek(fd, 0, os.SEEK_SET)
print("lseek 0", sorted(e.name for e in os.scandir(fd)))
libc = ctypes.CDLL(None)
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.rewinddir.argtypes = [ctypes.c_void_p]
libc.closedir.argtypes = [ctypes.c_void_p]
def names(dp):
    out = []
    while True:
        ent = libc.readdir(dp)
        if not ent:
            return sorted(n for n in out if n not in (".", ".."))
        # struct dirent: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
        out.append(ctypes.string_at(ent + 19).decode())
dp = libc.opendir(b"d")
print("readdir", names(dp))
open("d/later", "w").close()
os.unlink("d/c")
libc.rewinddir(dp)
print("rewinddir", names(dp))
libc.closedir(dp)
`
	var outs [2]string
	for i, dir := range []string{ref, m.Dir} {
		outs[i] = sh(t, dir, "python3 -c '"+strings.ReplaceAll(script, "'", `'"'"'`)+"'")
	}
	t.Logf("tmpfs:\n%s", outs[0])
	if outs[0] != outs[1] {
		t.Errorf("tempfs differs from tmpfs:\ntmpfs:\n%s\ntempfs:\n%s", outs[0], outs[1])
	}
}

// TestKillPrivSeenAtOnce: another user's write, O_TRUNC open, truncate and fallocate, and root's chown, drop
// set-user-ID and set-group-ID as on tmpfs, and stat (after a stat that filled the kernel's attribute cache)
// and execve see it at once. Set-group-ID without group execute goes only for a caller outside the group.
func TestKillPrivSeenAtOnce(t *testing.T) {
	ref := parityTmpfs(t)
	m := startMount(t, "-o", "allow_other")
	openPathTo(t, m.Dir)
	openPathTo(t, ref)
	const alice, bob = 60001, 60002
	id, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Fatal(err)
	}
	var outs [2]string
	for i, dir := range []string{ref, m.Dir} {
		view := dir
		if dir == m.Dir {
			view = suidView(t, m.Dir)
			openPathTo(t, view)
		}
		work := filepath.Join(dir, "killpriv")
		if err := os.Mkdir(work, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(work, 0o777); err != nil {
			t.Fatal(err)
		}
		run := func(uid uint32, script string) string {
			t.Helper()
			out, err := asUser(t, uid, uid, work, script)
			if err != nil {
				t.Fatalf("as %d in %s: %s: %v: %s", uid, work, script, err, out)
			}
			return out
		}
		// Alice's files; bob's group is not alice's. "gin" is in bob's group (root gives it), so a write
		// by bob keeps its set-group-ID.
		for _, name := range []string{"w", "t", "ctl", "ch"} {
			if err := os.WriteFile(filepath.Join(work, name), id, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{"tr", "fa", "g", "gt", "gin"} {
			if err := os.WriteFile(filepath.Join(work, name), []byte("data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for name, mode := range map[string]uint32{"w": 0o6777, "t": 0o6777, "ctl": 0o4755, "ch": 0o6755,
			"tr": 0o6777, "fa": 0o6666, "g": 0o2666, "gt": 0o2666, "gin": 0o2666} {
			gid := alice
			if name == "gin" {
				gid = bob
			}
			if err := os.Chown(filepath.Join(work, name), alice, gid); err != nil {
				t.Fatal(err)
			}
			// chmod(2) itself: os.Chmod takes the set-ID bits as os.FileMode flags, not octal.
			if err := syscall.Chmod(filepath.Join(work, name), mode); err != nil {
				t.Fatal(err)
			}
		}
		var b strings.Builder
		// Bob stats every file first, so that the kernel caches their attributes for his later stats.
		b.WriteString(run(bob, `stat -c '%n %a' w t ctl ch tr fa g gt gin`) + "\n")
		b.WriteString(run(bob, `
			printf '\177' | dd of=w bs=1 count=1 conv=notrunc 2>/dev/null
			: > t
			truncate -s 4 tr
			fallocate -l 8192 fa
			echo more >> g
			truncate -s 0 gt
			echo more >> gin
			stat -c '%n %a' w t tr fa g gt gin`) + "\n")
		if err := os.Chown(filepath.Join(work, "ch"), alice, alice); err != nil {
			t.Fatal(err)
		}
		b.WriteString(run(bob, `stat -c '%n %a' ch`) + "\n")
		// execve on the view without nosuid: ctl keeps set-user-ID (alice's uid), w lost it (bob's).
		b.WriteString(run(bob, `echo "ctl euid $(`+filepath.Join(view, "killpriv", "ctl")+` -u)"; echo "w euid $(`+filepath.Join(view, "killpriv", "w")+` -u)"`) + "\n")
		outs[i] = b.String()
	}
	t.Logf("tmpfs:\n%s", outs[0])
	if !strings.Contains(outs[0], "ctl euid 60001") || !strings.Contains(outs[0], "w euid 60002") {
		t.Fatalf("tmpfs does not show what the test expects:\n%s", outs[0])
	}
	if outs[0] != outs[1] {
		t.Errorf("tempfs differs from tmpfs:\ntmpfs:\n%s\ntempfs:\n%s", outs[0], outs[1])
	}
	coreNoDaemonComplaints(t, m.Log())
}
