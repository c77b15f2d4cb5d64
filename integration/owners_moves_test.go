package integration

// --owner follows the process as it is at each request: a process that leaves its session (setsid), its
// group (setpgid) or its cgroup owns what it makes next by where it is now, and an owner ends when no process
// is left in it, however its members left. Also: a daemon in a cgroup namespace of its own, the O_TMPFILE
// route around --owner-quota, and the status counters of removed entries and names.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// owDaemonizer is a classic daemonizer, started in a session of its own by the test (so the launcher leads
// it): the launcher forks P and exits; P makes "before", calls setsid, writes its pidfile, forks the real
// daemon D and exits; D waits until P is gone and prints "daemon PID".
const owDaemonizer = `
import os, sys, time
m = sys.argv[1]
if os.fork() != 0:
    os._exit(0)                      # the launcher: the session's leader goes at once
open(m + "/before", "w").write("made before setsid")
os.setsid()
p = os.getpid()
open(m + "/daemon.pid", "w").write(str(p))
if os.fork() != 0:
    os._exit(0)                      # P: its pidfile must outlive it
while os.getppid() == p:
    time.sleep(0.001)
print("daemon %d %d" % (os.getpid(), p), flush=True)
time.sleep(300)
`

// TestOwnerDaemonizerKeepsItsPidfile: under --owner session, a pidfile written after setsid belongs to the
// new session and stays while the daemon it names runs; what was made before setsid went with the old
// session, which no process is left in.
func TestOwnerDaemonizerKeepsItsPidfile(t *testing.T) {
	m := startMount(t, "--owner", "session")
	python := requirePython(t)
	_, line := owStart(t, &syscall.SysProcAttr{Setsid: true}, python, "-c", owDaemonizer, m.Dir)
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[0] != "daemon" {
		t.Fatalf("daemonizer said %q", line)
	}
	daemon, _ := strconv.Atoi(fields[1])
	t.Cleanup(func() { _ = syscall.Kill(daemon, syscall.SIGKILL) })
	if got, want := owOwner(t, m.Path("daemon.pid")), "session "+fields[2]+" "; !strings.HasPrefix(got, want) {
		t.Errorf("user.tempfs.owner of the pidfile = %q, want the new session's (%q...)", got, want)
	}
	tlWaitGone(t, m.Dir, "before", "after no process was left in the session it was made in")
	eventually(t, tlGoneTimeout, "the old session counted gone", func() bool {
		return daemonStats(t, m.Dir)["owners_gone"].(float64) >= 1
	})
	tlStaysPresent(t, m.Dir, "daemon.pid", "while the daemon it names runs in the session it was made in")
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tlWaitGone(t, m.Dir, "daemon.pid", "after the daemon's session ended")
}

// owLeaver leaves its group or session (argv[2]: setpgid or setsid) after making "a", then makes "b" if argv[3]
// is "make", says so and sleeps. The test starts it in a group and session of its own, with a member that
// stays ("stayer"), or none.
const owLeaver = `
import os, sys, time
m, how, then = sys.argv[1], sys.argv[2], sys.argv[3]
if os.fork() != 0:
    if then == "stayer":
        print("stayer %d" % os.getpid(), flush=True)
        time.sleep(300)
    os._exit(0)
open(m + "/a", "w").write("a")
if how == "setsid":
    os.setsid()
else:
    os.setpgid(0, 0)
if then != "quiet":
    open(m + "/b", "w").write("b")
print("left %d" % os.getpid(), flush=True)
time.sleep(300)
`

// TestOwnerFollowsSetsidAndSetpgid: a file made after setsid (setpgid) belongs to the new session (group)
// and goes with it, while the old one lives on in its other member; and an old owner whose last member left
// without making anything more ends within the contract's second, though that member lives on.
func TestOwnerFollowsSetsidAndSetpgid(t *testing.T) {
	python := requirePython(t)
	for _, tc := range []struct{ scope, how string }{{"session", "setsid"}, {"group", "setpgid"}} {
		t.Run(tc.how+" then create", func(t *testing.T) {
			m := startMount(t, "--owner", tc.scope)
			// The launcher lives on as the old owner's other member; it prints first.
			cmd := exec.Command(python, "-c", owLeaver, m.Dir, tc.how, "stayer")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			lines := owLines(t, cmd)
			said := map[string]int{}
			for range 2 {
				line := <-lines
				said[strings.Fields(line + " ")[0]] = owPidOf(t, line, strings.Fields(line + " ")[0])
			}
			stayer, leaver := said["stayer"], said["left"]
			if stayer == 0 || leaver == 0 {
				t.Fatalf("the leaver said %v", said)
			}
			if got, want := owOwner(t, m.Path("b")), fmt.Sprintf("%s %d", tc.scope, leaver); !strings.HasPrefix(got, want) {
				t.Errorf("user.tempfs.owner of the file made after %s = %q, want %q...", tc.how, got, want)
			}
			if got, want := owOwner(t, m.Path("a")), fmt.Sprintf("%s %d", tc.scope, stayer); !strings.HasPrefix(got, want) {
				t.Errorf("user.tempfs.owner of the file made before %s = %q, want %q...", tc.how, got, want)
			}
			if err := syscall.Kill(leaver, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			tlWaitGone(t, m.Dir, "b", "after the process that made it in its own "+tc.scope+" was killed")
			tlRequirePresent(t, m.Dir, "a", "while the old "+tc.scope+" has a member")
			if err := syscall.Kill(stayer, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			tlWaitGone(t, m.Dir, "a", "after the old "+tc.scope+"'s last member was killed")
		})
		t.Run(tc.how+" and nothing more", func(t *testing.T) {
			m := startMount(t, "--owner", tc.scope)
			// The launcher exits at once: the leaver is the old owner's only member, until it leaves.
			cmd := exec.Command(python, "-c", owLeaver, m.Dir, tc.how, "quiet")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			leaver := owPidOf(t, <-owLines(t, cmd), "left")
			tlWaitGone(t, m.Dir, "a", "after the last member of its "+tc.scope+" left it")
			if err := syscall.Kill(leaver, 0); err != nil {
				t.Fatalf("the leaver is gone (%v): the test proves nothing", err)
			}
		})
	}
}

// owLines starts cmd and sends each line it prints; cleanup kills its session (the test starts it with
// Setsid) and reaps it.
func owLines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	cmd.Stderr = os.Stderr
	out := startReading(t, cmd, cmd.StdoutPipe)
	lines := make(chan string, 8)
	pids := make(chan int, 8)
	go func() {
		buf := make([]byte, 4096)
		var pending string
		for {
			n, err := out.Read(buf)
			pending += string(buf[:n])
			for {
				i := strings.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				line := pending[:i]
				pending = pending[i+1:]
				if f := strings.Fields(line); len(f) == 2 {
					if pid, err := strconv.Atoi(f[1]); err == nil {
						pids <- pid
					}
				}
				lines <- line
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case pid := <-pids:
				_ = syscall.Kill(pid, syscall.SIGKILL)
				continue
			default:
			}
			break
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return lines
}

// owPidOf reads "WORD PID".
func owPidOf(t *testing.T, line, word string) int {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != word {
		t.Fatalf("got %q, want %q and a pid", line, word)
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// owCgroup makes a cgroup v2 below the root for the test and removes it at cleanup (after the processes the
// test put there were killed: cleanups run last-in first-out, so make it before starting them).
func owCgroup(t *testing.T, path ...string) string {
	t.Helper()
	dir := filepath.Join(append([]string{owCgroupRoot(t)}, path...)...)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("making a cgroup: %v", err)
	}
	t.Cleanup(func() {
		eventually(t, tlGoneTimeout, "cgroup "+dir+" removed", func() bool {
			err := os.Remove(dir)
			return err == nil || errors.Is(err, os.ErrNotExist)
		})
	})
	return dir
}

// TestOwnerCgroupFollowsAMove: a process that moved itself from cgroup A to B owns what it makes next by B:
// that stays while it lives there, though A emptied when it left.
func TestOwnerCgroupFollowsAMove(t *testing.T) {
	base := fmt.Sprintf("tempfs-it-move-%d", os.Getpid())
	owCgroup(t, base)
	a, b := owCgroup(t, base, "a"), owCgroup(t, base, "b")
	m := startMount(t, "--owner", "cgroup")
	job, _ := owStart(t, nil, "sh", "-c", `echo $$ > "$2"/cgroup.procs && echo x > "$1"/in-a &&
		echo $$ > "$3"/cgroup.procs && echo y > "$1"/in-b && echo ready && exec sleep 300`, "sh", m.Dir, a, b)
	if got, want := owOwner(t, m.Path("in-b")), "cgroup /"+base+"/b"; got != want {
		t.Errorf("user.tempfs.owner of the file made after the move = %q, want %q", got, want)
	}
	tlWaitGone(t, m.Dir, "in-a", "after its cgroup emptied")
	tlStaysPresent(t, m.Dir, "in-b", "while its maker lives in the cgroup it was made in")
	owKill(t, job)
	tlWaitGone(t, m.Dir, "in-b", "after its cgroup emptied")
}

// TestOwnerCgroupDaemonInItsOwnNamespace: a daemon in a cgroup namespace of its own (as a container's) that
// still has a cgroup2 mount showing more than its namespace sees a creator's cgroup outside its namespace as
// that mount names it: the create succeeds, and the entry goes when that cgroup empties.
func TestOwnerCgroupDaemonInItsOwnNamespace(t *testing.T) {
	base, plugin, pod := owPluginAndPod(t, "ns")
	m := owMountInCgroupNamespace(t, plugin, nil)
	job, _ := owStart(t, nil, "sh", "-c", `echo $$ > "$2"/cgroup.procs && echo x > "$1"/from-pod && echo ready && exec sleep 300`, "sh", m.Dir, pod)
	if got, want := owOwner(t, m.Path("from-pod")), "cgroup /"+base+"/pod"; got != want {
		t.Errorf("user.tempfs.owner = %q, want %q", got, want)
	}
	tlStaysPresent(t, m.Dir, "from-pod", "while the pod's cgroup is populated")
	owKill(t, job)
	tlWaitGone(t, m.Dir, "from-pod", "after the pod's cgroup emptied")
}

// TestOwnerCgroupDaemonSeeingOnlyItsNamespace: a daemon in a cgroup and mount namespace of its own whose only
// cgroup2 mount shows its namespace (a container's usual view) says so at start; a creator outside its
// namespace is not refused, its entry is unowned, and the log says why once.
func TestOwnerCgroupDaemonSeeingOnlyItsNamespace(t *testing.T) {
	_, plugin, pod := owPluginAndPod(t, "nsonly")
	cgroupMount := owCgroupRoot(t)
	// The container's own cgroup2 mount, where the copied one was (a tmpfs over its parent hides that: the
	// kernel refuses one cgroup2 over another at the same point): it shows only the plugin's cgroup and below.
	// These mounts stay in the daemon's namespace (unshare makes them private).
	m := owMountInCgroupNamespace(t, plugin, []string{"--mount", "sh", "-c",
		`mount -t tmpfs none "$(dirname "$0")" && mkdir -p "$0" && mount -t cgroup2 none "$0" && exec "$@"`, cgroupMount})
	// The creator joins the daemon's mount namespace (where the FUSE mount is) from the pod's cgroup.
	out, err := exec.Command("sh", "-c", `echo $$ > "$1"/cgroup.procs && exec nsenter --mount --target "$2" sh -c '
		for i in 1 2; do echo x > "$0"/from-pod-$i || exit 1; done
		python3 -c "import os, sys; print(os.getxattr(sys.argv[1], \"user.tempfs.owner\").decode())" "$0"/from-pod-1
		rm "$0"/from-pod-1 "$0"/from-pod-2' "$3"`, "sh", pod, strconv.Itoa(m.Pid()), m.Dir).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "none" {
		t.Errorf("a creator outside the daemon's cgroup namespace: %v, owner %q; want its creates to succeed, unowned", err, out)
	}
	if n := strings.Count(m.LogWith("sees no cgroup outside it"), "sees no cgroup outside it"); n != 1 {
		t.Errorf("the daemon said %d times at start that it sees no cgroup outside its namespace, want once; log:\n%s", n, m.Log())
	}
	if n := strings.Count(m.LogWith("cgroup outside the daemon's view"), "cgroup outside the daemon's view"); n != 1 {
		t.Errorf("the daemon logged the unowned creator %d times, want once; log:\n%s", n, m.Log())
	}
}

// owPluginAndPod makes the cgroups tempfs-it-WHAT-PID (base), base/plugin and base/pod, removed at cleanup,
// for a daemon in one and a creator in the other.
func owPluginAndPod(t *testing.T, what string) (base, plugin, pod string) {
	t.Helper()
	base = fmt.Sprintf("tempfs-it-%s-%d", what, os.Getpid())
	owCgroup(t, base)
	return base, owCgroup(t, base, "plugin"), owCgroup(t, base, "pod")
}

// owMountInCgroupNamespace starts `tempfs mount --owner cgroup` in cgroup dir, in a cgroup namespace of its
// own rooted there (unshare starts in the cgroup through clone3 and makes the namespace, then execs the rest
// of the wrapper, which execs the daemon).
func owMountInCgroupNamespace(t *testing.T, dir string, wrapper []string) *mount {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal(err)
	}
	cgfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)
	attr := &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd}
	m := launchMountVia(t, append([]string{"unshare", "--cgroup"}, wrapper...), t.TempDir(), t.TempDir(), nil, attr, "--owner", "cgroup")
	mine, _ := os.Readlink("/proc/self/ns/cgroup")
	if theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", m.Pid())); theirs == mine || theirs == "" {
		t.Fatalf("the daemon shares this test's cgroup namespace (%q): the test proves nothing", theirs)
	}
	return m
}

// owTmpfileQuota writes an O_TMPFILE file 16 KiB at a time until a write fails (or 256 KiB are written),
// then names it with linkat, and prints what it wrote, the failure and the link's outcome.
const owTmpfileQuota = `
import ctypes, errno, os, sys, time
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(m, os.O_TMPFILE | os.O_RDWR, 0o600)
wrote, failed = 0, "none"
while wrote < (256 << 10):
    try:
        wrote += os.write(fd, b"x" * (16 << 10))
    except OSError as e:
        failed = errno.errorcode[e.errno]
        break
if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, (m + "/named").encode(), 0x400) != 0:
    link = errno.errorcode[ctypes.get_errno()]
else:
    link = "ok"
print("wrote=%d failed=%s link=%s" % (wrote, failed, link), flush=True)
time.sleep(300)
`

// TestOwnerQuotaCoversTmpfiles: an O_TMPFILE file's bytes count against its creator's quota before it has a
// name, so no more than the quota can be written and then named.
func TestOwnerQuotaCoversTmpfiles(t *testing.T) {
	m, line := owUnderQuota(t, owTmpfileQuota)
	if want := "wrote=65536 failed=EDQUOT link=ok"; line != want {
		t.Errorf("got  %s\nwant %s", line, want)
	}
	if st, err := os.Stat(m.Path("named")); err != nil || st.Size() != 64<<10 {
		t.Errorf("the named O_TMPFILE file: %v, %v; want the quota's 64 KiB", st, err)
	}
}

// TestOwnerQuotaLinkMovesTheCharge: linkat by another owner moves the bytes of an O_TMPFILE file to that
// owner, and is refused with EDQUOT (no name made) when that owner has no room.
func TestOwnerQuotaLinkMovesTheCharge(t *testing.T) {
	// The holder makes a 40 KiB O_TMPFILE file and passes it to its child, which already holds 40 KiB of
	// its own and names the file: 80 KiB would pass the child's quota.
	_, line := owUnderQuota(t, `
import ctypes, errno, os, sys, time
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(m, os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(fd, b"x" * (40 << 10))
r, w = os.pipe()
if os.fork() == 0:
    open(m + "/child-own", "w").write("y" * (40 << 10))
    res = "named" if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, (m + "/by-child").encode(), 0x400) == 0 else errno.errorcode[ctypes.get_errno()]
    os.write(w, res.encode()); os._exit(0)
child = os.read(r, 64).decode()
res = "named" if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, (m + "/by-maker").encode(), 0x400) == 0 else errno.errorcode[ctypes.get_errno()]
print("child=%s maker=%s exists=%s" % (child, res, os.path.exists(m + "/by-child")), flush=True)
time.sleep(300)
`)
	if want := "child=EDQUOT maker=named exists=False"; line != want {
		t.Errorf("got  %s\nwant %s", line, want)
	}
}

// TestOwnerStatusCountsEntriesAndNames: a gone owner's file with three hard links is one entry and three
// names, and status says both, each under its own name.
func TestOwnerStatusCountsEntriesAndNames(t *testing.T) {
	m := startMount(t, "--owner", "process")
	job, _ := owStart(t, nil, "sh", "-c", `echo x > "$1"/f && ln "$1"/f "$1"/g && ln "$1"/f "$1"/h && echo ready && exec sleep 300`, "sh", m.Dir)
	owKill(t, job)
	for _, name := range []string{"f", "g", "h"} {
		tlWaitGone(t, m.Dir, name, "after its owner was killed")
	}
	st := daemonStats(t, m.Dir)
	if st["entries_removed_with_owner"] != 1.0 || st["names_removed_with_owner"] != 3.0 || st["removed"].(map[string]any)["owner_gone"] != 3.0 {
		t.Errorf("entries_removed_with_owner %v, names_removed_with_owner %v, removed.owner_gone %v; want 1, 3, 3",
			st["entries_removed_with_owner"], st["names_removed_with_owner"], st["removed"].(map[string]any)["owner_gone"])
	}
	text, err := exec.Command(tempfsBin, "status", m.Dir).Output()
	if err != nil || !strings.Contains(string(text), "1 entry (3 names) removed with their owner") ||
		!strings.Contains(string(text), "3 with their owner") {
		t.Errorf("status: %v\n%s", err, text)
	}
}

// TestOwnerQuotaCopyFileRange: copy_file_range into an owner's file is charged like a write: it stops at the
// quota with EDQUOT.
func TestOwnerQuotaCopyFileRange(t *testing.T) {
	// The source is kept (user.tempfs.lifetime=keep): charged to nobody, so the copy alone counts.
	_, line := owUnderQuota(t, `
import errno, os, sys, time
m = sys.argv[1]
open(m + "/src", "wb").write(bytes(48 << 10))
os.setxattr(m + "/src", "user.tempfs.lifetime", b"keep")
src, dst = os.open(m + "/src", os.O_RDONLY), os.open(m + "/dst", os.O_RDWR | os.O_CREAT, 0o600)
copied, failed = 0, "none"
for _ in range(8):
    try:
        n = os.copy_file_range(src, dst, 48 << 10, 0, copied)
    except OSError as e:
        failed = errno.errorcode[e.errno]
        break
    if n == 0:
        break
    copied += n
print("copied=%d failed=%s size=%d" % (copied, failed, os.fstat(dst).st_size), flush=True)
time.sleep(300)
`)
	var copied, size int
	var failed string
	if _, err := fmt.Sscanf(line, "copied=%d failed=%s size=%d", &copied, &failed, &size); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if failed != "EDQUOT" || size > 64<<10 || copied < 48<<10 {
		t.Errorf("copy_file_range under a 64 KiB quota: %s; want at least the first 48 KiB, then EDQUOT within the quota", line)
	}
}

// TestOwnerQuotaCountsAllocatedBytes: the quota counts what files allocate, so each 1-byte file costs the
// smallest unit of RAM that holds it (a 512-byte arena slot), and an owner of a 64 KiB quota holds 128 of them.
func TestOwnerQuotaCountsAllocatedBytes(t *testing.T) {
	_, line := owUnderQuota(t, `
import errno, os, sys, time
m = sys.argv[1]
n, failed = 0, "none"
while n < 1000:
    fd = os.open(m + "/f%d" % n, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")
    except OSError as e:
        failed = errno.errorcode[e.errno]
        break
    finally:
        os.close(fd)
    n += 1
print("files=%d failed=%s" % (n, failed), flush=True)
time.sleep(300)
`)
	if want := "files=128 failed=EDQUOT"; line != want { // 64 KiB / 512 B
		t.Errorf("1-byte files under a 64 KiB quota: got %s, want %s", line, want)
	}
}

// owUnderQuota mounts with --owner process --owner-quota 64KiB and runs a Python owner script on it; it returns
// the mount and the first line the script prints.
func owUnderQuota(t *testing.T, script string) (*mount, string) {
	t.Helper()
	m := startMount(t, "--owner", "process", "--owner-quota", "64KiB")
	python := requirePython(t)
	_, line := owStart(t, nil, python, "-c", script, m.Dir)
	return m, line
}
