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
		return errno
	}
	log.Error("answering EIO", "op", op, "err", err)
	return syscall.EIO
}
