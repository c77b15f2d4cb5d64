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
)

// Unmount unmounts a tempfs mount that this process does not serve: `tempfs unmount`, a stale mount left by a
// killed daemon, or one found dead at mount time. lazy detaches a busy mount instead of failing.
func Unmount(mountpoint string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(mountpoint, flags)
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
		return fmt.Errorf("%s is busy (files are open there); detach it with -z, it goes once they are closed", mountpoint)
	}
	return err
}

// IsStale reports whether path is a FUSE mount whose daemon is gone: every access fails with ENOTCONN.
func IsStale(path string) bool {
	var st syscall.Stat_t
	return errors.Is(syscall.Stat(path, &st), syscall.ENOTCONN)
}

// IsTempfsMount reports whether path is the mountpoint of a live tempfs mount.
func IsTempfsMount(path string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	clean := filepath.Clean(path)
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != clean {
			continue
		}
		// The fields after " - " are the filesystem type and source.
		if _, rest, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(rest, "fuse.tempfs ") {
			return true
		}
	}
	return false
}

// AbortConnection aborts the FUSE connection of a mountpoint through /sys/fs/fuse/connections, for a daemon
// that hangs (kernel-notes.md: a daemon killed mid-request can hang at exit until this).
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
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	clean := filepath.Clean(mountpoint)
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != clean {
			continue
		}
		if strings.Contains(fields[2], ":") {
			return fields[2], nil
		}
	}
	return "", fmt.Errorf("%s is not a mountpoint", mountpoint)
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
