package naming

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// TempDirCandidates returns the directories Python's
// tempfile._candidate_tempdir_list tries, in its order: $TMPDIR, $TEMP and
// $TMP (each only when set and non-empty), then /tmp, /var/tmp and /usr/tmp,
// then cwd (left out when cwd is empty). getenv is a parameter so that tests
// need not change the process environment.
func TempDirCandidates(getenv func(string) string, cwd string) []string {
	var candidates []string
	for _, variable := range []string{"TMPDIR", "TEMP", "TMP"} {
		if dir := getenv(variable); dir != "" {
			candidates = append(candidates, dir)
		}
	}
	candidates = append(candidates, "/tmp", "/var/tmp", "/usr/tmp")
	if cwd != "" {
		candidates = append(candidates, cwd)
	}
	return candidates
}

// GetTempDir is Python's gettempdir() for this process: the first usable
// directory of TempDirCandidates(os.Getenv, cwd), skipping exclude and
// everything under it (the mountpoint, whose store must not live inside it).
// As in Python, the current directory is "." when os.Getwd fails.
func GetTempDir(exclude string) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		cwd = "."
	}
	return GetTempDirFrom(TempDirCandidates(os.Getenv, cwd), exclude)
}

// GetStoreDir is GetTempDir for the parent of a disk store: it also skips
// every candidate on a FUSE filesystem (GetStoreDirFrom).
func GetStoreDir(exclude string) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		cwd = "."
	}
	return GetStoreDirFrom(TempDirCandidates(os.Getenv, cwd), exclude)
}

// GetStoreDirFrom is GetTempDirFrom, also skipping candidates on a FUSE
// filesystem: a store there would send every spilled byte through that
// filesystem's daemon as well, and the kernel refuses passthrough to a backing
// file on FUSE. With TMPDIR on a tempfs mount, say, the store goes to /tmp.
func GetStoreDirFrom(candidates []string, exclude string) (string, error) {
	return firstUsable(candidates, exclude, true)
}

// GetTempDirFrom returns the absolute, cleaned path of the first candidate
// that is usable as Python's _get_default_tempdir checks it: it is a directory
// and a probe file can be created in it exclusively, written, closed and
// removed. Candidates equal to exclude or under it are skipped before anything
// touches them, so a mountpoint not yet served is never probed; an empty
// exclude skips nothing. The error lists every candidate and why it failed.
func GetTempDirFrom(candidates []string, exclude string) (string, error) {
	return firstUsable(candidates, exclude, false)
}

// IsOnFUSE reports whether dir is on a FUSE filesystem (a tempfs mount among
// them), and which type /proc/self/mountinfo would not say: the statfs magic.
func IsOnFUSE(dir string) (bool, error) {
	magic, err := fsMagic(dir)
	if err != nil {
		return false, err
	}
	return magic == unix.FUSE_SUPER_MAGIC, nil
}

// fsMagic is statfs's f_type of path, a variable so that tests can stand in a
// FUSE filesystem without mounting one.
var fsMagic = func(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Type, nil
}

func firstUsable(candidates []string, exclude string, skipFUSE bool) (string, error) {
	var excludeAbs string
	if exclude != "" {
		var err error
		if excludeAbs, err = filepath.Abs(exclude); err != nil {
			return "", fmt.Errorf("naming: resolving excluded directory %q: %w", exclude, err)
		}
	}
	var failures []string
	for _, candidate := range candidates {
		dir, err := filepath.Abs(candidate)
		if err == nil {
			if excludeAbs != "" && IsUnder(dir, excludeAbs) {
				err = fmt.Errorf("inside %s, which is excluded", excludeAbs)
			} else if fuse, _ := IsOnFUSE(dir); skipFUSE && fuse {
				err = errors.New("on a FUSE filesystem, skipped for a disk store")
			} else {
				err = probeTempDir(dir)
			}
		}
		if err == nil {
			return dir, nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", candidate, err))
	}
	if len(failures) == 0 {
		return "", errors.New("naming: no usable temporary directory: no candidates")
	}
	return "", fmt.Errorf("naming: no usable temporary directory (tried %s)", strings.Join(failures, "; "))
}

// probeTempDir checks dir as Python's _get_default_tempdir does: a file with a
// fresh random name, opened O_CREAT|O_EXCL|O_NOFOLLOW with mode 0600, is
// written, closed and removed. A name that happens to exist is drawn again, up
// to MaxDraws times; any other failure makes dir unusable.
func probeTempDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return errorCause(err)
	}
	if !info.IsDir() {
		return errors.New("not a directory")
	}
	for range MaxDraws {
		probe := filepath.Join(dir, TempPrefix+RandomString(8))
		f, err := os.OpenFile(probe, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return errorCause(err)
		}
		_, writeErr := f.Write([]byte("blat"))
		closeErr := f.Close()
		removeErr := os.Remove(probe)
		if err := errors.Join(writeErr, closeErr, removeErr); err != nil {
			return err
		}
		return nil
	}
	return ErrExhausted
}

// errorCause drops the operation and path of a *PathError, which the caller's
// message already names.
func errorCause(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}

// IsUnder reports whether path is dir or inside it, comparing whole
// components: /tmpx is not under /tmp. Both are cleaned lexically first; the
// caller makes them both absolute (or both relative to the same directory).
func IsUnder(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	if path == dir {
		return true
	}
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		dir += string(filepath.Separator)
	}
	return strings.HasPrefix(path, dir)
}
