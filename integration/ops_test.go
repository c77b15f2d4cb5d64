package integration

// Tests of what makes tempfs safe to operate: what an operator does around a mount (unmount, crash recovery through the
// README's systemd unit and fstab line, logs of a --daemon mount, df, status) and the exact contracts of the
// command line (docs/guarantees.md, The command line). Every command runs as a separate process: the built binary.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// oneLine fails unless s is exactly one non-empty line containing want.
func oneLine(t *testing.T, what, s, want string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") || !strings.Contains(s, want) {
		t.Errorf("%s: stderr %q, want one line containing %q", what, s, want)
	}
}

// TestOpsUnmountOnlyTempfs: `tempfs unmount` acts only on tempfs mounts, told from mountinfo: a kernel tmpfs (as
// /tmp is on many machines) is left mounted with exit status 2; a plain directory and a missing path are
// refused with exit status 2 and a line that names them.
func TestOpsUnmountOnlyTempfs(t *testing.T) {
	requireFUSE(t)
	tmpfs := coreTmpfs(t)
	r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", tmpfs)
	if r.code != 2 || !isMounted(tmpfs) {
		t.Errorf("tempfs unmount on a tmpfs: exit %d, still mounted %v; want 2 and the tmpfs left alone", r.code, isMounted(tmpfs))
	}
	oneLine(t, "unmount of a tmpfs", r.stderr, "not a tempfs mount")
	// -z changes nothing.
	if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", "-z", tmpfs); r.code != 2 || !isMounted(tmpfs) {
		t.Errorf("tempfs unmount -z on a tmpfs: exit %d, still mounted %v", r.code, isMounted(tmpfs))
	}
	plain := t.TempDir()
	r = cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", plain)
	if r.code != 2 {
		t.Errorf("unmount of a plain directory: exit %d, want 2", r.code)
	}
	oneLine(t, "unmount of a plain directory", r.stderr, plain+" is not a mountpoint")
	missing := filepath.Join(plain, "missing")
	r = cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", missing)
	if r.code != 2 {
		t.Errorf("unmount of a missing path: exit %d, want 2", r.code)
	}
	oneLine(t, "unmount of a missing path", r.stderr, missing)
}

// opsDaemonPid finds the background daemon serving mp (the --daemon child: "tempfs mount --ready-fd=3 ... -- mp").
func opsDaemonPid(t *testing.T, mp string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if len(args) > 3 && args[0] == tempfsBin && args[1] == "mount" && args[len(args)-1] == mp && args[len(args)-2] == "--" {
			return pid
		}
	}
	t.Fatalf("no daemon serving %s", mp)
	return 0
}

// opsKill9 kills a process that is not the test's child with SIGKILL and waits until it is gone.
func opsKill9(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, fmt.Sprintf("process %d is gone after SIGKILL", pid), func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(stat), ") Z ")
	})
}

// opsLookAtEverything uses the mount and stats its root last, so that the kernel holds the root's attributes in
// its cache (an hour): a dead-mount check that asks the cache would think the mount alive. (A readdir after the
// stat would mark the root's atime stale, and the next stat would ask the daemon.)
func opsLookAtEverything(t *testing.T, mp string) {
	t.Helper()
	listDir(t, mp)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(mp, "f"), mp} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
}

// opsExpectFresh checks that mp is a fresh, empty, writable tempfs mount.
func opsExpectFresh(t *testing.T, mp string) {
	t.Helper()
	if names := listDir(t, mp); len(names) != 0 {
		t.Errorf("the new mount lists %q, want a fresh empty tree", names)
	}
	if err := os.WriteFile(filepath.Join(mp, "g"), []byte("y"), 0o644); err != nil {
		t.Errorf("writing to the new mount: %v", err)
	}
}

// TestOpsRemountAfterCrash: after kill -9 of the daemon of an `-o allow_other` mount (whose root the kernel
// still has cached), `tempfs mount --daemon -o allow_other DIR` detaches the dead mount and mounts afresh, and
// so does the README's fstab line through the mount helper.
func TestOpsRemountAfterCrash(t *testing.T) {
	requireFUSE(t)
	mp, store := t.TempDir(), t.TempDir()
	unmountAfter(t, mp)
	env := append(cliQuickExit(), "TMPDIR="+store)
	mountDaemon := func(what string) {
		t.Helper()
		if r := cliRun(t, env, t.TempDir(), "", tempfsBin, "mount", "--daemon", "-o", "allow_other", mp); r.code != 0 {
			t.Fatalf("%s: tempfs mount --daemon -o allow_other: exit %d, stderr %q", what, r.code, r.stderr)
		}
	}
	mountDaemon("first mount")
	opsLookAtEverything(t, mp)
	opsKill9(t, opsDaemonPid(t, mp))
	mountDaemon("after kill -9")
	opsExpectFresh(t, mp)

	// The README's fstab line, its options as written, through mount.tempfs as mount(8) runs it.
	opts := opsReadmeFstabOptions(t)
	helper := filepath.Join(t.TempDir(), "mount.tempfs")
	if err := os.Symlink(tempfsBin, helper); err != nil {
		t.Fatal(err)
	}
	opsLookAtEverything(t, mp)
	opsKill9(t, opsDaemonPid(t, mp))
	if r := cliRun(t, env, t.TempDir(), "", helper, "tempfs", mp, "-o", opts); r.code != 0 {
		t.Fatalf("mount.tempfs tempfs %s -o %s after kill -9: exit %d, stderr %q", mp, opts, r.code, r.stderr)
	}
	opsExpectFresh(t, mp)
	if got := cliNumber(t, daemonStats(t, mp), "max_size"); got != 4<<20 {
		t.Errorf("max_size %d after the fstab line's max_size=4M", got)
	}
	if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", mp); r.code != 0 {
		t.Errorf("unmount: exit %d, %q", r.code, r.stderr)
	}
	eventually(t, 30*time.Second, "the daemon removes its store after unmount", func() bool { return len(storeDirs(t, store)) == 0 })
}

// opsReadme returns README.md.
func opsReadme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// opsReadmeFstabOptions is the options field of the README's fstab line for tempfs.
func opsReadmeFstabOptions(t *testing.T) string {
	t.Helper()
	for line := range strings.Lines(opsReadme(t)) {
		f := strings.Fields(line)
		if len(f) == 6 && f[0] == "tempfs" && f[1] == "/scratch" && f[2] == "tempfs" {
			return f[3]
		}
	}
	t.Fatal("no fstab line for tempfs in README.md")
	return ""
}

// opsReadmeUnit returns the key=value lines of the README's systemd unit (the ```ini block).
func opsReadmeUnit(t *testing.T) map[string]string {
	t.Helper()
	readme := opsReadme(t)
	_, rest, ok := strings.Cut(readme, "```ini\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no ```ini block in README.md")
	}
	unit := map[string]string{}
	for line := range strings.Lines(block) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			unit[k] = v
		}
	}
	return unit
}

// opsUnitCommand turns a unit's Exec line into a command for the test: the binary under test for
// /usr/local/bin/tempfs and mp for /scratch. ignoreFailure is the "-" prefix.
func opsUnitCommand(t *testing.T, line, mp string) (argv []string, ignoreFailure bool) {
	t.Helper()
	line, ignoreFailure = strings.CutPrefix(line, "-")
	for _, f := range strings.Fields(line) {
		f = strings.ReplaceAll(f, "/scratch", mp)
		if f == "/usr/local/bin/tempfs" {
			f = tempfsBin
		}
		argv = append(argv, f)
	}
	return argv, ignoreFailure
}

// TestOpsSystemdUnitAfterCrash runs the README's systemd unit by hand, as systemd would: start, kill -9 of the
// daemon, then ExecStartPre and ExecStart again (Restart=on-failure), and a stop (SIGTERM). With the unit's
// FileDescriptorStoreMax=, systemd keeps the descriptors the daemon stores and passes them to the new daemon,
// which serves the same mount on: the files written before the crash are there with their bytes, and a file
// held open across it keeps working. ExecStartPre must not wait on the mount, which nobody serves until
// ExecStart runs. Without a store, the restarted unit mounts afresh.
func TestOpsSystemdUnitAfterCrash(t *testing.T) {
	requireFUSE(t)
	unit := opsReadmeUnit(t)
	if unit["Restart"] != "on-failure" {
		t.Errorf("the README's unit has Restart=%q, want on-failure: systemd must start it again after a crash", unit["Restart"])
	}
	if unit["Type"] != "notify" {
		t.Fatalf("the README's unit has Type=%q; this test speaks sd_notify", unit["Type"])
	}
	max, err := strconv.Atoi(unit["FileDescriptorStoreMax"])
	if err != nil || max <= 0 {
		t.Fatalf("the README's unit has FileDescriptorStoreMax=%q, want a count of descriptors: without a store a crash loses every file", unit["FileDescriptorStoreMax"])
	}
	t.Run("fd store", func(t *testing.T) { opsUnitCrash(t, unit, max) })
	t.Run("no fd store", func(t *testing.T) { opsUnitCrash(t, unit, 0) })
	t.Run("full fd store", func(t *testing.T) { opsUnitFullStore(t, unit) })
}

// opsUnitFullStore runs the unit with a store of a few descriptors: a file that would need one more than the
// store keeps (less one place, kept for the record's next generation) is refused with ENOSPC, the daemon
// sends no more than the store keeps (systemd would close the rest), the files stored before come back after
// a crash, and after a second one, and a clean stop leaves the store empty.
func opsUnitFullStore(t *testing.T, unit map[string]string) {
	const max = 12
	mp := filepath.Join(t.TempDir(), "scratch")
	store := t.TempDir()
	unmountAfter(t, mp)
	start, _ := opsUnitCommand(t, unit["ExecStart"], mp)
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	sd := newOpsSystemd(t, max)
	env := []string{"TMPDIR=" + store}
	first := sd.startMain(t, "first start", start, env)
	// Each RAM file over 64 KiB takes a descriptor of its own.
	var written []string
	var err error
	for i := range max + 1 {
		name := fmt.Sprintf("f%d", i)
		if err = os.WriteFile(filepath.Join(mp, name), opsUnitBytes(name, 100<<10), 0o644); err != nil {
			break
		}
		written = append(written, name)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("%d files of 100 KiB under FDSTORE=%d: the next one failed with %v, want ENOSPC", len(written), max, err)
	}
	if names := sd.names(); len(names) != max-1 {
		t.Errorf("the store holds %d descriptors %q, want it full but for the record's place (%d)", len(names), names, max-1)
	}
	if w := sd.warned(); len(w) > 0 {
		t.Errorf("systemd would have warned: %q", w)
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, "the first daemon after SIGKILL", 30*time.Second)
	second := sd.startMain(t, "restart after kill -9", start, env)
	check := func(when string) {
		for _, name := range written {
			if got, err := os.ReadFile(filepath.Join(mp, name)); err != nil || !bytes.Equal(got, opsUnitBytes(name, 100<<10)) {
				t.Errorf("%s, %s reads %d bytes, %v", when, name, len(got), err)
			}
		}
	}
	check("after the crash")
	if w := sd.warned(); len(w) > 0 {
		t.Errorf("systemd would have warned after the recovery: %q", w)
	}
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = second.wait(t, "the second daemon after SIGKILL", 30*time.Second)
	third := sd.startMain(t, "restart after a second kill -9", start, env)
	check("after a second crash")
	if err := third.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := third.wait(t, "the restarted daemon after SIGTERM", 60*time.Second); err != nil {
		t.Errorf("the restarted daemon exited with %v after SIGTERM; stderr:\n%s", err, third.stderr.String())
	}
	if names := sd.names(); len(names) > 0 {
		t.Errorf("after a clean stop the store still holds %q: a restarted service would find them", names)
	}
}

// opsUnitFiles are the files the unit's test writes before the crash: in the arena, a RAM file of its own
// (over 64 KiB), and a disk file (over the unit's --max-size of 4 MiB).
var opsUnitFiles = map[string]int{"small": 100, "d/ram": 200 << 10, "disk": 5 << 20}

func opsUnitBytes(name string, size int) []byte {
	return bytes.Repeat([]byte(name+"\n"), size/(len(name)+1)+1)[:size]
}

// opsUnitCrash runs the unit through a crash with a store of max descriptors (0: FileDescriptorStoreMax= left
// out).
func opsUnitCrash(t *testing.T, unit map[string]string, max int) {
	mp := filepath.Join(t.TempDir(), "scratch")
	store := t.TempDir()
	unmountAfter(t, mp)
	pre, preMayFail := opsUnitCommand(t, unit["ExecStartPre"], mp)
	start, _ := opsUnitCommand(t, unit["ExecStart"], mp)
	sd := newOpsSystemd(t, max)
	env := []string{"TMPDIR=" + store}

	execPre := func(what string) {
		t.Helper()
		cmd := exec.Command(pre[0], pre[1:]...)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !preMayFail {
				t.Fatalf("%s: ExecStartPre %q failed (%v: %s) without a '-' prefix: the unit does not start", what, pre, err, out.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%s: ExecStartPre %q still runs 30s later: it waits on the mount, which nobody serves until ExecStart runs", what, pre)
		}
	}

	execPre("first start")
	first := sd.startMain(t, "first start", start, env)
	for name, size := range opsUnitFiles {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mp, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mp, name), opsUnitBytes(name, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var held *coreHolder
	if max > 0 {
		held = startCoreHolder(t, filepath.Join(mp, "held"))
		if got := held.do(t, "write 61"); got != "wrote 65536" {
			t.Fatalf("the held file before the crash: %q", got)
		}
		names := sd.names()
		if !slices.Contains(names, "fuse") {
			t.Fatalf("the daemon stored %q under FDSTORE=%d: no FUSE connection (\"fuse\"), so a crash ends the mount", names, max)
		}
	}
	// A listing last leaves the root's attributes stale in the kernel: a stat of the mountpoint after the
	// crash asks the daemon. The kernel releases the listing's handle after close returns; the crash comes
	// once the daemon has seen that release (the held file is the one handle left).
	listDir(t, mp)
	var want int64
	if held != nil {
		want = 1
	}
	eventually(t, 10*time.Second, "the listing's directory handle is released", func() bool {
		return cliNumber(t, daemonStats(t, mp), "open_handles") == want
	})

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, "the first daemon after SIGKILL", 30*time.Second)
	stored := sd.names()
	execPre("restart after kill -9")
	second := sd.startMain(t, "restart after kill -9", start, env)
	if max == 0 {
		opsExpectFresh(t, mp)
	} else {
		// The line is written before READY=1, but reaches the test through a pipe the exec package copies from
		// in a goroutine of its own, which may not have read it yet.
		eventually(t, 10*time.Second, fmt.Sprintf("the restarted daemon, given %q, did not log that it recovered the mount", stored), func() bool {
			return strings.Contains(second.stderr.String(), "recovered the mount")
		})
		for name, size := range opsUnitFiles {
			got, err := os.ReadFile(filepath.Join(mp, name))
			if err != nil || !bytes.Equal(got, opsUnitBytes(name, size)) {
				t.Errorf("after the crash, %s reads %d bytes, %v; want the %d written before", name, len(got), err, size)
			}
		}
		if got := held.do(t, "write 62"); got != "wrote 65536" {
			t.Errorf("the file held open across the crash: write %q", got)
		}
		data := append(bytes.Repeat([]byte{0x61}, 65536), bytes.Repeat([]byte{0x62}, 65536)...)
		if got, want := held.do(t, "read"), fmt.Sprintf("read %s %d %d 1", coreSHA256(data), len(data), len(data)); got != want {
			t.Errorf("the file held open across the crash reads %q, want %q", got, want)
		}
		if got, err := os.ReadFile(filepath.Join(mp, "held")); err != nil || !bytes.Equal(got, data) {
			t.Errorf("a new open of the held file reads %d bytes, %v; want %d", len(got), err, len(data))
		}
		if got := held.do(t, "close"); got != "closed" {
			t.Fatal(got)
		}
	}

	// systemctl stop: SIGTERM (KillSignal=), then systemd closes the store once the unit is stopped.
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.wait(t, "the restarted daemon after SIGTERM", 60*time.Second); err != nil {
		t.Errorf("the restarted unit's daemon exited with %v after SIGTERM; stderr:\n%s", err, second.stderr.String())
	}
	if !sd.sentStopping() {
		t.Error("the daemon did not send STOPPING=1")
	}
	if isMounted(mp) {
		t.Error("still mounted after the unit stopped")
	}
	if left := storeDirs(t, store); len(left) > 0 {
		t.Errorf("stores left behind: %v", left)
	}
	if w := sd.warned(); len(w) > 0 {
		t.Errorf("systemd would have warned: %q", w)
	}
	sd.flush()
}

// opsPanicProbe makes the daemon of mp answer EIO from a panicking handler (TEMPFS_TEST_PANIC=1).
func opsPanicProbe(t *testing.T, mp string) {
	t.Helper()
	if _, err := syscall.Getxattr(mp, "user.tempfs.test.panic", make([]byte, 64)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("getxattr of the panic probe = %v, want EIO", err)
	}
}

// opsExpectLogged fails unless the file at path holds the panic probe's log line.
func opsExpectLogged(t *testing.T, what, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if !strings.Contains(string(data), "recovered panic") || !strings.Contains(string(data), "test probe") {
		t.Errorf("%s: the panic answered with EIO is not in %s:\n%s", what, path, data)
	}
}

// TestOpsDaemonLogs: a --daemon mount never logs nowhere: with --log FILE (or log=FILE in
// fstab) a handler panic answered EIO lands in FILE; without --log, on a machine with neither the journal nor
// /dev/log, it lands in the mount's own tempfs-UID-MOUNTPOINT.log in the store's parent directory, which status
// names.
func TestOpsDaemonLogs(t *testing.T) {
	requireFUSE(t)
	env := append(cliQuickExit(), "TEMPFS_TEST_PANIC=1")
	unmount := func(mp, store string) {
		t.Helper()
		if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", mp); r.code != 0 {
			t.Errorf("unmount: exit %d, %q", r.code, r.stderr)
		}
		eventually(t, 30*time.Second, "the daemon removes its store after unmount", func() bool { return len(storeDirs(t, store)) == 0 })
	}
	t.Run("--log", func(t *testing.T) {
		mp, store := t.TempDir(), t.TempDir()
		unmountAfter(t, mp)
		logFile := filepath.Join(t.TempDir(), "tempfs.log")
		if r := cliRun(t, env, t.TempDir(), "", tempfsBin, "mount", "--daemon", "--log", logFile, "--store", store, mp); r.code != 0 {
			t.Fatalf("mount --daemon --log: exit %d, %q", r.code, r.stderr)
		}
		opsPanicProbe(t, mp)
		opsExpectLogged(t, "--daemon --log", logFile)
		unmount(mp, store)
	})
	t.Run("fstab log=", func(t *testing.T) {
		mp, store := t.TempDir(), t.TempDir()
		unmountAfter(t, mp)
		logFile := filepath.Join(t.TempDir(), "tempfs.log")
		helper := filepath.Join(t.TempDir(), "mount.tempfs")
		if err := os.Symlink(tempfsBin, helper); err != nil {
			t.Fatal(err)
		}
		if r := cliRun(t, env, t.TempDir(), "", helper, "tempfs", mp, "-o", "log="+logFile+",store="+store); r.code != 0 {
			t.Fatalf("mount.tempfs -o log=: exit %d, %q", r.code, r.stderr)
		}
		opsPanicProbe(t, mp)
		opsExpectLogged(t, "fstab log=", logFile)
		unmount(mp, store)
	})
	t.Run("no system log", func(t *testing.T) {
		for _, sock := range []string{"/dev/log", "/run/systemd/journal/socket"} {
			if _, err := os.Stat(sock); err == nil {
				t.Skipf("%s exists: the log goes to the system log, which this test cannot read", sock)
			}
		}
		mp, store := t.TempDir(), t.TempDir()
		unmountAfter(t, mp)
		if r := cliRun(t, env, t.TempDir(), "", tempfsBin, "mount", "--daemon", "--store", store, mp); r.code != 0 {
			t.Fatalf("mount --daemon: exit %d, %q", r.code, r.stderr)
		}
		// A file of this mount's own, named after its mountpoint, which status names.
		logFile := filepath.Join(store, fmt.Sprintf("tempfs-%d-%s.log", os.Geteuid(), strings.ReplaceAll(strings.Trim(mp, "/"), "/", "-")))
		if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", mp); !strings.Contains(r.stdout, "\nlog ") || !strings.Contains(r.stdout, logFile) {
			t.Errorf("status does not name the log file %s:\n%s", logFile, r.stdout)
		}
		opsPanicProbe(t, mp)
		opsExpectLogged(t, "--daemon without --log", logFile)
		unmount(mp, store)
	})
}

// TestOpsMountpointChecks: an empty mountpoint argument (an unset variable) is an error, never the current
// directory; a non-empty directory and another filesystem's mountpoint are refused unless -o nonempty.
func TestOpsMountpointChecks(t *testing.T) {
	requireFUSE(t)
	cwd := t.TempDir()
	r := cliRun(t, cliQuickExit(), cwd, "", tempfsBin, "mount", "--daemon", "--store", t.TempDir(), "")
	if r.code != 2 || isMounted(cwd) {
		_ = syscall.Unmount(cwd, syscall.MNT_DETACH)
		t.Errorf(`tempfs mount --daemon "": exit %d, current directory mounted %v; want 2 and nothing mounted`, r.code, isMounted(cwd))
	}
	oneLine(t, "empty mountpoint", r.stderr, "empty")

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "precious"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "mount", "--daemon", "--store", t.TempDir(), full)
	if r.code != 2 || isMounted(full) {
		t.Errorf("mount on a non-empty directory: exit %d, mounted %v; want 2 and nothing mounted", r.code, isMounted(full))
	}
	oneLine(t, "non-empty mountpoint", r.stderr, "not empty")
	m := startMountAt(t, full, t.TempDir(), "-o", "nonempty")
	if names := listDir(t, m.Dir); len(names) != 0 {
		t.Errorf("-o nonempty: the mount lists %q", names)
	}
	m.stop(t)
	if got, err := os.ReadFile(filepath.Join(full, "precious")); err != nil || string(got) != "data" {
		t.Errorf("after unmount, the hidden file reads %q, %v", got, err)
	}

	if os.Geteuid() == 0 {
		tmpfs := coreTmpfs(t)
		r = cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "mount", "--daemon", "--store", t.TempDir(), tmpfs)
		if r.code != 2 {
			t.Errorf("mount over a tmpfs mountpoint: exit %d, want 2", r.code)
		}
		oneLine(t, "mount over a tmpfs", r.stderr, "already a mountpoint (tmpfs)")
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Count(string(mi), " "+tmpfs+" ") != 1 {
			t.Errorf("%s is mounted more than once", tmpfs)
		}
	}
}

// TestOpsNonRootFUSEDevice: a user who cannot open /dev/fuse (mode 0600, as on this machine kind) gets one line
// and exit status 2 before anything is tried. The test runs the binary as nobody in a mount
// namespace of its own where /dev/fuse is a root-only 0600 file, so that the machine's /dev/fuse is left alone.
func TestOpsNonRootFUSEDevice(t *testing.T) {
	coreRequireRoot(t)
	for _, tool := range []string{"unshare", "setpriv", "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	// Under /tmp, which nobody can traverse (the test's own TMPDIR may be 0700).
	base, err := os.MkdirTemp("/tmp", "tempfs-ops-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "tempfs")
	data, err := os.ReadFile(tempfsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	mp, device := filepath.Join(base, "mp"), filepath.Join(base, "fuse")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mp, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(device, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := cliRun(t, cliQuickExit(), base, "", "unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /dev/fuse && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$2" mount "$3"`,
		"sh", device, bin, mp)
	if r.code != 2 {
		t.Errorf("a non-root mount with a 0600 /dev/fuse: exit %d, want 2; stderr %q", r.code, r.stderr)
	}
	oneLine(t, "a non-root mount with a 0600 /dev/fuse", r.stderr, "cannot open /dev/fuse")
}

// TestOpsDf: statfs (df) reports tempfs's own use and caps: an empty mount uses nothing; Used is the bytes of
// tempfs's files, in RAM and on disk, not the host's; Size is the RAM cap plus the disk cap, or without one,
// plus what tempfs holds on disk and the store's free space.
func TestOpsDf(t *testing.T) {
	const ramCap, diskCap = 64 << 20, 16 << 20
	small, large := 100<<10, 3<<20 // in RAM, and past --max-size on disk
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"--disk", []string{"--memory", "64MiB", "--disk", "16MiB", "--max-size", "1MiB"}},
		{"no disk cap", []string{"--memory", "64MiB", "--max-size", "1MiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMount(t, tc.args...)
			statfs := func() (size, used, avail int64) {
				t.Helper()
				var st syscall.Statfs_t
				if err := syscall.Statfs(m.Dir, &st); err != nil {
					t.Fatal(err)
				}
				return int64(st.Blocks) * st.Bsize, int64(st.Blocks-st.Bfree) * st.Bsize, int64(st.Bavail) * st.Bsize
			}
			var host syscall.Statfs_t
			if err := syscall.Statfs(m.StoreParent, &host); err != nil {
				t.Fatal(err)
			}
			if int64(host.Bavail)*host.Bsize < 2*diskCap {
				t.Skip("the store's filesystem has less than 32 MiB free")
			}
			size, used, avail := statfs()
			if used != 0 || avail != size || size < ramCap+diskCap || (tc.name == "--disk" && size != ramCap+diskCap) {
				t.Errorf("empty mount: size %d, used %d, avail %d; want used 0, avail = size, and size the caps (%d with --disk)",
					size, used, avail, ramCap+diskCap)
			}
			if err := os.WriteFile(m.Path("small"), make([]byte, small), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.Path("large"), bytes.Repeat([]byte{1}, large), 0o644); err != nil {
				t.Fatal(err)
			}
			cliWaitNoHandles(t, m.Dir)
			size, used, avail = statfs()
			if want := int64(small + large); used != want || avail != size-want {
				t.Errorf("after writing %d bytes: size %d, used %d, avail %d; want used %d and avail size-used", want, size, used, avail, want)
			}
			out := sh(t, m.Dir, "df -B1 --output=used .")
			if !strings.Contains(out, strconv.Itoa(small+large)) {
				t.Errorf("df shows:\n%s\nwant Used %d", out, small+large)
			}
		})
	}
}

// TestOpsUnmountAfterLastClose: `tempfs unmount` started while a file is still open succeeds once it is closed
// a moment later (the kernel releases files asynchronously), instead of answering "busy" at once.
func TestOpsUnmountAfterLastClose(t *testing.T) {
	m := startMount(t)
	h := startCoreHolder(t, m.Path("held"))
	unmount := exec.Command(tempfsBin, "unmount", m.Dir)
	var stderr bytes.Buffer
	unmount.Stderr = &stderr
	if err := unmount.Start(); err != nil {
		t.Fatal(err)
	}
	// Closed a moment after the unmount started, so that its first try finds the mount busy. (Only the old
	// behaviour depends on this pause: the new one succeeds whenever the close comes within its 2 s.)
	time.Sleep(300 * time.Millisecond)
	if got := h.do(t, "close"); got != "closed" {
		t.Fatal(got)
	}
	if err := unmount.Wait(); err != nil {
		t.Errorf("tempfs unmount while the last file was being closed: %v, %s", err, stderr.String())
	}
	m.expectExit(t, 30*time.Second)
}

// TestOpsTimeoutDoubleSignal: signals that arrive together are one request to unmount: under timeout(1), which
// passes a SIGTERM on to its child and then to the child's whole process group, and with a SIGINT sent at the
// same moment, the daemon unmounts cleanly and exits 0, not 1 as after a forcing second signal.
// Repeated, since the old fault was a race between the end of the unmount and the next signal.
func TestOpsTimeoutDoubleSignal(t *testing.T) {
	requireFUSE(t)
	if _, err := exec.LookPath("timeout"); err != nil {
		t.Skip("no timeout(1)")
	}
	for i := range 4 {
		mp, store := t.TempDir(), t.TempDir()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("timeout", "--preserve-status", "600", tempfsBin, "mount", "--ready-fd=3", "--store", store, mp)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if line := coreReadLine(r, 60*time.Second); line != "ready" {
			_ = cmd.Process.Kill()
			t.Fatalf("run %d: not ready: %q; stderr:\n%s", i, line, stderr.String())
		}
		r.Close()
		children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		daemon, convErr := strconv.Atoi(strings.TrimSpace(string(children)))
		if err != nil || convErr != nil {
			t.Fatalf("the daemon under timeout: %q, %v", children, err)
		}
		// SIGINT and SIGTERM are different signals, so the kernel cannot merge them: the daemon gets both.
		if err := syscall.Kill(daemon, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("run %d: still running 60s after SIGTERM", i)
		}
		if err != nil {
			t.Errorf("run %d: timeout --preserve-status tempfs mount exited with %v after SIGINT and SIGTERM, want 0; stderr:\n%s", i, err, stderr.String())
		}
		if isMounted(mp) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			t.Errorf("run %d: still mounted", i)
		}
		if left := storeDirs(t, store); len(left) > 0 {
			t.Errorf("run %d: store left behind: %v", i, left)
		}
	}
}

// TestOpsRunOwnErrors: tempfs run's own errors exit 125, apart from every status CMD can return; a CMD that
// cannot run gives 126 or 127, and CMD's own 1 and 2 come back as they are.
func TestOpsRunOwnErrors(t *testing.T) {
	requireFUSE(t)
	parent := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"--bogus", "--", "true"}, 125},
		{"no command", nil, 125},
		{"bad size", []string{"--memory", "lots", "--", "true"}, 125},
		{"zero memory", []string{"--memory", "0", "--", "true"}, 125},
		{"missing --dir", []string{"--dir", filepath.Join(parent, "missing"), "--", "true"}, 125},
		{"command not found", []string{"--", "tempfs-no-such-command"}, 127},
		{"command exits 1", []string{"--dir", parent, "--", "sh", "-c", "exit 1"}, 1},
		{"command exits 2", []string{"--dir", parent, "--", "sh", "-c", "exit 2"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(t, nil, t.TempDir(), "", tempfsBin, append([]string{"run"}, tc.args...)...)
			if r.code != tc.want {
				t.Errorf("tempfs run %q: exit %d, want %d; stderr %q", tc.args, r.code, tc.want, r.stderr)
			}
			if tc.want >= 125 && strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("tempfs run %q: stderr %q, want one line", tc.args, r.stderr)
			}
		})
	}
	cliNothingLeft(t, parent)
}

// opsPTY opens a pseudo-terminal pair.
func opsPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// TestOpsRunUnderTerminal: `tempfs run` in a terminal's foreground forwards a SIGINT that another process sent it
// (kill -INT), lets the terminal's Ctrl-C reach CMD once, and forwards SIGUSR1.
func TestOpsRunUnderTerminal(t *testing.T) {
	requireFUSE(t)
	master, slave := opsPTY(t)
	parent, store := t.TempDir(), t.TempDir()
	// Each SIGINT CMD gets is counted and reported; SIGUSR1 reports the count and ends CMD.
	const script = `n=0
trap 'n=$((n+1)); echo "int $n"' INT
trap 'echo "usr1 ints=$n"; kill $p; exit 7' USR1
sleep 1000 </dev/null >/dev/null 2>&1 & p=$!
echo ready
while :; do wait $p; done`
	cmd := exec.Command(tempfsBin, "run", "--dir", parent, "--store", store, "--", "sh", "-c", script)
	// A session of its own with the terminal as its controlling terminal, as a login shell's job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	cmd.Stdin = slave
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout := startReading(t, cmd, cmd.StdoutPipe)
	exited := make(chan struct{})
	var waitErr error
	go func() {
		// Drain the terminal's output (echo of ^C) so that nothing blocks on it.
		go func() { _, _ = io.Copy(io.Discard, master) }()
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			// CMD is in a process group of its own: closing the terminal hangs up the whole session.
			_ = cmd.Process.Kill()
			master.Close()
			<-exited
		}
	}()
	lines := make(chan string, 8)
	go func() {
		r := bufio.NewReader(stdout)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- strings.TrimSpace(l)
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("CMD printed %q, want %q; stderr:\n%s", l, want, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("CMD did not print %q within 30s; stderr:\n%s", want, stderr.String())
		}
	}
	expect("ready")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil { // from this process, not the terminal
		t.Fatal(err)
	}
	expect("int 1")
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	expect("int 2")
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	expect("usr1 ints=2")
	select {
	case <-exited:
		var exit *exec.ExitError
		if !errors.As(waitErr, &exit) || exit.ExitCode() != 7 {
			t.Errorf("tempfs run exited with %v, want CMD's 7; stderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("tempfs run still running after CMD exited; stderr:\n%s", stderr.String())
	}
	cliNothingLeft(t, parent)
	cliNothingLeft(t, store)
}

// TestOpsCommandLine: small contracts of the command line through the binary: version and --version agree, a
// bad help topic or stray argument exits 2, completion works, a bad size names the accepted forms, decimal and
// binary sizes and days are read as documented, and mktemp -u prints a name of a real creation's length.
func TestOpsCommandLine(t *testing.T) {
	requireFUSE(t)
	run := func(args ...string) cliResult {
		t.Helper()
		return cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, args...)
	}
	version, flag := run("version"), run("--version")
	if version.code != 0 || flag.code != 0 || version.stdout != flag.stdout || !strings.HasPrefix(version.stdout, "tempfs ") {
		t.Errorf("version: %q (exit %d); --version: %q (exit %d); want the same line", version.stdout, version.code, flag.stdout, flag.code)
	}
	if r := run("help", "bogus"); r.code != 2 {
		t.Errorf("tempfs help bogus: exit %d, want 2", r.code)
	}
	if r := run("gettempdir", "extra"); r.code != 2 || strings.Contains(r.stderr, "unknown command") {
		t.Errorf("tempfs gettempdir extra: exit %d, %q; want 2 and a line saying it takes no arguments", r.code, r.stderr)
	}
	if r := run("completion", "bash"); r.code != 0 || !strings.Contains(r.stdout, "complete") {
		t.Errorf("tempfs completion bash: exit %d, %d bytes", r.code, len(r.stdout))
	}
	if r := run("mount", "--max-size", "1.5MB", t.TempDir()); r.code != 2 || !strings.Contains(r.stderr, "KB, MB, GB or TB") {
		t.Errorf("a bad size: exit %d, %q; want 2 and the accepted forms", r.code, r.stderr)
	}

	m := startMount(t, "--max-size", "1MB", "--memory", "1Gi", "--max-age", "1d")
	st := daemonStats(t, m.Dir)
	if cliNumber(t, st, "max_size") != 1000000 || cliNumber(t, st, "ram_cap") != 1<<30 {
		t.Errorf("--max-size 1MB --memory 1Gi: max_size %v, ram_cap %v; want 1000000 and 2^30", st["max_size"], st["ram_cap"])
	}
	// mktemp -u prints the name a real creation would make: the run padded to six X.
	u := run("mktemp", "-u", "-p", m.Dir, "fooXXX")
	made := run("mktemp", "-p", m.Dir, "fooXXX")
	if u.code != 0 || made.code != 0 || len(u.stdout) != len(made.stdout) {
		t.Errorf("mktemp -u on a mount printed %q, a real creation %q: want names of one length", u.stdout, made.stdout)
	}
}
