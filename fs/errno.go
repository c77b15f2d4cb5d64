package fs

import (
	"errors"
	"log/slog"
	"syscall"
)

// toErrno is the one place where Go errors become FUSE answers. The core packages return sentinel errors that
// wrap an errno (spool.ErrNoSpace wraps ENOSPC, spool.ErrOverQuota EDQUOT, naming.ErrExhausted EEXIST, ...), so
// errors.As finds it.
// Anything else is a bug or an unexpected I/O failure: it is logged with its cause before it collapses to EIO,
// so that an EIO seen by a user can always be traced in the daemon's log.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if outOfDescriptors(err) {
		log.Error("answering ENOSPC for a descriptor limit of the daemon", "op", op, "err", err)
		return syscall.ENOSPC
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	log.Error("answering EIO", "op", op, "err", err)
	return syscall.EIO
}

// outOfDescriptors reports that the daemon's descriptor table (or the system's) is full. That is a limit of the
// daemon's, not the caller's: EMFILE would tell the caller to close its own files. It is answered ENOSPC, as
// tmpfs answers when it is out of inodes, never EMFILE.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// discardLog is for a caller of toErrno that has logged the cause its own way.
var discardLog = slog.New(slog.DiscardHandler)
