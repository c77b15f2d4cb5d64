package integration

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unmountAfter makes sure a mount made outside the harness goes at the end of the test.
func unmountAfter(t *testing.T, dir string) {
	t.Cleanup(func() {
		if isMounted(dir) {
			if out, err := exec.Command(tempfsBin, "unmount", dir).CombinedOutput(); err != nil {
				t.Errorf("unmount %s: %v %s", dir, err, out)
				_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			}
		}
	})
}

// TestDaemonMode: `tempfs mount --daemon` returns 0 only once the mount serves (no polling needed after it
// returns), and a bad mountpoint gives a non-zero status with one clear line.
func TestDaemonMode(t *testing.T) {
	requireFUSE(t)
	mp, store := t.TempDir(), t.TempDir()
	unmountAfter(t, mp)
	out, err := exec.Command(tempfsBin, "mount", "--daemon", "--max-size", "4K", "--store", store, mp).CombinedOutput()
	if err != nil {
		t.Fatalf("mount --daemon: %v\n%s", err, out)
	}
	if !isMounted(mp) {
		t.Fatal("mount --daemon returned before the mount was there")
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	// Mounting again on a live mount is refused instead of stacking a second mount on it.
	if out, err := exec.Command(tempfsBin, "mount", "--daemon", "--store", store, mp).CombinedOutput(); err == nil {
		t.Errorf("a second mount on a live tempfs mount succeeded: %s", out)
	} else if !strings.Contains(string(out), "already a tempfs mount") {
		t.Errorf("a second mount: %v, %q; want a line saying it is already mounted", err, out)
	}
	// -o nonempty is for other filesystems' mountpoints, never a live tempfs mount (as help and README say).
	if out, err := exec.Command(tempfsBin, "mount", "--daemon", "-o", "nonempty", "--store", store, mp).CombinedOutput(); err == nil || !strings.Contains(string(out), "already a tempfs mount") {
		t.Errorf("a second mount with -o nonempty: %v, %q; want it refused", err, out)
	}
	if st := daemonStats(t, mp); st["max_size"].(float64) != 4096 || st["rollovers"].(float64) != 1 {
		t.Errorf("the daemon did not get its flags: %v", st)
	}
	if out, err := exec.Command(tempfsBin, "unmount", mp).CombinedOutput(); err != nil {
		t.Fatalf("unmount: %v %s", err, out)
	}
	if left := storeDirs(t, store); len(left) > 0 {
		t.Errorf("store left after unmount: %v", left)
	}

	var stderr bytes.Buffer
	cmd := exec.Command(tempfsBin, "mount", "--daemon", filepath.Join(mp, "missing"))
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("mount --daemon on a missing dir: %v, want exit status 2", err)
	}
	if msg := strings.TrimSpace(stderr.String()); strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "does not exist") {
		t.Errorf("want one line saying the mountpoint does not exist, got %q", msg)
	}
}

// TestMountHelper: tempfs works as mount(8)'s helper (mount.tempfs, or through mount.fuse3 for fuse.tempfs),
// taking fstab's -o options.
func TestMountHelper(t *testing.T) {
	requireFUSE(t)
	mp, store := t.TempDir(), t.TempDir()
	unmountAfter(t, mp)
	helper := filepath.Join(t.TempDir(), "mount.tempfs")
	if err := os.Symlink(tempfsBin, helper); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(helper, "tempfs", mp, "-o", "rw,max_size=8K,store="+store+",mode=0750,x-systemd.automount,noatime").CombinedOutput()
	if err != nil {
		t.Fatalf("mount.tempfs: %v\n%s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil || st.Mode&07777 != 0o750 {
		t.Errorf("root mode %o (%v), want 0750 from mode=0750", st.Mode&07777, err)
	}
	if got := daemonStats(t, mp)["max_size"].(float64); got != 8192 {
		t.Errorf("max_size %v, want 8192 from max_size=8K", got)
	}
	if left := storeDirs(t, store); len(left) != 1 {
		t.Errorf("store dirs in store=%s: %v, want one", store, left)
	}
	// The same through mount.fuse3's calling convention: TYPE SOURCE MOUNTPOINT -o OPTIONS.
	mp2 := t.TempDir()
	unmountAfter(t, mp2)
	if out, err := exec.Command(tempfsBin, "none", mp2, "-o", "memory=64M").CombinedOutput(); err != nil {
		t.Fatalf("tempfs SOURCE MOUNTPOINT -o: %v\n%s", err, out)
	}
	if got := daemonStats(t, mp2)["ram_cap"].(float64); got != 64<<20 {
		t.Errorf("ram_cap %v, want 64 MiB from memory=64M", got)
	}
}

// TestSystemdNotify: with NOTIFY_SOCKET set, a foreground mount sends READY=1 once it serves and STOPPING=1
// when it stops, so that a Type=notify unit works.
func TestSystemdNotify(t *testing.T) {
	requireFUSE(t)
	sockPath := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mp := t.TempDir()
	cmd := exec.Command(tempfsBin, "mount", "--store", t.TempDir(), mp)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if isMounted(mp) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
	read := func(want string) {
		t.Helper()
		buf := make([]byte, 256)
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("notify socket: %q, %v; want %q; log:\n%s", buf[:n], err, want, stderr.String())
		}
	}
	read("READY=1")
	if !isMounted(mp) {
		t.Fatal("READY=1 before the mount was there")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	read("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v; log:\n%s", err, stderr.String())
	}
}

// TestRunLeaksNoDescriptors: CMD under `tempfs run` inherits only stdin, stdout and stderr. go-fuse opens the
// FUSE device without close-on-exec; a CMD that inherited it kept the connection alive after the daemon died
// and then hung in its own exit, waiting for a FLUSH answer that nobody would read.
func TestRunLeaksNoDescriptors(t *testing.T) {
	requireFUSE(t)
	out, err := exec.Command(tempfsBin, "run", "--dir", t.TempDir(), "--store", t.TempDir(), "--",
		// ls runs in a child (the ":" keeps the shell from exec'ing it) and lists the shell's descriptors from
		// outside. No pipeline: the shell would hold the pipe's two ends while ls reads its descriptors.
		"sh", "-c", `ls -l /proc/$$/fd; :`).Output()
	if err != nil {
		t.Fatalf("tempfs run: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		link, target, ok := strings.Cut(strings.TrimSpace(line), " -> ")
		if !ok {
			continue // "total 0"
		}
		f := strings.Fields(link)
		if fd := f[len(f)-1]; fd != "0" && fd != "1" && fd != "2" {
			t.Errorf("CMD inherited fd %s -> %s", fd, target)
		}
	}
}
