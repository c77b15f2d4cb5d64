package integration

// Where programs and admins look, tempfs answers as a tmpfs does: a rewound directory handle lists the
// directory as it is now, and a set-user-ID or set-group-ID bit another user's write drops is gone for stat
// and execve at once, not after the kernel's attribute cache expires. Each case runs beside a kernel tmpfs and
// compares what the two print.

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

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
	// Without nosuid, so that execve honours set-user-ID there, as on a tempfs view without nosuid below.
	ref := mountTmpfs(t, syscall.MS_NODEV)
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

// mountinfoOf returns the source, the per-mount options and the superblock options of the mount at dir.
func mountinfoOf(t *testing.T, dir string) (source, mountOpts, superOpts string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != dir {
			continue
		}
		i := slices.Index(f, "-")
		source, mountOpts, superOpts = f[i+2], f[5], f[i+3]
	}
	if mountOpts == "" {
		t.Fatalf("%s is not in /proc/self/mountinfo", dir)
	}
	return source, mountOpts, superOpts
}

// genericSuperOpts keeps the superblock options every filesystem shows alike (ro/rw, sync, dirsync, lazytime).
func genericSuperOpts(opts string) string {
	var keep []string
	for o := range strings.SplitSeq(opts, ",") {
		if o == "ro" || o == "rw" || o == "sync" || o == "dirsync" || o == "lazytime" {
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

// TestMountAsAdminsExpect mounts with mount(8), as fstab and admins do, beside a tmpfs mounted the same way:
// `mount -t fuse.tempfs SRC DIR` with no options works and shows SRC as the source; the standard options
// (nodiratime, strictatime, sync, dirsync, lazytime, noatime) are accepted and show as on tmpfs; remount,ro
// and remount,rw work; and noatime and nodiratime are kept for reads and listings.
func TestMountAsAdminsExpect(t *testing.T) {
	coreRequireRoot(t)
	requireFUSE(t)
	// mount(8) runs /sbin/mount.fuse3 SRC DIR -o OPTS -t fuse.tempfs for a fuse.tempfs mount or remount, which
	// runs "tempfs SRC DIR -o OPTS" from the system's PATH (mount(8) resets it). The test binary is not
	// installed there: tempfs mounts go through mount.fuse3 as mount(8) calls it, with the test's PATH.
	mountFuse := mountFuse3(t)
	env := append(os.Environ(), "PATH="+filepath.Dir(tempfsBin)+":"+os.Getenv("PATH"))
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
	}
	mountCmd := func(args ...string) {
		t.Helper()
		if slices.Contains(args, "fuse.tempfs") || len(args) == 3 && isTempfsMount(t, args[2]) {
			// As mount(8) would call the helper: SRC DIR -o OPTS -t fuse.tempfs; at a remount OPTS are the
			// mount's present per-mount options with the change, "remount", and the superblock's.
			var src, dir, opts string
			if args[0] == "-o" && len(args) == 3 {
				_, mountOpts, superOpts := mountinfoOf(t, args[2])
				src, dir = "tempfs", args[2]
				change := strings.TrimPrefix(args[1], "remount,")
				rest := strings.TrimPrefix(strings.TrimPrefix(mountOpts, "rw,"), "ro,")
				super := strings.TrimPrefix(strings.TrimPrefix(superOpts, "rw,"), "ro,")
				opts = change + "," + rest + ",remount," + super
			} else {
				src, dir, opts = args[len(args)-2], args[len(args)-1], "rw"
				if i := slices.Index(args, "-o"); i >= 0 {
					opts += "," + args[i+1]
				}
			}
			run(mountFuse, src, dir, "-o", opts, "-t", "fuse.tempfs")
			return
		}
		run("mount", args...)
	}
	both := func(opts string) (tmpfsDir, tempfsDir string) {
		t.Helper()
		tmpfsDir, tempfsDir = t.TempDir(), t.TempDir()
		args := []string{}
		if opts != "" {
			args = []string{"-o", opts}
		}
		mountCmd(append(append([]string{"-t", "tmpfs"}, args...), "scratch-src", tmpfsDir)...)
		t.Cleanup(func() {
			if err := syscall.Unmount(tmpfsDir, 0); err != nil {
				_ = syscall.Unmount(tmpfsDir, syscall.MNT_DETACH)
				t.Errorf("unmount tmpfs %s: %v", tmpfsDir, err)
			}
		})
		unmountAfter(t, tempfsDir)
		mountCmd(append(append([]string{"-t", "fuse.tempfs"}, args...), "scratch-src", tempfsDir)...)
		return tmpfsDir, tempfsDir
	}

	// No options at all; the source as given.
	_, plain := both("")
	if src, _, _ := mountinfoOf(t, plain); src != "scratch-src" {
		t.Errorf("mount -t fuse.tempfs scratch-src: the source shows as %q", src)
	}

	// The standard options, as tmpfs shows them (tempfs adds nosuid,nodev: every tempfs mount has them).
	ref, m := both("nodiratime,strictatime,sync,dirsync,lazytime,noexec")
	_, refMount, refSuper := mountinfoOf(t, ref)
	_, gotMount, gotSuper := mountinfoOf(t, m)
	if want := strings.Replace(refMount, "rw,", "rw,nosuid,nodev,", 1); gotMount != want {
		t.Errorf("per-mount options %q, want %q (tmpfs: %q)", gotMount, want, refMount)
	}
	if genericSuperOpts(gotSuper) != genericSuperOpts(refSuper) {
		t.Errorf("superblock options %q, tmpfs %q", gotSuper, refSuper)
	}

	// remount,ro then remount,rw.
	for _, dir := range []string{ref, m} {
		if err := os.WriteFile(filepath.Join(dir, "before"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		mountCmd("-o", "remount,ro", dir)
		if err := os.WriteFile(filepath.Join(dir, "during"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: a write after remount,ro: %v, want EROFS", dir, err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, "before")); err != nil || string(data) != "x" {
			t.Errorf("%s: reading after remount,ro: %q, %v", dir, data, err)
		}
		mountCmd("-o", "remount,rw", dir)
		if err := os.WriteFile(filepath.Join(dir, "after"), []byte("x"), 0o644); err != nil {
			t.Errorf("%s: a write after remount,rw: %v", dir, err)
		}
	}
	if _, opts, _ := mountinfoOf(t, m); !strings.Contains(opts, "nosuid,nodev") || !strings.HasPrefix(opts, "rw,") {
		t.Errorf("after remount,rw the tempfs mount has %q; want rw, nosuid and nodev kept", opts)
	}

	// noatime and nodiratime: a read and a listing leave atime where it was, as on tmpfs.
	const script = `
echo data > f; mkdir d; touch d/x
touch -a -d @946684800 f d
cat f > /dev/null; ls d > /dev/null
for n in f d; do if [ "$(stat -c %X $n)" = 946684800 ]; then echo "$n atime stays"; else echo "$n atime moved"; fi; done
`
	for _, opts := range []string{"noatime", "nodiratime", "relatime"} {
		ref, m := both(opts)
		want, got := sh(t, ref, script), sh(t, m, script)
		if got != want {
			t.Errorf("-o %s: tempfs\n%s\ntmpfs\n%s", opts, got, want)
		}
	}
}

// mountFuse3 is mount.fuse3, which mount(8) runs for fuse.TYPE mounts; the test fails without it in CI.
func mountFuse3(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no mount.fuse3 (apt-get install fuse3), and CI=true forbids skipping")
	}
	t.Skip("no mount.fuse3")
	return ""
}

// isTempfsMount reports whether dir is a fuse.tempfs mount.
func isTempfsMount(t *testing.T, dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); len(f) > 4 && f[4] == dir && i > 0 && i+1 < len(f) {
			return f[i+1] == "fuse.tempfs"
		}
	}
	return false
}

// TestBirthTime: statx reports a birth time (stat %W) for files, directories and symlinks, which later writes
// and attribute changes leave alone, as on tmpfs.
func TestBirthTime(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t)
	const script = `
echo a > f; mkdir d; ln -s f l
for n in f d l; do
  b=$(stat -c %W $n); m=$(stat -c %Y $n)
  if [ "$b" -gt 0 ] && [ "$b" -le "$(date +%s)" ]; then echo "$n birth time present"; else echo "$n birth time $b"; fi
done
b=$(stat -c %.9W f)
echo more >> f; chmod 600 f; touch -d @1000000000 f
if [ "$(stat -c %.9W f)" = "$b" ]; then echo "f birth time unchanged"; else echo "f birth time changed"; fi
`
	want, got := sh(t, ref, script), sh(t, m.Dir, script)
	t.Logf("tmpfs:\n%s", want)
	if got != want {
		t.Errorf("tempfs:\n%s\ntmpfs:\n%s", got, want)
	}
}

// TestFileFlags: chattr and lsattr work, and append-only, immutable and noatime are enforced as on tmpfs: the
// kernel keeps no flags for a FUSE inode, so the daemon refuses what the VFS refuses on tmpfs.
func TestFileFlags(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t)
	const script = `
echo data > a; echo data > i; mkdir d; echo x > d/f; echo y > k; echo z > n
chattr +a a; chattr +i i; chattr +i d; chattr +d k; chattr +A n
lsattr -d a i d k n | sed 's/ .*\// /'
if chattr +c k 2>/dev/null; then echo "chattr +c ok"; else echo "chattr +c refused"; fi
python3 - <<'PY'
import os
from tfsops import *
def opn(p, fl):
    os.close(os.open(p, fl))
for p in ("a", "i"):
    t(p + " open read", opn, p, os.O_RDONLY)
    t(p + " open write", opn, p, os.O_WRONLY)
    t(p + " open append", opn, p, os.O_WRONLY | os.O_APPEND)
    t(p + " open append trunc", opn, p, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
    t(p + " truncate", os.truncate, p, 1)
    t(p + " chmod", os.chmod, p, 0o600)
    t(p + " utime now", os.utime, p, None)
    t(p + " utime explicit", os.utime, p, (1000, 1000))
    t(p + " setxattr", os.setxattr, p, "user.x", b"1")
    t(p + " link", os.link, p, p + ".link")
    t(p + " rename", os.rename, p, p + ".moved")
    t(p + " unlink", os.unlink, p)
fd = os.open("a", os.O_WRONLY | os.O_APPEND)
os.write(fd, b"more\n"); os.close(fd)
print("a holds", open("a").read().split())
t("d create", opn, "d/new", os.O_WRONLY | os.O_CREAT)
t("d mkdir", os.mkdir, "d/sub")
t("d unlink", os.unlink, "d/f")
t("d rename out", os.rename, "d/f", "f2")
t("d write inside", lambda: open("d/f", "a").write("more"))
os.utime("n", (1000, 1000))
open("n").read()
print("n atime kept", os.stat("n").st_atime == 1000)
PY
chattr -a a; chattr -i i d
`
	want, _ := coreRunScript(t, ref, script)
	got, _ := coreRunScript(t, m.Dir, script)
	t.Logf("tmpfs:\n%s", want)
	if got != want {
		t.Errorf("tempfs differs from tmpfs:\ntempfs:\n%s\ntmpfs:\n%s", got, want)
	}
	// Where tmpfs refuses fcntl(F_SETFL) clearing O_APPEND, tempfs cannot (the kernel alone sees it); the
	// write before the end that it would allow is refused instead.
	out, _ := coreRunScript(t, m.Dir, `
echo data > ap; chattr +a ap
python3 - <<'PY'
import fcntl, os
from tfsops import *
fd = os.open("ap", os.O_WRONLY | os.O_APPEND)
fcntl.fcntl(fd, fcntl.F_SETFL, 0)
t("pwrite at 0", os.pwrite, fd, b"X", 0)
os.close(fd)
print("ap holds", open("ap").read().split())
PY
chattr -a ap
`)
	if out != "pwrite at 0 EPERM\nap holds ['data']\n" {
		t.Errorf("a write before the end of an append-only file after F_SETFL cleared O_APPEND:\n%s", out)
	}
}

// TestRenameWhiteout: renameat2(RENAME_WHITEOUT) moves the entry and leaves a 0:0 character device at the old
// name, listed before anything looked it up, removable, and counted by rmdir, as on tmpfs (overlayfs uses it
// on its upper directory).
func TestRenameWhiteout(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t)
	const script = `
mkdir d; echo a > d/f; echo b > d/g
python3 - <<'PY'
import os
from tfsops import *
RENAME_WHITEOUT = 4
t("whiteout rename", renameat2, "d/f", "d/f2", RENAME_WHITEOUT)
print("listed", sorted(os.listdir("d")))
t("whiteout noreplace over an entry", renameat2, "d/g", "d/f2", RENAME_WHITEOUT | RENAME_NOREPLACE)
t("whiteout and exchange", renameat2, "d/g", "d/f2", RENAME_WHITEOUT | RENAME_EXCHANGE)
t("create over the whiteout", lambda: os.close(os.open("d/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)))
t("rmdir with a whiteout", os.rmdir, "d")
PY
stat -c '%n %F %t:%T %a %h %s' d/f d/f2
cat d/f2
rm d/f; ls d
`
	want, _ := coreRunScript(t, ref, script)
	got, _ := coreRunScript(t, m.Dir, script)
	t.Logf("tmpfs:\n%s", want)
	if got != want {
		t.Errorf("tempfs differs from tmpfs:\ntempfs:\n%s\ntmpfs:\n%s", got, want)
	}
}
