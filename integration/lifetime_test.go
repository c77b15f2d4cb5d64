package integration

// Lifetimes (docs/guarantees.md, Lifetimes), through a real mount: a file made from a template goes at its last close and
// not before, whoever holds it; persisting; O_TMPFILE and linkat; unlinked files that are still open.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tlGoneTimeout bounds how long a released file may take to leave the tree (milliseconds in practice).
const tlGoneTimeout = 10 * time.Second

// tlGone reports whether dir/name is neither stat-able nor listed.
func tlGone(t testing.TB, dir, name string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, name), &st); !errors.Is(err, unix.ENOENT) {
		return false
	}
	return !slices.Contains(listDir(t, dir), name)
}

// tlRequirePresent fails unless dir/name is stat-able and listed.
func tlRequirePresent(t testing.TB, dir, name, when string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
		t.Fatalf("%s: stat %s: %v", when, name, err)
	}
	if names := listDir(t, dir); !slices.Contains(names, name) {
		t.Fatalf("%s: %s is not listed (readdir %q)", when, name, names)
	}
}

// tlStaysPresent checks dir/name for a short while after a holder that was not the last one closed: a wrong early
// removal would come from the asynchronous RELEASE within milliseconds. It never waits for a state, so a
// correct filesystem cannot fail it.
func tlStaysPresent(t testing.TB, dir, name, when string) {
	t.Helper()
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		tlRequirePresent(t, dir, name, when)
		time.Sleep(2 * time.Millisecond)
	}
}

func tlWaitGone(t testing.TB, dir, name, when string) {
	t.Helper()
	eventually(t, tlGoneTimeout, name+" gone "+when, func() bool { return tlGone(t, dir, name) })
}

// tlWaitHandles waits until the daemon counts exactly n open handles: after it, the releases of the other
// handles have been served, so a file that was to go at its last close is gone and one that was to stay stayed.
func tlWaitHandles(t testing.TB, m *mount, n int64) {
	t.Helper()
	eventually(t, tlGoneTimeout, fmt.Sprintf("open handles reach %d", n), func() bool { return tlReadStats(t, m).OpenHandles == n })
}

// tlShHolder starts `sh -ec script` in dir with extra files from fd 3 on, its stdin a pipe.
func tlShHolder(t testing.TB, dir, script string, extra ...*os.File) *tlProc {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	cmd.ExtraFiles = extra
	return tlStartProc(t, cmd)
}

func tlClose(t testing.TB, fd int) {
	t.Helper()
	if err := unix.Close(fd); err != nil {
		t.Fatalf("close(%d): %v", fd, err)
	}
}

func tlWriteAll(t testing.TB, fd int, data []byte) {
	t.Helper()
	if n, err := unix.Write(fd, data); err != nil || n != len(data) {
		t.Fatalf("write: %d, %v", n, err)
	}
}

// tlPreadAll reads n bytes at offset 0 through fd.
func tlPreadAll(t testing.TB, fd, n int) []byte {
	t.Helper()
	buf := make([]byte, n+1)
	got, err := unix.Pread(fd, buf, 0)
	if err != nil {
		t.Fatalf("pread: %v", err)
	}
	return buf[:got]
}

// TestLifetimeHolders: a file made from a template stays while any holder is left and goes after the last one,
// for each kind of holder.
func TestLifetimeHolders(t *testing.T) {
	m := startMount(t)
	n := 0
	fresh := func(t *testing.T) string {
		tlWaitHandles(t, m, 0)
		n++
		return tlFreshDir(t, m, fmt.Sprintf("holders%d", n))
	}

	t.Run("Dup", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		fd2, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		tlClose(t, fd)
		tlStaysPresent(t, dir, name, "after closing one of two dup'd fds")
		tlWriteAll(t, fd2, []byte("still usable"))
		tlRequirePresent(t, dir, name, "right before the last close")
		tlClose(t, fd2)
		tlWaitGone(t, dir, name, "after closing both dup'd fds")
	})

	t.Run("ForkedChild", func(t *testing.T) {
		dir := fresh(t)
		f, name := tlOpenTemplateFile(t, dir)
		ino := tlInode(t, int(f.Fd()))
		// The child inherits the open file description (fork, then exec) as its fd 3.
		child := tlShHolder(t, dir, `stat -L -c %i /proc/$$/fd/3; read x || true`, f)
		if got := child.line(t); got != strconv.FormatUint(ino, 10) {
			t.Fatalf("the child's fd 3 is inode %s, want %d", got, ino)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		tlStaysPresent(t, dir, name, "after the parent closed while a forked child holds it")
		tlRequirePresent(t, dir, name, "right before the child's exit")
		if err := child.stdin.Close(); err != nil {
			t.Fatal(err)
		}
		if err := child.wait(t); err != nil {
			t.Fatal(err)
		}
		tlWaitGone(t, dir, name, "after the forked child exited")
	})

	t.Run("ForkedChildExitsFirst", func(t *testing.T) {
		dir := fresh(t)
		f, name := tlOpenTemplateFile(t, dir)
		child := tlShHolder(t, dir, `echo started`, f)
		child.expectLine(t, "started")
		if err := child.wait(t); err != nil {
			t.Fatal(err)
		}
		tlStaysPresent(t, dir, name, "after the child exited while the parent holds it")
		tlRequirePresent(t, dir, name, "right before the parent's close")
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		tlWaitGone(t, dir, name, "after the parent closed too")
	})

	t.Run("Mmap", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		data := bytes.Repeat([]byte("mapped!\n"), 512)
		tlWriteAll(t, fd, data)
		mem, err := unix.Mmap(fd, 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap: %v", err)
		}
		unmapped := false
		t.Cleanup(func() {
			if !unmapped {
				_ = unix.Munmap(mem)
			}
		})
		tlClose(t, fd)
		tlStaysPresent(t, dir, name, "after closing the fd while a mapping is alive")
		if !bytes.Equal(mem, data) {
			t.Fatal("the mapping does not show the file's data")
		}
		copy(mem, "MAPPED")
		tlRequirePresent(t, dir, name, "right before munmap")
		if err := unix.Munmap(mem); err != nil {
			t.Fatal(err)
		}
		unmapped = true
		tlWaitGone(t, dir, name, "after munmap of the last mapping")
	})

	t.Run("SIGKILL", func(t *testing.T) {
		dir := fresh(t)
		child := tlShHolder(t, dir, `exec 3<>"$PWD/jobXXXXXX"; ls; read x || true`)
		name := child.line(t)
		if !tlTemplateRE("job", 6, "").MatchString(name) {
			t.Fatalf("the child sees %q", name)
		}
		tlRequirePresent(t, dir, name, "while the child holds it")
		child.kill(t)
		tlWaitGone(t, dir, name, "after its only holder was killed with SIGKILL")
	})

	t.Run("SIGKILLInherited", func(t *testing.T) {
		dir := fresh(t)
		f, name := tlOpenTemplateFile(t, dir)
		child := tlShHolder(t, dir, `echo ready; read x || true`, f)
		child.expectLine(t, "ready")
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		tlStaysPresent(t, dir, name, "after the parent closed while a child holds it")
		tlRequirePresent(t, dir, name, "right before the kill")
		child.kill(t)
		tlWaitGone(t, dir, name, "after the last holder was killed with SIGKILL")
	})

	t.Run("ShellRedirect", func(t *testing.T) {
		dir := fresh(t)
		sh(t, dir, `echo hello > "$PWD/jobXXXXXX"`)
		eventually(t, tlGoneTimeout, "a file made by a shell redirect gone after the redirect closed it", func() bool {
			return len(listDir(t, dir)) == 0
		})
	})
}

// TestLifetimeOtherProcess: a second open file description, made by another process opening the real name, is a
// holder of its own; the file goes after both are released, in either order.
func TestLifetimeOtherProcess(t *testing.T) {
	m := startMount(t)
	for i, childFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("childClosesFirst=%v", childFirst), func(t *testing.T) {
			tlWaitHandles(t, m, 0)
			dir := tlFreshDir(t, m, fmt.Sprintf("other%d", i))
			fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
			tlWriteAll(t, fd, []byte("shared"))
			cmd := exec.Command("sh", "-ec", `exec 3<"$F"; echo ready; read x || true; cat <&3`)
			cmd.Env = append(os.Environ(), "F="+filepath.Join(dir, name))
			child := tlStartProc(t, cmd)
			child.expectLine(t, "ready")
			tlWaitHandles(t, m, 2)
			if childFirst {
				child.send(t, "go")
				if got := child.line(t); got != "shared" {
					t.Fatalf("the other process read %q", got)
				}
				if err := child.wait(t); err != nil {
					t.Fatal(err)
				}
				tlWaitHandles(t, m, 1)
				tlRequirePresent(t, dir, name, "after the other process's handle was released, right before the last close")
				tlClose(t, fd)
				tlWaitGone(t, dir, name, "after both processes closed it")
				return
			}
			tlClose(t, fd)
			tlWaitHandles(t, m, 1)
			tlRequirePresent(t, dir, name, "after the creator's handle was released, while another process holds it")
			child.send(t, "go")
			if got := child.line(t); got != "shared" {
				t.Fatalf("the other process read %q after the creator closed", got)
			}
			if err := child.wait(t); err != nil {
				t.Fatal(err)
			}
			tlWaitGone(t, dir, name, "after the other process exited")
		})
	}
}

// TestLifetimeBashExec: `exec 3<>"$MNT/jobXXXXXX"` in bash gives a private 0600 file that goes when fd 3 closes
// (the shell still running), or when the shell is killed.
func TestLifetimeBashExec(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no bash, and CI=true forbids skipping")
		}
		t.Skip("no bash")
	}
	m := startMount(t)

	t.Run("CloseFd3", func(t *testing.T) {
		dir := tlFreshDir(t, m, "close3")
		cmd := exec.Command(bash, "-ec", `exec 3<>"$PWD/jobXXXXXX"
ls
stat -L -c %a /proc/$$/fd/3
echo data >&3
echo written
read x
exec 3>&-
echo closed
read x || true`)
		cmd.Dir = dir
		b := tlStartProc(t, cmd)
		name := b.line(t)
		if !tlTemplateRE("job", 6, "").MatchString(name) {
			t.Fatalf("bash lists %q", name)
		}
		if mode := b.line(t); mode != "600" {
			t.Errorf("exec 3<> made mode %s, want 600", mode)
		}
		b.expectLine(t, "written")
		tlRequirePresent(t, dir, name, "while bash holds fd 3")
		if data, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(data) != "data\n" {
			t.Fatalf("reading it by name: %q, %v", data, err)
		}
		b.send(t, "close")
		b.expectLine(t, "closed")
		tlWaitGone(t, dir, name, "after bash closed fd 3")
		if !b.running() {
			t.Fatal("bash exited before the check: the file must go at the close of fd 3, not at exit")
		}
		if err := b.stdin.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.wait(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("KillShell", func(t *testing.T) {
		dir := tlFreshDir(t, m, "kill")
		cmd := exec.Command(bash, "-ec", `exec 3<>"$PWD/jobXXXXXX"; ls; read x || true`)
		cmd.Dir = dir
		b := tlStartProc(t, cmd)
		name := b.line(t)
		tlRequirePresent(t, dir, name, "while bash holds fd 3")
		b.kill(t)
		tlWaitGone(t, dir, name, "after bash was killed")
	})
}

// TestLifetimePersist: rename and user.tempfs.lifetime=keep keep a template file after its last close, and
// user.tempfs.lifetime answers close or keep.
func TestLifetimePersist(t *testing.T) {
	m := startMount(t)
	n := 0
	fresh := func(t *testing.T) string {
		tlWaitHandles(t, m, 0)
		n++
		return tlFreshDir(t, m, fmt.Sprintf("persist%d", n))
	}
	lifetime := func(t *testing.T, path string) string {
		t.Helper()
		return tlMustXattr(t, path, "user.tempfs.lifetime")
	}

	t.Run("Answers", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		defer unix.Close(fd)
		if v := lifetime(t, filepath.Join(dir, name)); v != "close" {
			t.Errorf("lifetime of a fresh template file = %q, want close", v)
		}
		if v, err := tlFgetxattr(fd, "user.tempfs.lifetime"); err != nil || v != "close" {
			t.Errorf("lifetime through the fd = %q, %v, want close", v, err)
		}
		plain := filepath.Join(dir, "plain")
		if err := os.WriteFile(plain, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		plainDir := filepath.Join(dir, "plaindir")
		if err := os.Mkdir(plainDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mkdir(filepath.Join(dir, "tdirXXXXXX"), 0o700); err != nil {
			t.Fatal(err)
		}
		tdir := tlCreated(dir)
		link := filepath.Join(dir, "link")
		if err := os.Symlink("plain", link); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{plain, plainDir, filepath.Join(dir, tdir), dir} {
			if v := lifetime(t, p); v != "keep" {
				t.Errorf("lifetime of %s = %q, want keep", p, v)
			}
		}
	})

	t.Run("Rename", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		tlWriteAll(t, fd, []byte("renamed"))
		kept := filepath.Join(dir, "kept")
		if err := os.Rename(filepath.Join(dir, name), kept); err != nil {
			t.Fatal(err)
		}
		if v := lifetime(t, kept); v != "keep" {
			t.Errorf("lifetime after rename = %q, want keep", v)
		}
		tlClose(t, fd)
		tlWaitHandles(t, m, 0)
		if data, err := os.ReadFile(kept); err != nil || string(data) != "renamed" {
			t.Fatalf("a renamed template file after its last close: %q, %v", data, err)
		}
		if got := listDir(t, dir); !slices.Equal(got, []string{"kept"}) {
			t.Errorf("readdir %q, want [kept]", got)
		}
	})

	for _, via := range []string{"path", "fd"} {
		t.Run("SetxattrKeep/"+via, func(t *testing.T) {
			dir := fresh(t)
			fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
			tlWriteAll(t, fd, []byte("kept by xattr"))
			p := filepath.Join(dir, name)
			var err error
			if via == "path" {
				err = unix.Setxattr(p, "user.tempfs.lifetime", []byte("keep"), 0)
			} else {
				err = unix.Fsetxattr(fd, "user.tempfs.lifetime", []byte("keep"), 0)
			}
			if err != nil {
				t.Fatalf("setxattr user.tempfs.lifetime keep: %v", err)
			}
			if v := lifetime(t, p); v != "keep" {
				t.Errorf("lifetime after setting keep = %q", v)
			}
			tlClose(t, fd)
			tlWaitHandles(t, m, 0)
			if data, err := os.ReadFile(p); err != nil || string(data) != "kept by xattr" {
				t.Fatalf("a kept template file after its last close: %q, %v", data, err)
			}
			if v := lifetime(t, p); v != "keep" {
				t.Errorf("lifetime after the last close = %q, want keep", v)
			}
		})
	}

	t.Run("TemplateDirKeptUntilRemoved", func(t *testing.T) {
		dir := fresh(t)
		if err := unix.Mkdir(filepath.Join(dir, "dXXXXXX"), 0o777); err != nil {
			t.Fatal(err)
		}
		sub := tlOnlyEntry(t, dir)
		// Open, list and close it, and make and release a template file inside it.
		if got := listDir(t, filepath.Join(dir, sub)); len(got) != 0 {
			t.Fatalf("a fresh directory lists %q", got)
		}
		fd, name := tlOpenTemplate(t, filepath.Join(dir, sub), "fXXXXXX", unix.O_RDWR)
		tlClose(t, fd)
		tlWaitGone(t, filepath.Join(dir, sub), name, "after its last close")
		tlWaitHandles(t, m, 0)
		tlRequirePresent(t, dir, sub, "a template directory after every handle in it was released")
		if err := os.Remove(filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
		if !tlGone(t, dir, sub) {
			t.Fatal("rmdir left the template directory")
		}
	})
}

// tlTmpfileLink is what linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, dst, flags) answers for an O_TMPFILE file in
// dir (nil on success).
func tlTmpfileLink(t testing.TB, dir string, flags int) error {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("open(%s, O_TMPFILE): %v", dir, err)
	}
	defer unix.Close(fd)
	return unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(dir, "plainlink"), flags)
}

// TestLifetimeTmpfile: O_TMPFILE makes an anonymous file, freed at its last close; linkat with
// AT_SYMLINK_FOLLOW or AT_EMPTY_PATH names it; plain link(2) on /proc/self/fd/N fails as on tmpfs (EXDEV).
func TestLifetimeTmpfile(t *testing.T) {
	m := startMount(t)

	t.Run("Anonymous", func(t *testing.T) {
		tlWaitHandles(t, m, 0)
		dir := tlFreshDir(t, m, "anon")
		before := tlReadStats(t, m).Files
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatalf("open(O_TMPFILE): %v", err)
		}
		tlCloseAtCleanup(t, fd)
		data := bytes.Repeat([]byte("anonymous "), 1000)
		tlWriteAll(t, fd, data)
		if got := tlPreadAll(t, fd, len(data)); !bytes.Equal(got, data) {
			t.Fatal("O_TMPFILE data does not round-trip")
		}
		if got := listDir(t, dir); len(got) != 0 {
			t.Fatalf("an O_TMPFILE file is listed: %q", got)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 || st.Mode&0o7777 != 0o600 || st.Size != int64(len(data)) {
			t.Fatalf("fstat: %+v, %v; want nlink 0, mode 600, size %d", st, err, len(data))
		}
		if got := tlReadStats(t, m).Files; got != before+1 {
			t.Errorf("status files = %d while the O_TMPFILE file is open, want %d", got, before+1)
		}
		tlClose(t, fd)
		eventually(t, tlGoneTimeout, "the O_TMPFILE file freed after its last close", func() bool {
			return tlReadStats(t, m).Files == before
		})
		if got := listDir(t, dir); len(got) != 0 {
			t.Fatalf("an O_TMPFILE file left %q", got)
		}
	})

	t.Run("PlainLinkLikeTmpfs", func(t *testing.T) {
		tmpfsErr := tlTmpfileLink(t, coreTmpfs(t), 0)
		dir := tlFreshDir(t, m, "plainlink")
		tempfsErr := tlTmpfileLink(t, dir, 0)
		if !errors.Is(tmpfsErr, unix.EXDEV) {
			t.Logf("note: on tmpfs, link(2) of /proc/self/fd/N answers %v", tmpfsErr)
		}
		if !errors.Is(tempfsErr, unix.EXDEV) || !errors.Is(tmpfsErr, unix.EXDEV) {
			t.Errorf("link(2) without following /proc/self/fd/N: tempfs %v, tmpfs %v; the contract says EXDEV as on every Linux filesystem", tempfsErr, tmpfsErr)
		}
		if got := listDir(t, dir); len(got) != 0 {
			t.Errorf("a failed link left %q", got)
		}
	})

	for _, how := range []string{"AT_SYMLINK_FOLLOW", "AT_EMPTY_PATH"} {
		t.Run("Linkat/"+how, func(t *testing.T) {
			tlWaitHandles(t, m, 0)
			dir := tlFreshDir(t, m, "linkat-"+strings.ToLower(how))
			fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
			if err != nil {
				t.Fatalf("open(O_TMPFILE): %v", err)
			}
			tlCloseAtCleanup(t, fd)
			data := []byte("named by " + how)
			tlWriteAll(t, fd, data)
			dst := filepath.Join(dir, "named")
			if how == "AT_SYMLINK_FOLLOW" {
				err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
			} else {
				err = unix.Linkat(fd, "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
			}
			if err != nil {
				t.Fatalf("linkat with %s: %v", how, err)
			}
			if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("reading the linked name: %q, %v", got, err)
			}
			tlWriteAll(t, fd, []byte(" and more"))
			tlClose(t, fd)
			tlWaitHandles(t, m, 0)
			want := append(data, " and more"...)
			if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the linked name after the last close: %q, %v; want %q", got, err, want)
			}
			if v := tlMustXattr(t, dst, "user.tempfs.lifetime"); v != "keep" {
				t.Errorf("lifetime of a linked O_TMPFILE file = %q, want keep", v)
			}
			if got := listDir(t, dir); !slices.Equal(got, []string{"named"}) {
				t.Errorf("readdir %q, want [named]", got)
			}
		})
	}
}

// TestLifetimeUnlinkedOpen: an unlinked file that is still open keeps working until its last close, and the end
// of a template file never removes an entry that took its name meanwhile.
func TestLifetimeUnlinkedOpen(t *testing.T) {
	m := startMount(t)
	n := 0
	fresh := func(t *testing.T) string {
		tlWaitHandles(t, m, 0)
		n++
		return tlFreshDir(t, m, fmt.Sprintf("unlinked%d", n))
	}
	useAfterUnlink := func(t *testing.T, dir, name string, fd int) {
		t.Helper()
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		if !tlGone(t, dir, name) {
			t.Fatal("unlink left the name")
		}
		tlWriteAll(t, fd, []byte("after unlink"))
		if got := tlPreadAll(t, fd, 64); string(got) != "before;after unlink" {
			t.Fatalf("reading an unlinked open file: %q", got)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 {
			t.Fatalf("fstat of an unlinked open file: nlink %d, %v", st.Nlink, err)
		}
	}

	t.Run("Ordinary", func(t *testing.T) {
		dir := fresh(t)
		before := tlReadStats(t, m).Files
		fd, err := unix.Open(filepath.Join(dir, "plain"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		tlCloseAtCleanup(t, fd)
		tlWriteAll(t, fd, []byte("before;"))
		useAfterUnlink(t, dir, "plain", fd)
		tlClose(t, fd)
		eventually(t, tlGoneTimeout, "an unlinked file freed at its last close", func() bool { return tlReadStats(t, m).Files == before })
	})

	t.Run("TemplateNameReused", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		tlWriteAll(t, fd, []byte("before;"))
		useAfterUnlink(t, dir, name, fd)
		// An ordinary file takes the generated name; the template file's last close must not touch it.
		if err := os.WriteFile(filepath.Join(dir, name), []byte("newcomer"), 0o644); err != nil {
			t.Fatal(err)
		}
		tlClose(t, fd)
		tlWaitHandles(t, m, 0)
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != "newcomer" {
			t.Fatalf("the new file at a released template file's old name: %q, %v", got, err)
		}
	})

	t.Run("TemplateNameRenamedOver", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		tlWriteAll(t, fd, []byte("old"))
		other := filepath.Join(dir, "other")
		if err := os.WriteFile(other, []byte("replacement"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(other, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		if got := tlPreadAll(t, fd, 16); string(got) != "old" {
			t.Fatalf("the replaced template file through its fd: %q", got)
		}
		tlClose(t, fd)
		tlWaitHandles(t, m, 0)
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != "replacement" {
			t.Fatalf("the file renamed over a template file's name, after that one's last close: %q, %v", got, err)
		}
	})

	t.Run("TemplateRenamedAwayNameReused", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, "away")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("second"), 0o644); err != nil {
			t.Fatal(err)
		}
		tlClose(t, fd)
		tlWaitHandles(t, m, 0)
		got := listDir(t, dir)
		slices.Sort(got)
		want := []string{"away", name}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("readdir %q, want %q", got, want)
		}
	})
}

// TestLifetimeDirectoryAttributes: when a file made from a template leaves at its last close, its directory's
// size and mtime change behind the kernel's back, and a stat of the directory must show it even though the
// kernel caches attributes for long (an hour).
func TestLifetimeDirectoryAttributes(t *testing.T) {
	m := startMount(t)
	dir := m.Path("d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var empty unix.Stat_t
	if err := unix.Stat(dir, &empty); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(dir, "jobXXXXXX"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// The first write drops the kernel's dentry for the template name, which also invalidates the
	// directory's attributes; after it, nothing but tempfs itself can tell the kernel of the change.
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	var holding unix.Stat_t // cached by the kernel from here on
	if err := unix.Stat(dir, &holding); err != nil {
		t.Fatal(err)
	}
	if holding.Size <= empty.Size {
		t.Fatalf("directory size %d with a file in it, %d empty: the test cannot see the change", holding.Size, empty.Size)
	}
	unix.Close(fd)
	var after unix.Stat_t
	eventually(t, 10*time.Second, "the directory's size did not come back after its template file left", func() bool {
		if err := unix.Stat(dir, &after); err != nil {
			t.Fatal(err)
		}
		return after.Size == empty.Size
	})
	if after.Mtim == holding.Mtim {
		t.Errorf("directory mtime %v did not move when its file left", time.Unix(after.Mtim.Unix()))
	}
}

// tlOpenTemplateFile makes a file from jobXXXXXX in dir, open for reading and writing as an *os.File to hand
// to a child process; it is closed at cleanup if the test has not closed it.
func tlOpenTemplateFile(t testing.TB, dir string) (*os.File, string) {
	t.Helper()
	fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	return f, name
}
