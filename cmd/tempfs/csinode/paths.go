package csinode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinks is how many symlinks resolveTarget follows before it gives up, as the kernel's limit (ELOOP).
const maxSymlinks = 40

// resolveTarget returns the real path of a target path: every symlink in it followed, and ".." taken where the
// kernel takes it (after the symlink before it, not lexically). The last component, after its symlinks, may not
// exist yet (the plugin makes it); everything before it must. Mounts are made, found, unmounted and removed at
// this path: mountinfo shows a mount at its real path, so a path with a symlink in it never matches its line, and
// a mount made through a symlink lands where the symlink points.
func resolveTarget(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s is not absolute", quote(path))
	}
	for range maxSymlinks {
		path = strings.TrimRight(path, "/")
		if path == "" {
			return "/", nil
		}
		dir, base := filepath.Split(path)
		if base == "." || base == ".." {
			return filepath.EvalSymlinks(path)
		}
		realDir, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", err
		}
		full := filepath.Join(realDir, base)
		fi, err := os.Lstat(full)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return full, nil
		case err != nil:
			// Something is there, and it is not a symlink (lstat of a symlink never reaches another filesystem):
			// a mountpoint whose daemon is gone (ENOTCONN), which a retry must still find to clear it.
			return full, nil
		case fi.Mode()&os.ModeSymlink == 0:
			return full, nil
		}
		link, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(link) {
			// Not filepath.Join: that would take a ".." in the link lexically, before its symlinks are followed.
			link = realDir + "/" + link
		}
		path = link
	}
	return "", &os.PathError{Op: "resolve", Path: path, Err: syscall.ELOOP}
}

// within reports whether path lies strictly below dir (both real paths).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// podsDir is the real path of the kubelet's pods directory, under which every target path must lie.
func podsDir(kubeletDir string) (string, error) {
	real, err := filepath.EvalSymlinks(kubeletDir)
	if err != nil {
		return "", err
	}
	return filepath.Join(real, "pods"), nil
}

// inPods reports whether path, once resolved, lies under the kubelet's pods directory.
func (d *Driver) inPods(path string) bool {
	pods, err := podsDir(d.cfg.KubeletDir)
	if err != nil {
		return false
	}
	real, err := resolveTarget(path)
	return err == nil && within(real, pods)
}
