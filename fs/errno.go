package fs

import (
	"errors"
	"log/slog"
	"syscall"
)

// toErrno is the one place where Go errors become FUSE answers. The core packages return sentinel errors that
// wrap an errno (spool.ErrNoSpace wraps ENOSPC, naming.ErrExhausted wraps EEXIST, ...), so errors.As finds it.
// Anything else is a bug or an unexpected I/O failure: it is logged with its cause before it collapses to EIO,
// so that an EIO seen by a user can always be traced in the daemon's log.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.EMFILE || errno == syscall.ENFILE {
			// The daemon's descriptor table (or the system's) is full, not the caller's: EMFILE would
			// tell the caller to close its own files. tmpfs out of inodes says ENOSPC.
			log.Error("answering ENOSPC for a descriptor limit of the daemon", "op", op, "err", err)
			return syscall.ENOSPC
		}
		return errno
	}
	log.Error("answering EIO", "op", op, "err", err)
	return syscall.EIO
}
