package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tempfs/tempfs/fs/mountinfo"
)

// unmountBusyWait is how long Unmount retries a mount that is busy. The kernel sends RELEASE asynchronously: a
// file closed a moment ago can keep the mount busy for a few milliseconds, and a user who closed everything
// must not be told otherwise.
const unmountBusyWait = 2 * time.Second

// Unmount unmounts a tempfs mount that this process does not serve: `tempfs unmount`, a stale mount left by a
// killed daemon, or one found dead at mount time. lazy detaches a busy mount instead of failing; otherwise a
// busy mount is tried again for up to unmountBusyWait before EBUSY is reported.
func Unmount(mountpoint string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	deadline := time.Now().Add(unmountBusyWait)
	pause := time.Millisecond
	err := syscall.Unmount(mountpoint, flags)
	for errors.Is(err, syscall.EBUSY) && time.Now().Before(deadline) {
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
		err = syscall.Unmount(mountpoint, flags)
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EPERM) {
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		return fusermount(append(args, mountpoint)...)
	}
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%s is not a mountpoint", mountpoint)
	}
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%s is busy (files are open there): detach it with -z, it goes once they are closed", mountpoint)
	}
	return err
}

// IsTempfs reports whether m is a tempfs mount: every tempfs mount, made directly or through fusermount3, has
// the type fuse.tempfs (MountFS names the subtype).
func IsTempfs(m mountinfo.Mount) bool { return m.FSType == "fuse."+fsName }

// IsStale reports whether path is the mountpoint of a FUSE mount whose daemon is gone. The answer must not
// come from the kernel's caches (entries and attributes are cached for an hour): statfs is never cached and
// always reaches the daemon, so on a dead connection it fails with ENOTCONN whatever the mount's options.
func IsStale(path string) bool {
	mi, ok := mountinfo.Find(path)
	if !ok || !strings.HasPrefix(mi.FSType, "fuse") {
		return false
	}
	var st syscall.Statfs_t
	err := syscall.Statfs(path, &st)
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// IsTempfsMount reports whether path is the mountpoint of a tempfs mount, live or dead.
func IsTempfsMount(path string) bool {
	mi, ok := mountinfo.Find(path)
	return ok && IsTempfs(mi)
}

// AbortConnection aborts the FUSE connection of a mountpoint through /sys/fs/fuse/connections, for a daemon
// that hangs (docs/kernel.md, Hangs: a daemon killed mid-request can hang at exit until this).
func AbortConnection(mountpoint string) error {
	dev, err := mountDevice(mountpoint)
	if err != nil {
		return err
	}
	_, minor, _ := strings.Cut(dev, ":")
	ensureFusectl()
	return os.WriteFile(filepath.Join(fusectlDir, minor, "abort"), []byte("1"), 0)
}

const fusectlDir = "/sys/fs/fuse/connections"

// ensureFusectl mounts the fusectl filesystem where it is missing (it is not mounted on every machine), so
// that a connection can be aborted.
func ensureFusectl() {
	if entries, err := os.ReadDir(fusectlDir); err == nil && len(entries) > 0 {
		return
	}
	_ = syscall.Mount("fusectl", fusectlDir, "fusectl", 0, "")
}

// mountDevice finds the device number ("major:minor") of the mount at mountpoint in /proc/self/mountinfo. FUSE
// names its connection directories after the minor number (the major is 0), and its backing device info
// (/sys/class/bdi) after both.
func mountDevice(mountpoint string) (string, error) {
	mi, ok := mountinfo.Find(mountpoint)
	if !ok || !strings.Contains(mi.Device, ":") {
		return "", fmt.Errorf("%s is not a mountpoint", mountpoint)
	}
	return mi.Device, nil
}

// fusermount runs fusermount3 (or fusermount) for users who may not call umount(2) themselves.
func fusermount(args ...string) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		bin, err = exec.LookPath("fusermount")
		if err != nil {
			return errors.New("unmount needs root or fusermount3 (apt-get install fuse3)")
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %s", bin, strings.TrimSpace(stderr.String()))
	}
	return nil
}
