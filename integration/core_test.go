package integration

// Core behaviour of ordinary names (docs/guarantees.md: From Python's tempfile to tempfs, The command line,
// Multi-user safety): every operation on a tempfs mount, driven from
// separate processes, behaves as on tmpfs. The differential test runs one table of shell scripts on a real tmpfs
// and on a tempfs mount and compares what they print; the expectations are never written down here, they are
// whatever tmpfs does. The rest covers open-but-unlinked files (POSIX) and the mount command line.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// coreRequireRoot skips a test that needs root (mounting a tmpfs); in CI that is a failure.
func coreRequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test mounts a tmpfs and needs root; CI=true forbids skipping it")
	}
	t.Skip("needs root to mount a tmpfs")
}

// coreTmpfs mounts a real tmpfs, the reference every behaviour is compared with. It is mounted nosuid,nodev like
// a FUSE mount, so that only the filesystems differ.
func coreTmpfs(t testing.TB) string {
	t.Helper()
	return mountTmpfs(t, syscall.MS_NOSUID|syscall.MS_NODEV)
}

// mountTmpfs mounts a real tmpfs with the given mount flags in a temp dir (root only), unmounted in Cleanup.
func mountTmpfs(t testing.TB, flags uintptr) string {
	t.Helper()
	coreRequireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, "mode=1777"); err != nil {
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

// tfsops is a Python module the scripts import: t() runs an operation and prints "ok" or the errno's name, so
// that errors are compared by errno rather than by message.
const tfsops = `import ctypes, errno, os, socket, stat, sys

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

def renameat2(old, new, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000

def linkat(old, new, flags):
    # os.link calls plain link(2) unless it is given directory fds; the O_TMPFILE idiom needs linkat(2).
    if _libc.linkat(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def linkfd(fd, new):
    if _libc.linkat(fd, b"", AT_FDCWD, os.fsencode(new), AT_EMPTY_PATH) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def t(label, fn, *args, **kw):
    try:
        r = fn(*args, **kw)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, e.errno))
        return None
    if r is None:
        print(label, "ok")
    else:
        print(label, "ok", r)
    return r

def create(name, data=b""):
    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)

def xlist(path, follow=True):
    # user.tempfs.* are tempfs's own names, answered but not listed; tmpfs has none.
    return sorted(n for n in os.listxattr(path, follow_symlinks=follow) if not n.startswith("user.tempfs."))
`

// corePython is the real interpreter behind python3 (a pyenv shim would search the working directory, inside
// the mount, for version files on every start).
var corePython = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return "", fmt.Errorf("python3: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

// requirePython is the python3 the scripts run with (corePython); without one the test is skipped, or fails
// under CI=true, which forbids skipping.
func requirePython(t testing.TB) string {
	t.Helper()
	python, err := corePython()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v, and CI=true forbids skipping", err)
		}
		t.Skip(err)
	}
	return python
}

// coreScriptEnv is the environment of a script: a fixed locale and zone, the tfsops module and python3 in a
// directory of the test's own.
func coreScriptEnv(t testing.TB) []string {
	t.Helper()
	python := requirePython(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tfsops.py"), []byte(tfsops), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(python, filepath.Join(dir, "python3")); err != nil {
		t.Fatal(err)
	}
	env := []string{"LC_ALL=C", "TZ=UTC", "PYTHONPATH=" + dir, "PYTHONDONTWRITEBYTECODE=1", "PATH=" + dir + ":" + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "LC_ALL", "LANG", "TZ", "PYTHONPATH", "PATH":
		default:
			env = append(env, kv)
		}
	}
	return env
}

// coreRunScript runs `sh -ec script` in dir from a separate process; it returns the combined output and exit status.
func coreRunScript(t testing.TB, dir, script string) (string, int) {
	t.Helper()
	env := coreScriptEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("script timed out in %s:\n%s\noutput:\n%s", dir, script, out)
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return string(out), 0
}

// coreSnapshot lists a case's final tree: names, types, modes, link counts, sizes, owners and link targets.
const coreSnapshot = `
echo "--- tree"
find . -mindepth 1 -printf '%p|%y|%m|%n|%s|%u|%g|%l\n' | LC_ALL=C sort
`

// coreCases are the differential cases: each runs in a fresh directory, once on tmpfs and once on tempfs, and
// must print the same (after the directory's own path is replaced by $D). Scripts print no inode numbers and
// no current times; where they need either, they compare them in the script and print the verdict.
var coreCases = []struct{ name, script string }{
	{"mkdir_p", `
mkdir -p a/b/c/d
mkdir -p a/b/c/d
mkdir -p a/b/x a/y
mkdir -m 0705 m
stat -c '%n %F %a %h %s' a a/b a/b/c a/b/c/d m
mkdir a 2>&1 || echo "rc=$?"
touch f
mkdir -p f/g 2>&1 || echo "rc=$?"
python3 - <<'EOF'
from tfsops import *
t("mkdir existing", os.mkdir, "a")
t("mkdir under file", os.mkdir, "f/x")
t("mkdir missing parent", os.mkdir, "nope/x")
t("mkdir over symlink", lambda: (os.symlink("a", "s"), os.mkdir("s")))
EOF
`},
	{"rmdir", `
mkdir -p a/b e; touch a/f
rmdir a 2>&1 || echo "rc=$?"
python3 - <<'EOF'
from tfsops import *
t("rmdir nonempty", os.rmdir, "a")
t("rmdir missing", os.rmdir, "nope")
t("rmdir file", os.rmdir, "a/f")
t("rmdir dot", os.rmdir, "e/.")
t("rmdir dotdot", os.rmdir, "a/b/..")
os.unlink("a/f")
t("rmdir with only a subdir", os.rmdir, "a")
os.symlink("e", "se")
t("rmdir symlink", os.rmdir, "se")
EOF
rmdir a/b a e
ls -A
`},
	{"redirect_cat", `
echo one > f; echo two >> f; cat f
printf x > f; cat f; echo
: > f; stat -c '%s %b' f
printf 'abc' >> new; cat new; echo
(set -C; echo clobber > new) 2>&1 || echo "rc=$?"
cat missing 2>&1 || echo "rc=$?"
exec 3>w; echo via-fd >&3; echo more >&3; exec 3>&-; cat w
seq 1 20000 > big; wc -c < big; tail -n 1 big; cat big big > big2; wc -l < big2; stat -c '%s %b' big big2
`},
	{"append_from_two_processes", `
(i=0; while [ $i -lt 200 ]; do echo "a$i" >> f; i=$((i+1)); done) &
(i=0; while [ $i -lt 200 ]; do echo "b$i" >> f; i=$((i+1)); done) &
wait
wc -l < f; LC_ALL=C sort f | cksum
`},
	{"cp", `
printf 'content\n' > a; chmod 640 a
cp a b; stat -c '%n %a %s' b; cat b
cp -p a c; stat -c '%n %a' c
mkdir d; cp a b d/; ls d
cp a a 2>&1 || echo "rc=$?"
ln -s a s; cp s t; cp -P s u; stat -c '%n %F' t u
cp -r d e; ls e
seq 1 100000 > big; cp big big2; cmp big big2 && echo same
cp --reflink=auto big big3; cmp big big3 && echo same
cp --sparse=always big big4; cmp big big4 && echo same
`},
	{"mv", `
echo 1 > a; echo 2 > b; echo 3 > c
mv a a2; ls
mv a2 b; cat b; ls
mkdir d d2 d3; touch d/in
mv d dd; ls; ls dd
mv dd d2/; ls d2 d2/dd
mv c d2/dd/c; ls d2/dd
stat -c '%n %h %s' . d2 d2/dd d3
mkdir e f; touch f/x
mv -T e f 2>&1 || echo "rc=$?"
mv -T b d3 2>&1 || echo "rc=$?"
echo h > h1; ln h1 h2
python3 - <<'EOF'
from tfsops import *
t("rename dir over nonempty dir", os.rename, "e", "f")
t("rename file over dir", os.rename, "b", "f")
t("rename dir over file", os.rename, "e", "b")
t("rename dir into itself", os.rename, "d2", "d2/dd/sub")
t("rename missing", os.rename, "nope", "x")
t("rename to itself", os.rename, "b", "b")
t("rename into missing dir", os.rename, "b", "nope/b")
t("rename dir over empty dir", os.rename, "e", "d3")
t("rename hard link onto its twin", os.rename, "h1", "h2")
print(sorted(os.listdir(".")))
EOF
stat -c '%n %h' h1 h2
echo new > n; exec 5<h2; mv n h2; cat <&5; cat h2; exec 5<&-
stat -c '%n %h %s' . d2 d2/dd
`},
	{"renameat2", `
echo A > a; echo B > b; mkdir d; touch d/in; mkdir p q p/sub; touch q/f
python3 - <<'EOF'
from tfsops import *
t("noreplace onto existing", renameat2, "a", "b", RENAME_NOREPLACE)
t("noreplace onto new", renameat2, "a", "c", RENAME_NOREPLACE)
t("exchange files", renameat2, "c", "b", RENAME_EXCHANGE)
print(open("b").read().strip(), open("c").read().strip())
t("exchange file and dir", renameat2, "b", "d", RENAME_EXCHANGE)
print(os.path.isdir("b"), sorted(os.listdir("b")), open("d").read().strip())
t("exchange with missing", renameat2, "b", "zz", RENAME_EXCHANGE)
t("exchange and noreplace", renameat2, "b", "d", RENAME_EXCHANGE | RENAME_NOREPLACE)
t("noreplace dir", renameat2, "b", "x", RENAME_NOREPLACE)
t("exchange across dirs", renameat2, "p/sub", "q/f", RENAME_EXCHANGE)
print(sorted(os.listdir("p")), sorted(os.listdir("q")))
EOF
stat -c '%n %F %h %s' . p q p/sub q/f x
echo N > n; echo O > o; mv -n n o; cat o; ls n
`},
	{"ln_and_symlinks", `
echo x > a
ln a b; ln a c; stat -c '%n %h' a b c
[ "$(stat -c %i a)" = "$(stat -c %i b)" ] && echo same-inode
ln a b 2>&1 || echo "rc=$?"
rm a; stat -c '%n %h' b c; cat c
echo y >> b; cat c
mkdir d; ln b d/b2; stat -c '%n %h' c d/b2
ln -s b s; readlink s; cat s; stat -c '%n %F %s %h' s
ln -s /no/such/target dangling; readlink dangling; cat dangling 2>&1 || echo "rc=$?"
ln -s d sd; ls sd/; readlink -f sd/b2
ln -sf c s; readlink s
ln -P s hs; stat -c '%n %F %h' s hs
ln -s "$(python3 -c 'print("t" * 4000)')" longtarget; readlink longtarget | wc -c; stat -c '%s' longtarget
python3 - <<'EOF'
from tfsops import *
t("link dir", os.link, "d", "d3")
t("link missing", os.link, "zz", "q")
t("link onto existing", os.link, "b", "c")
t("readlink of a file", os.readlink, "c")
t("symlink onto existing", os.symlink, "x", "c")
t("symlink loop", lambda: (os.symlink("loop2", "loop1"), os.symlink("loop1", "loop2"), open("loop1")))
t("open via dangling", open, "dangling")
EOF
`},
	{"unlink_open_file", `
echo data > f
exec 3<f
rm f
cat <&3
ls -A
stat -L -c '%h %s' /proc/self/fd/3
echo rw > g
exec 4<>g
rm g
echo more >&4
cat /proc/self/fd/4
stat -L -c '%h %s' /proc/self/fd/4
exec 3<&- 4>&-
ls -A
`},
	{"chmod", `
touch f
for m in 0 644 600 755 4755 2755 1755 7777 0; do chmod $m f; stat -c '%a %A' f; done
mkdir d
for m in 700 1777 2755 3777 0 755; do chmod $m d; stat -c '%a %A' d; done
chmod u+s,g+s,o+t f; stat -c '%a %A' f
chmod 4755 f; chown nobody f; stat -c '%a %U' f
chmod 2755 f; chown :nogroup f; stat -c '%a %G' f
chmod 2745 f; chown root f; stat -c '%a %U' f
chmod 6755 d; chown nobody d; stat -c '%a %U' d
ln -s f s; chmod 600 s; stat -c '%n %a' f s
`},
	{"setgid_dir", `
mkdir g; chown root:nogroup g; chmod 2775 g
mkdir g/d; mkdir -m 0700 g/m; touch g/f; mkfifo g/p; ln -s f g/l; mkdir -p g/d/e/f2; printf x > g/w
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("g/sock")'
stat -c '%n %A %U %G' g g/d g/m g/f g/p g/l g/d/e g/d/e/f2 g/w g/sock
chmod g-s g; mkdir g/after; touch g/after-f; stat -c '%n %A %U %G' g/after g/after-f
`},
	{"chown", `
touch f; mkdir d; touch d/in; ln -s f s
chown nobody:nogroup f; stat -c '%n %U %G' f
chown :root f; stat -c '%n %U %G' f
chown 1234:5678 f; stat -c '%n %u %g' f
chown -h nobody:nogroup s; stat -c '%n %U %G' s f
chown root:root s; stat -c '%n %U %G' s f
chown -R nobody:nogroup d; stat -c '%n %U %G' d d/in
`},
	{"touch_times", `
touch -d '2001-02-03 04:05:06.123456789' f; stat -c '%x | %y' f
touch -m -d '2010-01-01 00:00:00.5' f; stat -c '%x | %y' f
touch -a -d '2011-06-07 08:09:10' f; stat -c '%x | %y' f
touch -d '1970-01-01 00:00:00' f; stat -c '%x | %y' f
touch -d '1969-12-31 23:59:58.25' f; stat -c '%x | %y' f
touch -d '1901-12-13 20:45:52' f; stat -c '%x | %y' f
touch -d '2038-01-19 03:14:08' f; stat -c '%x | %y' f
touch -d '2300-01-01 00:00:00' f; stat -c '%x | %y' f
mkdir d; touch -d '2002-02-02 02:02:02' d; stat -c '%n %y' d
ln -s f s; touch -h -d '2003-03-03 03:03:03.3' s; stat -c '%n %y' s
touch -d '2004-04-04 04:04:04' f; touch -r f g; stat -c '%n %x | %y' g
python3 - <<'EOF'
from tfsops import *
os.utime("f", ns=(1, 999999999))
st = os.stat("f"); print(st.st_atime_ns, st.st_mtime_ns)
os.utime("f", ns=(1234567890123456789, 987654321987654321))
st = os.stat("f"); print(st.st_atime_ns, st.st_mtime_ns)
EOF
`},
	{"times_moved_by_operations", `
python3 - <<'EOF'
from tfsops import *
OLD = (946684800000000000, 978307200000000000)  # atime 2000, mtime 2001: atime older than mtime (relatime)
def moved(path, what, fn, *args):
    os.utime(path, ns=OLD, follow_symlinks=False)
    fn(*args)
    st = os.lstat(path)
    print(what + ":", "atime moved" if st.st_atime_ns != OLD[0] else "atime kept",
          "mtime moved" if st.st_mtime_ns != OLD[1] else "mtime kept")
def append(path, data):
    with open(path, "ab") as f:
        f.write(data)
def read(path):
    with open(path, "rb") as f:
        f.read()
def fallocate(path, off, length):
    fd = os.open(path, os.O_RDWR)
    os.posix_fallocate(fd, off, length)
    os.close(fd)
os.mkdir("d"); create("f", b"data")
moved("d", "create in d", create, "d/new")
moved("d", "mkdir in d", os.mkdir, "d/sub")
moved("d", "symlink in d", os.symlink, "x", "d/l")
moved("d", "link in d", os.link, "f", "d/hl")
moved("d", "mkfifo in d", os.mkfifo, "d/p")
moved("d", "rename within d", os.rename, "d/new", "d/new2")
moved("d", "rename out of d", os.rename, "d/new2", "out")
moved("d", "rename into d", os.rename, "out", "d/in")
moved("d", "unlink in d", os.unlink, "d/in")
moved("d", "rmdir in d", os.rmdir, "d/sub")
moved("d", "write in d", append, "d/hl", b"x")
moved("d", "chmod d", os.chmod, "d", 0o700)
moved("d", "setxattr d", os.setxattr, "d", "user.x", b"1")
moved("d", "stat d", os.stat, "d")
moved("d", "listdir d", os.listdir, "d")
moved("d/l", "readlink", os.readlink, "d/l")
moved("f", "stat f", os.stat, "f")
moved("f", "append f", append, "f", b"more")
moved("f", "read f", read, "f")
moved("f", "truncate f", os.truncate, "f", 2)
moved("f", "truncate f to its size", os.truncate, "f", 2)
moved("f", "open f O_TRUNC", lambda: open("f", "wb").close())
moved("f", "open empty f O_TRUNC", lambda: open("f", "wb").close())
moved("f", "fallocate f", fallocate, "f", 0, 8192)
moved("f", "chmod f", os.chmod, "f", 0o600)
moved("f", "chown f", os.chown, "f", 0, 0)
moved("f", "link f", os.link, "f", "f2")
moved("f", "rename a link of f", os.rename, "f2", "f3")
moved("f", "setxattr f", os.setxattr, "f", "user.y", b"2")
EOF
`},
	{"truncate", `
printf 'hello world' > f
truncate -s 5 f; cat f; echo; stat -c '%s' f
truncate -s 20 f; stat -c '%s %b' f; od -An -c f
truncate -s +4K f; stat -c '%s %b' f
truncate -s -4090 f; stat -c '%s %b' f
truncate -s 0 f; stat -c '%s %b' f
truncate -s 3M f; stat -c '%s %b' f
printf end >> f; stat -c '%s' f; tail -c 3 f; echo
truncate -s 1K f; stat -c '%s %b' f; cksum < f
truncate -s 10 new; stat -c '%s' new
python3 - <<'EOF'
from tfsops import *
t("truncate dir", os.truncate, ".", 0)
t("truncate negative", os.truncate, "f", -1)
t("truncate missing", os.truncate, "nope", 1)
EOF
`},
	{"fallocate", `
fallocate -l 64K f; stat -c '%s %b' f
touch k; fallocate -n -l 128K k; stat -c '%s' k
truncate -s 256K k2; fallocate -n -o 64K -l 64K k2; stat -c '%s %b' k2
fallocate -n -o 192K -l 128K k2; stat -c '%s' k2
fallocate -p -o 4096 -l 8192 f; stat -c '%s %b' f
printf abcdefgh | dd of=f bs=1 seek=4096 conv=notrunc 2>/dev/null
od -An -c -j 4096 -N 8 f
fallocate -p -o 4096 -l 4096 f; od -An -c -j 4096 -N 8 f; stat -c '%s %b' f
fallocate -o 100 -l 10 f; stat -c '%s %b' f
fallocate -l 2M big; stat -c '%s %b' big
fallocate -p -o 0 -l 1M big; stat -c '%s %b' big
fallocate -z -l 4K f 2>&1 || echo "rc=$?"
fallocate -c -l 4K f 2>&1 || echo "rc=$?"
fallocate -i -l 4K f 2>&1 || echo "rc=$?"
fallocate -l 0 f 2>&1 || echo "rc=$?"
cksum < f; cksum < k
`},
	{"mkfifo", `
mkfifo p; mkfifo -m 600 q; stat -c '%n %F %a %s %h' p q
(echo through-fifo > p) & cat p; wait
python3 - <<'EOF'
from tfsops import *
t("mkfifo existing", os.mkfifo, "p")
t("truncate fifo", os.truncate, "p", 0)
EOF
rm p; ls
`},
	{"unix_socket", `
python3 - <<'EOF'
from tfsops import *
s = socket.socket(socket.AF_UNIX)
s.bind("sock")
s.listen(1)
st = os.lstat("sock")
print("is socket", stat.S_ISSOCK(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_nlink, st.st_size)
c = socket.socket(socket.AF_UNIX)
c.connect("sock")
a, _ = s.accept()
c.sendall(b"ping")
print(a.recv(4))
a.sendall(b"pong")
print(c.recv(4))
t("bind again", socket.socket(socket.AF_UNIX).bind, "sock")
a.close(); c.close(); s.close()
print("still there", os.path.exists("sock"))
t("connect after close", socket.socket(socket.AF_UNIX).connect, "sock")
t("open socket", open, "sock")
t("mknod socket", os.mknod, "n", stat.S_IFSOCK | 0o600)
t("mknod chr", os.mknod, "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
t("open chr on nodev", open, "null")
EOF
stat -c '%n %F %a %t %T' sock n null
`},
	{"statfs", `
stat -f -c 'namelen=%l blocksize=%s fundamental=%S' .
python3 - <<'EOF'
import os
v = os.statvfs(".")
print("namemax", v.f_namemax, "frsize", v.f_frsize, "bsize", v.f_bsize)
print("blocks>0", v.f_blocks > 0, "bfree<=blocks", v.f_bfree <= v.f_blocks, "bavail<=bfree", v.f_bavail <= v.f_bfree)
print("files>0", v.f_files > 0, "ffree<=files", v.f_ffree <= v.f_files)
EOF
`},
	{"xattrs", `
touch f; mkdir d; ln -s f s; mkfifo p
python3 - <<'EOF'
from tfsops import *
t("get missing", os.getxattr, "f", "user.a")
t("set", os.setxattr, "f", "user.a", b"1")
t("create existing", os.setxattr, "f", "user.a", b"2", os.XATTR_CREATE)
t("replace missing", os.setxattr, "f", "user.b", b"2", os.XATTR_REPLACE)
t("replace", os.setxattr, "f", "user.a", b"22", os.XATTR_REPLACE)
t("create new", os.setxattr, "f", "user.b", b"", os.XATTR_CREATE)
t("get", os.getxattr, "f", "user.a")
t("get empty", os.getxattr, "f", "user.b")
t("set binary", os.setxattr, "f", "user.bin", bytes(range(256)))
print("binary round trip", os.getxattr("f", "user.bin") == bytes(range(256)))
t("set 60000 bytes", os.setxattr, "f", "user.big", b"v" * 60000)
print("big round trip", os.getxattr("f", "user.big") == b"v" * 60000)
t("set 70000 bytes", os.setxattr, "f", "user.huge", b"v" * 70000)
t("name 255", os.setxattr, "f", "user." + "n" * 250, b"x")
t("name 256", os.setxattr, "f", "user." + "n" * 251, b"x")
t("empty name", os.setxattr, "f", "", b"x")
t("no namespace", os.setxattr, "f", "plain", b"x")
t("unknown namespace", os.setxattr, "f", "bogus.x", b"x")
t("trusted", os.setxattr, "f", "trusted.t", b"tv")
t("security", os.setxattr, "f", "security.s", b"sv")
print(xlist("f"))
t("remove", os.removexattr, "f", "user.a")
t("remove missing", os.removexattr, "f", "user.a")
t("get removed", os.getxattr, "f", "user.a")
print(xlist("f"))
t("dir set", os.setxattr, "d", "user.d", b"dv")
print(xlist("d"), os.getxattr("d", "user.d"))
t("symlink set nofollow", os.setxattr, "s", "user.l", b"lv", follow_symlinks=False)
t("symlink set follow", os.setxattr, "s", "user.viaf", b"fv")
print(xlist("f"))
t("symlink trusted nofollow", os.setxattr, "s", "trusted.l", b"lv", follow_symlinks=False)
print(xlist("s", follow=False))
t("fifo user", os.setxattr, "p", "user.p", b"pv")
t("fifo trusted", os.setxattr, "p", "trusted.p", b"pv")
fd = os.open("f", os.O_RDONLY)
t("fset", os.setxattr, fd, "user.fd", b"fdv")
t("fget", os.getxattr, fd, "user.fd")
os.close(fd)
os.link("f", "hard")
print("hard link shares", os.getxattr("hard", "user.fd"))
os.rename("f", "g")
print("rename keeps", xlist("g"))
EOF
`},
	{"long_names", `
python3 - <<'EOF'
from tfsops import *
n255, n256 = "a" * 255, "b" * 256
t("create 255", create, n255, b"255")
t("create 256", create, n256)
t("open 1024", create, "c" * 1024)
t("open 1025", create, "c" * 1025)
t("open 4000", create, "c" * 4000)
t("stat 255", lambda: os.stat(n255).st_size)
t("lookup 256", os.stat, n256)
t("lookup 255 missing", os.stat, "d" * 255)
t("mkdir 255", os.mkdir, "e" * 255)
t("mkdir 256", os.mkdir, "e" * 256)
t("file in 255 dir", create, "e" * 255 + "/" + "f" * 255, b"deep")
create("src", b"src")
t("rename to 255", os.rename, "src", "g" * 255)
t("rename to 256", os.rename, "g" * 255, "g" * 256)
t("rename from 256", os.rename, "h" * 256, "x")
t("symlink name 255", os.symlink, "target", "s" * 255)
t("symlink name 256", os.symlink, "target", "s" * 256)
t("symlink target of 255 names", os.symlink, "/".join(["t" * 255] * 4), "deep-link")
t("link name 255", os.link, n255, "l" * 255)
t("link name 256", os.link, n255, "l" * 256)
t("mkfifo 256", os.mkfifo, "p" * 256)
t("unlink 256", os.unlink, n256)
t("rmdir 256", os.rmdir, "e" * 256)
t("utf8 254 bytes", create, "\u00e9" * 127)
t("utf8 256 bytes", create, "\u00e9" * 128)
t("setxattr 256", os.setxattr, n256, "user.x", b"x")
print(sorted((len(n), os.lstat(n).st_size) for n in os.listdir(".")))
print(open("e" * 255 + "/" + "f" * 255).read())
EOF
`},
	{"non_utf8_names", `
python3 - <<'EOF'
from tfsops import *
names = [b"caf\xe9", b"\xff\xfe", b"a\x80b", b"\xc3\x28", "\u00e9t\u00e9".encode(), b"line\nbreak", b" lead", b"-dash",
         b"back\\slash", b"tab\t", b"\x01ctl", b"trail ", b"...", b"*?[", b"\xf0\x9f\x98\x80"]
for n in names:
    create(n, n)
os.mkdir(b"dir\xfe")
os.rename(b"caf\xe9", b"dir\xfe/caf\xe9-moved")
os.symlink(b"\xff\xfe", b"link\xfa")
os.link(b"a\x80b", b"hard\x80")
print(sorted(os.listdir(b".")))
print(sorted(os.listdir(b"dir\xfe")))
for n in names[1:]:
    with open(n, "rb") as f:
        assert f.read() == n, n
print(os.readlink(b"link\xfa"), open(b"link\xfa", "rb").read())
print(sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(b".")))
EOF
ls -b | LC_ALL=C sort
`},
	{"dir_nlink_and_size", `
mkdir d; stat -c '%h %s' d
mkdir d/a d/b d/c; stat -c '%h %s' d
touch d/f d/g; ln -s x d/l; mkfifo d/p; stat -c '%h %s' d
ln d/f d/f2; stat -c '%h %s' d
rmdir d/a; stat -c '%h %s' d
mv d/b d/c/; stat -c '%n %h %s' d d/c
mv d/c/b d/bb; stat -c '%n %h %s' d d/c
mv d/g d/g2; stat -c '%h %s' d
rm d/f; stat -c '%h %s' d
mkdir many; i=0; while [ $i -lt 50 ]; do touch many/f$i; i=$((i+1)); done; stat -c '%h %s' many
i=0; while [ $i -lt 25 ]; do rm many/f$i; i=$((i+1)); done; stat -c '%h %s' many
stat -c '%h %s' .
`},
	{"ls_listing", `
mkdir d; cd d
printf 'abc' > file; chmod 640 file
mkdir sub; chmod 750 sub; mkdir sub/inner
ln -s file link; ln file hard; mkfifo fifo
touch nob; chown nobody:nogroup nob
mkdir -m 1777 sticky; touch suid; chmod 4755 suid; touch sgid; chmod 2755 sgid
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
ls -la --time-style=+
ls -laR --time-style=+ sub
ls -1F
ls -f | LC_ALL=C sort
du -abl --apparent-size . | LC_ALL=C sort -k2
`},
	{"readdir_many_entries", `
mkdir d; i=0; while [ $i -lt 500 ]; do : > d/file-$i; i=$((i+1)); done
ls d | wc -l; ls d | cksum; ls -f d | wc -l
find d -type f | wc -l
python3 - <<'EOF'
import os
seen = []
for e in os.scandir("d"):
    seen.append(e.name)
    os.unlink("d/" + e.name)
print("seen while unlinking", len(seen), len(set(seen)), os.listdir("d"))
EOF
mkdir -p t/a/b/c; touch t/a/x t/a/b/y; ln -s ../x t/a/b/z; mkfifo t/p
rm -rf t d; ls -A
`},
	{"open_flags_and_tmpfile", `
echo content > f; mkdir d; ln -s f s
python3 - <<'EOF'
from tfsops import *
t("excl existing", os.open, "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
t("directory on file", os.open, "f", os.O_RDONLY | os.O_DIRECTORY)
t("write dir", os.open, "d", os.O_WRONLY)
t("creat dir", os.open, "d", os.O_CREAT | os.O_WRONLY)
t("nofollow symlink", os.open, "s", os.O_RDONLY | os.O_NOFOLLOW)
t("path under file", os.open, "f/x", os.O_RDONLY)
t("excl through symlink", os.open, "s", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
fd = os.open("f", os.O_WRONLY | os.O_APPEND)
os.lseek(fd, 0, os.SEEK_SET)
os.write(fd, b"appended\n")
os.close(fd)
fd = os.open("f", os.O_RDWR | os.O_TRUNC)
print("after O_TRUNC", os.fstat(fd).st_size)
os.write(fd, b"new\n")
os.close(fd)
print(open("f").read().strip())
fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(fd, b"anonymous")
st = os.fstat(fd)
print("tmpfile", st.st_nlink, st.st_size, oct(stat.S_IMODE(st.st_mode)), sorted(os.listdir(".")))
t("plain link of /proc fd", os.link, "/proc/self/fd/%d" % fd, "named-plain")
t("linkat follow", linkat, "/proc/self/fd/%d" % fd, "named", AT_SYMLINK_FOLLOW)
print("named", open("named").read(), os.fstat(fd).st_nlink)
os.close(fd)
fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
t("linkat O_EXCL tmpfile", linkat, "/proc/self/fd/%d" % fd, "never", AT_SYMLINK_FOLLOW)
os.close(fd)
fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o640)
os.write(fd, b"second")
t("linkat AT_EMPTY_PATH", linkfd, fd, "named2")
os.close(fd)
print("named2", open("named2").read(), oct(stat.S_IMODE(os.stat("named2").st_mode)), os.stat("named2").st_nlink)
t("tmpfile on file", os.open, "f", os.O_TMPFILE | os.O_RDWR, 0o600)
EOF
`},
	{"mmap_and_sparse", `
python3 - <<'EOF'
import mmap, os
with open("m", "w+b") as f:
    f.truncate(8192)
    mm = mmap.mmap(f.fileno(), 8192)
    mm[0:5] = b"hello"
    mm[4096:4101] = b"world"
    mm.flush()
    mm.close()
EOF
od -An -c -N 5 m; od -An -c -j 4096 -N 5 m; stat -c '%s %b' m
printf a > f; printf z | dd of=f bs=1 seek=100000 conv=notrunc 2>/dev/null
stat -c '%s %b' f; od -An -tx1 -j 99998 f
python3 - <<'EOF'
import os
fd = os.open("f", os.O_RDONLY)
print("hole at", os.lseek(fd, 0, os.SEEK_HOLE), "data at", os.lseek(fd, 4096, os.SEEK_DATA))
try:
    os.lseek(fd, 100001, os.SEEK_DATA)
except OSError as e:
    print("data past end", e.errno)
os.close(fd)
EOF
`},
}

// TestCoreDifferential runs every case on tmpfs and on tempfs and compares the outputs: operations on ordinary
// names behave as on tmpfs when driven from separate processes. The cases run again on a mount with --owner
// session: the test's session lives throughout, so nothing may differ.
func TestCoreDifferential(t *testing.T) {
	for _, owner := range []string{"none", "session"} {
		t.Run("owner="+owner, func(t *testing.T) {
			ref := coreTmpfs(t)
			m := startMount(t, "--owner", owner)
			for _, c := range coreCases {
				t.Run(c.name, func(t *testing.T) {
					want := coreRunCase(t, filepath.Join(ref, c.name), c.script)
					got := coreRunCase(t, m.Path(c.name), c.script)
					if want.code != 0 {
						t.Fatalf("the case fails on tmpfs (exit %d), fix the script:\n%s", want.code, want.out)
					}
					if got != want {
						t.Errorf("tempfs differs from tmpfs:\n%s\ndaemon log:\n%s", coreLineDiff(want.out, got.out, want.code, got.code), m.Log())
					}
				})
			}
			coreNoDaemonComplaints(t, m.Log())
		})
	}
}

// coreNoDaemonComplaints fails the test if the daemon logged a warning or an error: nothing an ordinary client
// does should make it complain (an EIO, a passthrough that did not take effect).
func coreNoDaemonComplaints(t *testing.T, log string) {
	t.Helper()
	for line := range strings.Lines(log) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("the daemon complained: %s", strings.TrimSpace(line))
		}
	}
}

type coreCaseResult struct {
	out  string
	code int
}

func coreRunCase(t *testing.T, dir, script string) coreCaseResult {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := coreRunScript(t, dir, script+coreSnapshot)
	return coreCaseResult{strings.ReplaceAll(out, dir, "$D"), code}
}

// coreLineDiff shows where two outputs differ, as a line diff (longest common subsequence).
func coreLineDiff(want, got string, wantCode, gotCode int) string {
	var b strings.Builder
	if wantCode != gotCode {
		fmt.Fprintf(&b, "exit status: tmpfs %d, tempfs %d\n", wantCode, gotCode)
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	// lcs[i][j] is the length of the longest common subsequence of w[i:] and g[j:].
	lcs := make([][]int, len(w)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(g)+1)
	}
	for i := len(w) - 1; i >= 0; i-- {
		for j := len(g) - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			fmt.Fprintf(&b, "    %q\n", w[i])
			i++
			j++
		case j < len(g) && (i == len(w) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&b, "  + %q   (tempfs only)\n", g[j])
			j++
		default:
			fmt.Fprintf(&b, "  - %q   (tmpfs only)\n", w[i])
			i++
		}
	}
	return b.String()
}

// TestCoreStatfsSane checks the statfs fields that must make sense whatever the caps: a name length of 255
// (the longest name), a block size, free space within the total.
func TestCoreStatfsSane(t *testing.T) {
	m := startMount(t, "--memory", "64MiB", "--disk", "1GiB")
	var st unix.Statfs_t
	if err := unix.Statfs(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Namelen != 255 {
		t.Errorf("f_namelen = %d, want 255", st.Namelen)
	}
	if st.Bsize <= 0 || st.Frsize <= 0 {
		t.Errorf("f_bsize = %d, f_frsize = %d, want > 0", st.Bsize, st.Frsize)
	}
	if st.Blocks == 0 || st.Bfree > st.Blocks || st.Bavail > st.Bfree {
		t.Errorf("blocks %d, bfree %d, bavail %d: want 0 < bavail <= bfree <= blocks", st.Blocks, st.Bfree, st.Bavail)
	}
	// The caps are the space a writer can count on: 64 MiB of RAM plus 1 GiB of disk, at most.
	if total := int64(st.Blocks) * st.Frsize; total > (64<<20)+(1<<30) {
		t.Errorf("total %d bytes is more than --memory plus --disk", total)
	}
	if st.Files == 0 || st.Ffree > st.Files {
		t.Errorf("files %d, ffree %d", st.Files, st.Ffree)
	}
	if st.Type != unix.FUSE_SUPER_MAGIC {
		t.Errorf("f_type = %#x, want FUSE", st.Type)
	}
}

// coreHolder is a python3 child that keeps a file of the mount open and obeys commands on stdin, one per line.
type coreHolder struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// holderScript opens argv[1] and then runs commands: "write HEX" appends bytes at the end, "read" prints the
// sha256, size and link count of what the fd sees, "close" closes the fd, "exit" quits.
const holderScript = `import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
print("open", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "write":
            os.lseek(fd, 0, os.SEEK_END)
            data = bytes.fromhex(arg) * 65536
            n = 0
            while n < len(data):
                n += os.write(fd, data[n:])
            print("wrote", n, flush=True)
        elif cmd == "read":
            os.lseek(fd, 0, os.SEEK_SET)
            h, size = hashlib.sha256(), 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
                size += len(b)
            st = os.fstat(fd)
            print("read", h.hexdigest(), size, st.st_size, st.st_nlink, flush=True)
        elif cmd == "close":
            os.close(fd)
            print("closed", flush=True)
        elif cmd == "exit":
            break
    except OSError as e:
        print("error", e, flush=True)
`

func startCoreHolder(t *testing.T, path string) *coreHolder {
	t.Helper()
	env := coreScriptEnv(t)
	cmd := exec.Command("python3", "-c", holderScript, path)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	in, out := startTalking(t, cmd)
	h := &coreHolder{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		_ = h.in.Close()
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
	})
	if got := h.reply(t); got != "open" {
		t.Fatalf("holder of %s: %q", path, got)
	}
	return h
}

func (h *coreHolder) reply(t *testing.T) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := h.out.ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		return s
	case <-time.After(60 * time.Second):
		t.Fatal("holder did not answer within 60s")
		return ""
	}
}

func (h *coreHolder) do(t *testing.T, command string) string {
	t.Helper()
	if _, err := fmt.Fprintln(h.in, command); err != nil {
		t.Fatal(err)
	}
	return h.reply(t)
}

// TestCoreUnlinkedOpenFile: a file unlinked while processes hold it open keeps working for them until the last
// close (POSIX), also when it grows past --max-size meanwhile; then its data is freed.
func TestCoreUnlinkedOpenFile(t *testing.T) {
	m := startMount(t, "--max-size", "64KiB")
	path := m.Path("held")
	a := startCoreHolder(t, path)
	b := startCoreHolder(t, path)
	if got := a.do(t, "write 61"); got != "wrote 65536" {
		t.Fatalf("write before unlink: %q", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unlink, lstat: %v", err)
	}
	if names := listDir(t, m.Dir); len(names) != 0 {
		t.Fatalf("after unlink, the mount lists %v", names)
	}
	// Both handles see one file of 64 KiB + 3 * 64 KiB, which is past --max-size: it rolled over while unlinked.
	for _, hex := range []string{"62", "63", "64"} {
		if got := a.do(t, "write "+hex); got != "wrote 65536" {
			t.Fatalf("write after unlink: %q", got)
		}
	}
	want := expectedHolderRead(t, "61", "62", "63", "64")
	if got := b.do(t, "read"); got != want {
		t.Fatalf("the second holder reads %q, want %q (sha256, bytes read, st_size, st_nlink)", got, want)
	}
	if deletedStoreFds(t, m, m.StoreParent) == 0 {
		t.Fatalf("a 256 KiB file with --max-size 64KiB has no backing file in the store")
	}
	if got := a.do(t, "close"); got != "closed" {
		t.Fatal(got)
	}
	// The first close is not the last: b still reads and writes.
	if got := b.do(t, "write 65"); got != "wrote 65536" {
		t.Fatalf("write after the other holder closed: %q", got)
	}
	if got, want := b.do(t, "read"), expectedHolderRead(t, "61", "62", "63", "64", "65"); got != want {
		t.Fatalf("read after the other holder closed: %q, want %q", got, want)
	}
	if got := b.do(t, "close"); got != "closed" {
		t.Fatal(got)
	}
	eventually(t, 10*time.Second, "the backing file of the unlinked file is freed after its last close", func() bool {
		return deletedStoreFds(t, m, m.StoreParent) == 0
	})
}

// expectedHolderRead is the holder's "read" answer for blocks of 64 KiB of the given bytes, unlinked.
func expectedHolderRead(t *testing.T, hexBytes ...string) string {
	t.Helper()
	var data []byte
	for _, h := range hexBytes {
		var c byte
		if _, err := fmt.Sscanf(h, "%x", &c); err != nil {
			t.Fatal(err)
		}
		data = append(data, []byte(strings.Repeat(string([]byte{c}), 65536))...)
	}
	return fmt.Sprintf("read %s %d %d 0", coreSHA256(data), len(data), len(data))
}

func coreSHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// coreReadLine reads one line from r, or "" after d.
func coreReadLine(r io.Reader, d time.Duration) string {
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		return l
	case <-time.After(d):
		return ""
	}
}

// coreMountsUnder lists mountinfo mountpoints at or below dir.
func coreMountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var found []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			found = append(found, f[4])
		}
	}
	return found
}

// TestCoreMountRefusals: bad input to `tempfs mount` exits with status 2 and one line on stderr, before
// anything is mounted or any store is made.
func TestCoreMountRefusals(t *testing.T) {
	requireFUSE(t)
	cases := []struct {
		name string
		// args builds the command line from a fresh base directory (holding an empty directory "mp" and a
		// file "file") and an empty store parent.
		args func(base, store string) []string
	}{
		{"missing mountpoint", func(base, store string) []string {
			return []string{"--store", store, filepath.Join(base, "missing")}
		}},
		{"mountpoint is a file", func(base, store string) []string {
			return []string{"--store", store, filepath.Join(base, "file")}
		}},
		{"unknown flag", func(base, store string) []string {
			return []string{"--store", store, "--no-such-flag", filepath.Join(base, "mp")}
		}},
		{"bad max-size", func(base, store string) []string {
			return []string{"--store", store, "--max-size", "12XB", filepath.Join(base, "mp")}
		}},
		{"bad memory size", func(base, store string) []string {
			return []string{"--store", store, "--memory", "lots", filepath.Join(base, "mp")}
		}},
		{"bad disk size", func(base, store string) []string {
			return []string{"--store", store, "--disk", "1.5.5GiB", filepath.Join(base, "mp")}
		}},
		{"bad mode", func(base, store string) []string {
			return []string{"--store", store, "--mode", "0999", filepath.Join(base, "mp")}
		}},
		{"unknown -o option", func(base, store string) []string {
			return []string{"--store", store, "-o", "no_such_option", filepath.Join(base, "mp")}
		}},
		{"store inside the mountpoint", func(base, store string) []string {
			return []string{"--store", filepath.Join(base, "mp", "sub"), filepath.Join(base, "mp")}
		}},
		{"store is the mountpoint", func(base, store string) []string {
			return []string{"--store", filepath.Join(base, "mp"), filepath.Join(base, "mp")}
		}},
		{"two mountpoints", func(base, store string) []string {
			return []string{"--store", store, filepath.Join(base, "mp"), filepath.Join(base, "mp2")}
		}},
		// An empty argument (an unset variable, say) is refused with a line that says so.
		{"empty mountpoint", func(base, store string) []string {
			return []string{"--store", store, ""}
		}},
		{"non-empty mountpoint", func(base, store string) []string {
			return []string{"--store", store, filepath.Join(base, "mp")}
		}},
		{"store through a symlink into the mountpoint", func(base, store string) []string {
			return []string{"--store", filepath.Join(base, "link"), filepath.Join(base, "mp2")}
		}},
		{"-o suid", func(base, store string) []string {
			return []string{"--store", store, "-o", "suid", filepath.Join(base, "mp2")}
		}},
		{"-o dev", func(base, store string) []string {
			return []string{"--store", store, "-o", "dev", filepath.Join(base, "mp2")}
		}},
		{"--disk 0", func(base, store string) []string {
			return []string{"--store", store, "--disk", "0", filepath.Join(base, "mp2")}
		}},
		{"bad max-age", func(base, store string) []string {
			return []string{"--store", store, "--max-age", "1y", filepath.Join(base, "mp2")}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base, store := t.TempDir(), t.TempDir()
			for _, dir := range []string{"mp", "mp/sub", "mp2"} {
				if err := os.Mkdir(filepath.Join(base, dir), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(base, "mp2", "sub"), filepath.Join(base, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(base, "mp2", "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			stderr := refusedMount(t, append([]string{"mount", "--ready-fd=3"}, c.args(base, store)...))
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" {
				t.Errorf("stderr has %d lines, want one clear line:\n%s", len(lines), stderr)
			}
			if left := coreMountsUnder(base); len(left) > 0 {
				t.Errorf("mounted although refused: %v", left)
			}
			if left := storeDirs(t, store); len(left) > 0 {
				t.Errorf("store made although refused: %v", left)
			}
			if entries, _ := os.ReadDir(filepath.Join(base, "mp", "sub")); len(entries) > 0 {
				t.Errorf("something was made in the refused store: %v", entries)
			}
		})
	}
}

// refusedMount runs tempfs with args, which must exit 2 without ever becoming ready; it returns stderr.
func refusedMount(t *testing.T, args []string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(tempfsBin, args...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if line := coreReadLine(r, 60*time.Second); line == "ready" {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		t.Fatalf("tempfs %v mounted instead of refusing; log:\n%s", args, stderr.String())
	}
	var err2 error
	select {
	case err2 = <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("tempfs %v did not exit", args)
	}
	var exit *exec.ExitError
	if !errors.As(err2, &exit) || exit.ExitCode() != 2 {
		t.Errorf("tempfs %v: %v, want exit status 2; stderr:\n%s", args, err2, stderr.String())
	}
	return stderr.String()
}

// TestCoreUnmountCommand: `tempfs unmount DIR` unmounts a running mount; the daemon then exits 0 and removes
// its store.
func TestCoreUnmountCommand(t *testing.T) {
	d := startMountAs(t, nil)
	if err := os.WriteFile(d.Path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tempfsBin, "unmount", d.Dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tempfs unmount: %v\n%s", err, out)
	}
	d.expectExit(t, 30*time.Second)
	if _, err := os.Stat(filepath.Join(d.Dir, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after unmount, the mountpoint still shows f: %v", err)
	}
}

// TestCoreSigint: SIGINT unmounts cleanly; the daemon exits 0 and leaves no store.
func TestCoreSigint(t *testing.T) {
	d := startMountAs(t, nil, "--max-size", "64KiB")
	if err := os.WriteFile(d.Path("small"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Path("large"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	d.expectExit(t, 30*time.Second)
}

// coreDetachBusy mounts, has a separate process hold a file with 64 KiB of 0x41 written, sends SIGTERM and
// waits until the busy mount is detached.
func coreDetachBusy(t *testing.T) (*mount, *coreHolder) {
	t.Helper()
	d := startMountAs(t, nil)
	h := startCoreHolder(t, d.Path("held"))
	if got := h.do(t, "write 41"); got != "wrote 65536" {
		t.Fatalf("write before SIGTERM: %q", got)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the busy mount is detached after SIGTERM", func() bool { return !isMounted(d.Dir) })
	return d, h
}

// TestCoreSigtermBusyDetaches: SIGTERM while a process holds a file open detaches the mount: the name goes at
// once, the open file keeps reading and writing, and the daemon exits 0 only after the last close.
func TestCoreSigtermBusyDetaches(t *testing.T) {
	d, h := coreDetachBusy(t)
	if _, err := os.Stat(d.Path("held")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the detach, the mountpoint path still shows the file: %v", err)
	}
	if got := h.do(t, "write 42"); got != "wrote 65536" {
		t.Fatalf("write through the detached mount: %q", got)
	}
	data := append(coreBytes(0x41, 65536), coreBytes(0x42, 65536)...)
	want := fmt.Sprintf("read %s %d %d 1", coreSHA256(data), len(data), len(data))
	if got := h.do(t, "read"); got != want {
		t.Fatalf("read through the detached mount: %q, want %q", got, want)
	}
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited (%v) while a file was still open; log:\n%s", d.exitErr, d.log.String())
	default:
	}
	if got := h.do(t, "close"); got != "closed" {
		t.Fatal(got)
	}
	d.expectExit(t, 30*time.Second)
}

// TestCoreSecondSignalForces: after a busy detach, a second SIGTERM ends the daemon at once ("a second
// signal forces"): it exits although a file is still open, and removes its store.
func TestCoreSecondSignalForces(t *testing.T) {
	d, h := coreDetachBusy(t)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := d.wait(t, 30*time.Second)
	d.stopped = true // it was meant to exit with an error status: stop's checks do not apply
	if err == nil {
		t.Errorf("the daemon exited 0 after the forcing signal, want a failure status")
	}
	if left := storeDirs(t, d.StoreParent); len(left) > 0 {
		t.Errorf("store left after a forced exit: %v", left)
	}
	// The holder's descriptor now belongs to a dead connection: it must fail, not hang.
	if got := h.do(t, "write 42"); strings.HasPrefix(got, "wrote") {
		t.Errorf("a write after the forced exit succeeded: %q", got)
	}
}

func coreBytes(c byte, n int) []byte { return []byte(strings.Repeat(string([]byte{c}), n)) }

// TestCoreRootMode: the root of a mount is 1777 and owned by the user who mounted it, like /tmp; --mode
// changes the bits.
func TestCoreRootMode(t *testing.T) {
	check := func(t *testing.T, dir string, wantMode os.FileMode, wantUID, wantGID uint32) {
		t.Helper()
		// From a separate process with the mounting user's ids (without allow_other, FUSE admits no other).
		cmd := exec.Command("stat", "-c", "%F %a %u %g", dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: wantUID, Gid: wantGID}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("stat %s: %v\n%s", dir, err, out)
		}
		got := strings.TrimSpace(string(out))
		want := fmt.Sprintf("directory %o %d %d", wantMode, wantUID, wantGID)
		if got != want {
			t.Errorf("root of the mount: %q, want %q", got, want)
		}
	}
	t.Run("default", func(t *testing.T) {
		m := startMount(t)
		check(t, m.Dir, 01777, uint32(os.Getuid()), uint32(os.Getgid()))
	})
	t.Run("mode 0755", func(t *testing.T) {
		m := startMount(t, "--mode", "0755")
		check(t, m.Dir, 0o755, uint32(os.Getuid()), uint32(os.Getgid()))
	})
	t.Run("mode 0", func(t *testing.T) {
		coreRequireRoot(t) // only root can stat a 0000 root of a mount with default_permissions
		m := startMount(t, "--mode", "0")
		check(t, m.Dir, 0, uint32(os.Getuid()), uint32(os.Getgid()))
	})
	t.Run("group of the mounting process", func(t *testing.T) {
		coreRequireRoot(t)
		// Root with the group nogroup: the root directory must take the daemon's own gid, not a fixed 0.
		d := startMountAs(t, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: 65534}})
		check(t, d.Dir, 01777, 0, 65534)
	})
}
