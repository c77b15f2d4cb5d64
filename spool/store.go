package spool

// Lock order: Store.mu is a leaf; it is held only around the store's own descriptors (and, for
// writing, while a store that disappeared is made again).
//
// The store directory protocol, which lets daemons that start at the same time under one parent
// clean up after dead ones without ever removing a live store:
//
//   - A live daemon holds flock(LOCK_EX) on its store's ".lock" for its whole life; the kernel drops
//     the lock when the daemon dies, however it dies. Age is never a criterion.
//   - A cleaner removes a "tempfs-store-*" directory (owned by our euid) only after taking that lock
//     itself with LOCK_NB, or when the directory has no ".lock" at all. It unlinks ".lock" while
//     still holding the lock, then removes the directory.
//   - A creator can lose the race in the short window between mkdir and flock: the directory may
//     vanish before it creates ".lock" (openat answers ENOENT), or a cleaner may take and unlink the
//     fresh ".lock" before the creator locks it (the creator's flock then succeeds on an inode whose
//     link count is 0). In both cases it starts again under a new name.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	storePrefix   = "tempfs-store-"
	storeLockName = ".lock"
	// storeNameRandomChars random [a-z0-9] characters follow storePrefix (36^10 ≈ 3.7e15 names).
	storeNameRandomChars = 10
	storeCreateAttempts  = 100
)

// Store is the private directory that holds rolled-over files. Backing files never have a name
// there (O_TMPFILE, or unlinked right after creation), so a daemon killed with SIGKILL leaves at
// most an empty directory, which the next OpenStore on the same parent removes.
//
// Every operation goes through the directory's fd (openat/unlinkat with O_NOFOLLOW); nothing is
// written outside the directory and no symlink inside it is followed.
type Store struct {
	parent string
	logger *slog.Logger

	// tmpfileUnsupported remembers that the store's filesystem refused O_TMPFILE, so backing files
	// are created by name and unlinked at once.
	tmpfileUnsupported atomic.Bool

	mu       sync.RWMutex
	closed   bool
	path     string
	name     string
	parentFd int // the parent directory, to remove the store directory by name at Close
	dirFd    int
	lockFd   int // holds LOCK_EX for the store's life
	// generation counts the store directories made so far (1 at start), so that concurrent failures
	// make the store again only once.
	generation int64
	// lastError is the last failure to make a backing file, "" after a success.
	lastError string
}

// ErrStoreUnusable: the store directory disappeared or stopped working while mounted and could not be
// made again; the operation that needed disk space fails with ENOSPC, as on a full disk.
var ErrStoreUnusable = fmt.Errorf("spool: the disk store is gone or unusable: %w", syscall.ENOSPC)

// OpenStore creates a private store directory under parent, after removing the stores that dead
// daemons left there. parent must be a directory owned by us or by root, and not writable by
// other users unless it has the sticky bit (as /tmp): like ssh with loose key permissions, we
// refuse a place where someone else could rename or replace our directory.
// It logs what it cleans up to slog.Default().
func OpenStore(parent string) (*Store, error) {
	return openStore(parent, slog.Default())
}

// OpenStoreWithLogger is OpenStore logging to log, also later: a store deleted while in use and made
// again, or unusable, is logged there.
func OpenStoreWithLogger(parent string, log *slog.Logger) (*Store, error) {
	return openStore(parent, log)
}

func openStore(parent string, log *slog.Logger) (*Store, error) {
	parentFd, err := openParent(parent)
	if err != nil {
		return nil, err
	}
	removeStaleStores(parentFd, parent, log)
	s, err := createStore(parentFd, parent, log)
	if err != nil {
		unix.Close(parentFd)
		return nil, err
	}
	return s, nil
}

// openParent opens parent and checks that it is a safe place for a store.
func openParent(parent string) (int, error) {
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("spool: store parent %s: %w", parent, err)
	}
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("spool: store parent %s: %w", parent, err)
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		err = fmt.Errorf("spool: store parent %s is not a directory", parent)
	case st.Uid != euid && st.Uid != 0:
		err = fmt.Errorf("spool: store parent %s is owned by uid %d, not by us (%d) or root", parent, st.Uid, euid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		err = fmt.Errorf("spool: store parent %s is writable by other users (mode %#o) and has no sticky bit", parent, st.Mode&0o7777)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// createStore makes the store directory, following the protocol at the top of this file.
func createStore(parentFd int, parent string, log *slog.Logger) (*Store, error) {
	for range storeCreateAttempts {
		name := storePrefix + randomName(storeNameRandomChars)
		err := unix.Mkdirat(parentFd, name, 0o700)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("spool: creating a store in %s: %w", parent, err)
		}
		dirFd, err := unix.Openat(parentFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			continue // a cleaner removed it already
		}
		if err != nil {
			return nil, fmt.Errorf("spool: opening store %s/%s: %w", parent, name, err)
		}
		lockFd, retry, err := lockNewStore(dirFd)
		if err != nil || retry {
			unix.Close(dirFd)
			if retry {
				continue
			}
			return nil, fmt.Errorf("spool: store %s/%s: %w", parent, name, err)
		}
		return &Store{
			parent:     parent,
			path:       filepath.Join(parent, name),
			name:       name,
			logger:     log,
			parentFd:   parentFd,
			dirFd:      dirFd,
			lockFd:     lockFd,
			generation: 1,
		}, nil
	}
	return nil, fmt.Errorf("spool: no free store name in %s after %d attempts", parent, storeCreateAttempts)
}

// lockNewStore checks a freshly made store directory and takes its lock. retry means a cleaner
// got there first and the caller should start over with a new name.
func lockNewStore(dirFd int) (lockFd int, retry bool, err error) {
	// mkdir's mode went through the umask; the store must be exactly 0700 whatever the umask is.
	// ENOENT: a cleaner removed the directory first, and the parent's filesystem (a FUSE loopback, say)
	// answers for the removed directory by its path.
	if err := unix.Fchmod(dirFd, 0o700); err != nil {
		return -1, err == unix.ENOENT, ignoreENOENT(err)
	}
	var st unix.Stat_t
	if err := fstat(dirFd, &st); err != nil {
		return -1, err == unix.ENOENT, ignoreENOENT(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o7777 != 0o700 {
		return -1, false, fmt.Errorf("not a 0700 directory of ours (mode %#o, uid %d)", st.Mode, st.Uid)
	}
	lockFd, err = unix.Openat(dirFd, storeLockName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err == unix.ENOENT {
		return -1, true, nil
	}
	if err != nil {
		return -1, false, err
	}
	if err := flock(lockFd, unix.LOCK_EX); err != nil {
		unix.Close(lockFd)
		return -1, false, err
	}
	if err := fstat(lockFd, &st); err != nil {
		unix.Close(lockFd)
		return -1, false, err
	}
	if st.Nlink == 0 {
		unix.Close(lockFd)
		return -1, true, nil
	}
	return lockFd, false, nil
}

// Path is the store directory's path, for messages and for refusing a mountpoint inside it. It changes
// when a store deleted while mounted is made again.
func (s *Store) Path() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.path
}

// health says how many times the store was made again and the last failure to use it ("" if none
// since the last success).
func (s *Store) health() (recreated int64, lastError string) {
	if s == nil {
		return 0, ""
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	lastError = s.lastError
	var st unix.Stat_t
	if lastError == "" && !s.closed && fstat(s.dirFd, &st) == nil && st.Nlink == 0 {
		lastError = "the store directory was deleted; a new one is made when a file next needs the disk"
	}
	return s.generation - 1, lastError
}

// FreeBytes is the space the store's filesystem has left for us (f_bavail × f_bsize).
func (s *Store) FreeBytes() (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(s.dirFd, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs of store %s: %w", s.path, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// CreateBacking makes an anonymous read-write file in the store. The caller owns it.
func (s *Store) CreateBacking() (*os.File, error) {
	fd, err := s.createBackingFd()
	if err != nil {
		return nil, mapIOError("create backing file", err)
	}
	return os.NewFile(uintptr(fd), "tempfs-backing"), nil
}

// createBackingFd is CreateBacking as a raw fd, which Files keep instead of an *os.File (smaller,
// and no finalizer that could close it behind their back). When the store directory was deleted or
// made unusable while mounted, it makes a new one under the same parent, with the checks of the start,
// and tries once more; if that fails too, it answers ErrStoreUnusable (logged once per failure spell).
// Descriptor and space errors come back as they are: the store is fine, the daemon or the disk is full.
func (s *Store) createBackingFd() (int, error) {
	fd, gen, err := s.tryCreateBackingFd()
	if err == nil || !storeBroken(err) {
		s.noteResult(err)
		return fd, err
	}
	if rerr := s.recreate(gen, err); rerr != nil {
		s.noteResult(rerr)
		return -1, fmt.Errorf("%w: %v", ErrStoreUnusable, rerr)
	}
	fd, _, err = s.tryCreateBackingFd()
	if err != nil && storeBroken(err) {
		err = fmt.Errorf("%w: %v", ErrStoreUnusable, err)
	}
	s.noteResult(err)
	return fd, err
}

// storeBroken tells the errors of a store directory that is gone or was made unusable (deleted,
// renamed away, its mode or owner changed) from those of a full disk or a full descriptor table.
func storeBroken(err error) bool {
	switch {
	case errors.Is(err, ErrClosed):
		return false
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM),
		errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ESTALE), errors.Is(err, unix.EROFS),
		errors.Is(err, unix.EIO), errors.Is(err, unix.EEXIST):
		return true
	}
	return false
}

// noteResult records the outcome of making a backing file for status, and logs the first failure of a
// spell of them.
func (s *Store) noteResult(err error) {
	if err != nil && !storeBroken(err) && !errors.Is(err, ErrStoreUnusable) {
		return // a full disk or descriptor table: reported by the caller, not a store failure
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		if s.lastError != "" {
			s.logger.Info("spool: the disk store works again", "store", s.path)
		}
		s.lastError = ""
		return
	}
	if s.lastError == "" {
		s.logger.Error("spool: the disk store is unusable: writes that need disk space fail with ENOSPC", "store", s.path, "err", err)
	}
	s.lastError = err.Error()
}

// recreate makes a new store directory under the same parent after the current one failed with cause,
// unless another caller already did since generation gen.
func (s *Store) recreate(gen int64, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.generation != gen {
		return nil // made again meanwhile
	}
	parentFd, err := openParent(s.parent)
	if err != nil {
		return err
	}
	fresh, err := createStore(parentFd, s.parent, s.logger)
	if err != nil {
		unix.Close(parentFd)
		return err
	}
	// The old directory, if it is still there (made unusable rather than deleted), goes as at Close.
	var st unix.Stat_t
	if fstat(s.dirFd, &st) == nil && st.Nlink > 0 {
		removeRegularEntries(s.dirFd, s.logger, s.path)
		_ = unix.Unlinkat(s.dirFd, storeLockName, 0)
		_ = unix.Unlinkat(s.parentFd, s.name, unix.AT_REMOVEDIR)
	}
	for _, fd := range []int{s.lockFd, s.dirFd, s.parentFd} {
		unix.Close(fd)
	}
	s.logger.Warn("spool: the disk store was deleted or became unusable while mounted; made a new one",
		"old", s.path, "new", fresh.path, "cause", cause)
	s.path, s.name = fresh.path, fresh.name
	s.parentFd, s.dirFd, s.lockFd = fresh.parentFd, fresh.dirFd, fresh.lockFd
	s.generation++
	return nil
}

// tryCreateBackingFd makes a backing file in the current store directory; gen is that directory's
// generation.
func (s *Store) tryCreateBackingFd() (fd int, gen int64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return -1, s.generation, ErrClosed
	}
	fd, err = s.createBackingFdLocked()
	return fd, s.generation, err
}

// createBackingFdLocked makes a backing file in s.dirFd; s.mu is held for reading.
func (s *Store) createBackingFdLocked() (int, error) {
	if !s.tmpfileUnsupported.Load() {
		fd, err := unix.Openat(s.dirFd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		switch err {
		case nil:
			return fd, nil
		case unix.EOPNOTSUPP, unix.EISDIR, unix.EINVAL:
			s.tmpfileUnsupported.Store(true)
		default:
			return -1, err
		}
	}
	for range storeCreateAttempts {
		name := "backing-" + randomName(storeNameRandomChars)
		fd, err := unix.Openat(s.dirFd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return -1, err
		}
		// ENOENT: a cleaner that saw the store before its lock existed removed the name; the
		// file is unnamed either way.
		if err := unix.Unlinkat(s.dirFd, name, 0); err != nil && err != unix.ENOENT {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	return -1, fmt.Errorf("no free backing file name after %d attempts: %w", storeCreateAttempts, unix.EEXIST)
}

// Close removes the store directory and releases its lock. Files keep their backing fds (the
// files have no names, so the directory can go first). Calling Close again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	removeRegularEntries(s.dirFd, s.logger, s.path)
	// The lock name goes before the lock itself, so no cleaner ever finds it unlocked.
	if err := unix.Unlinkat(s.dirFd, storeLockName, 0); err != nil && err != unix.ENOENT {
		errs = append(errs, fmt.Errorf("spool: removing %s/%s: %w", s.path, storeLockName, err))
	}
	if err := unix.Unlinkat(s.parentFd, s.name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		errs = append(errs, fmt.Errorf("spool: removing store %s: %w", s.path, err))
	}
	for _, fd := range []int{s.lockFd, s.dirFd, s.parentFd} {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("spool: closing store %s: %w", s.path, err))
		}
	}
	return errors.Join(errs...)
}

// removeStaleStores removes the store directories of dead daemons under the parent. Errors are
// logged and skipped: a store we cannot remove is someone else's problem, not a reason to fail.
func removeStaleStores(parentFd int, parent string, log *slog.Logger) {
	for _, name := range staleStoreCandidates(parentFd, parent, log) {
		removeStoreIfDead(parentFd, filepath.Join(parent, name), name, log)
	}
}

// staleStoreCandidates lists the "tempfs-store-*" directories under the parent owned by our euid
// (without following symlinks).
func staleStoreCandidates(parentFd int, parent string, log *slog.Logger) []string {
	names, err := readDirNames(parentFd)
	if err != nil {
		log.Warn("spool: cannot list store parent for stale stores", "parent", parent, "err", err)
		return nil
	}
	euid := uint32(os.Geteuid())
	var candidates []string
	for _, name := range names {
		if !strings.HasPrefix(name, storePrefix) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(parentFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Uid == euid {
			candidates = append(candidates, name)
		}
	}
	return candidates
}

// removeStoreIfDead removes one store directory unless a live daemon holds its lock.
func removeStoreIfDead(parentFd int, path, name string, log *slog.Logger) {
	dirFd, err := unix.Openat(parentFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return // gone, or replaced by a symlink: not ours to touch
	}
	defer unix.Close(dirFd)
	var st unix.Stat_t
	if err := fstat(dirFd, &st); err != nil || st.Uid != uint32(os.Geteuid()) {
		return
	}
	lockFd, err := unix.Openat(dirFd, storeLockName, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		lockFd = -1 // dead before it locked, or being created right now: see the protocol
	case err != nil:
		log.Warn("spool: cannot open the lock of a store; leaving it", "store", path, "err", err)
		return
	default:
		defer unix.Close(lockFd)
		if err := unix.Flock(lockFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			if err != unix.EWOULDBLOCK {
				log.Warn("spool: cannot lock a store; leaving it", "store", path, "err", err)
			}
			return // live
		}
	}
	removeRegularEntries(dirFd, log, path)
	if lockFd >= 0 {
		if err := unix.Unlinkat(dirFd, storeLockName, 0); err != nil && err != unix.ENOENT {
			log.Warn("spool: cannot remove the lock of a stale store", "store", path, "err", err)
		}
	}
	if err := unix.Unlinkat(parentFd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		level := slog.LevelWarn
		if lockFd < 0 && err == unix.ENOTEMPTY {
			level = slog.LevelDebug // a daemon starting right now has just made its lock: it lives
		}
		log.Log(context.Background(), level, "spool: cannot remove a stale store", "store", path, "err", err)
		return
	}
	log.Info("spool: removed the store of a dead daemon", "store", path)
}

// removeRegularEntries unlinks the regular files in a store directory other than its lock (at
// most names of backing files caught between create and unlink). Anything else is left alone and
// logged: a store never holds it, so it is not ours to judge.
func removeRegularEntries(dirFd int, log *slog.Logger, path string) {
	names, err := readDirNames(dirFd)
	if errors.Is(err, unix.ENOENT) {
		return // removed since it was opened (its daemon closed it, or another start swept it): nothing to do
	}
	if err != nil {
		log.Warn("spool: cannot list a store", "store", path, "err", err)
		return
	}
	for _, name := range names {
		if name == storeLockName {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			log.Warn("spool: leaving an unexpected entry in a store", "store", path, "entry", name, "mode", fmt.Sprintf("%#o", st.Mode))
			continue
		}
		if err := unix.Unlinkat(dirFd, name, 0); err != nil && err != unix.ENOENT {
			log.Warn("spool: cannot remove a store entry", "store", path, "entry", name, "err", err)
		}
	}
}

// readDirNames lists a directory given by fd, without changing that fd's position.
func readDirNames(dirFd int) ([]string, error) {
	fd, err := unix.Openat(dirFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	dir := os.NewFile(uintptr(fd), "store-dir")
	defer dir.Close()
	return dir.Readdirnames(-1)
}

func flock(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}

// randomName draws n characters from [a-z0-9] with crypto/rand, so names cannot be predicted.
func randomName(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < n {
		if _, err := rand.Read(buf); err != nil {
			panic(err) // crypto/rand.Read does not fail on Linux (it would crash the program itself)
		}
		if buf[0] >= 252 { // 252 = 7×36: reject the rest so that every character is equally likely
			continue
		}
		b.WriteByte(alphabet[int(buf[0])%len(alphabet)])
	}
	return b.String()
}

// ignoreENOENT is err, or nil for ENOENT (which the caller then answers with a retry).
func ignoreENOENT(err error) error {
	if err == unix.ENOENT {
		return nil
	}
	return err
}
