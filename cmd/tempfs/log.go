package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Where a mount's log goes (README "Logs"):
//
//   - --log FILE: appended to FILE (created 0600), whatever stderr is;
//   - stderr goes somewhere (a terminal, a pipe, systemd's journal for a unit): stderr;
//   - stderr goes nowhere (/dev/null or closed: --daemon, the fstab helper): the system log, through the
//     journal's native socket or syslog's /dev/log; on a machine with neither (a container), a file of the
//     mount's own in the store's parent directory, tempfs-UID-MOUNTPOINT.log (fallbackLogPath), which the
//     store's cleanup never touches. It is capped: past fallbackLogMax it becomes NAME.1 (replacing the one
//     before) and a fresh file starts, so that a mount never holds more than twice the cap on disk.
//
// A log written to a file also takes over stderr (fd 2) when that went nowhere, so that what the Go runtime
// itself prints when it dies (a fatal error, an unrecovered panic) lands beside the daemon's own lines.

// systemLog sockets, variables so that a unit test can point them at its own.
var (
	journalSocket = "/run/systemd/journal/socket"
	syslogSockets = []string{"/dev/log", "/var/run/syslog", "/var/run/log"}
)

// logIdentifier is the name the system log shows for tempfs's lines.
const logIdentifier = "tempfs"

// logLevel is the level of a mount's log: debug with --debug or --fuse-debug, info otherwise.
func (o *mountOptions) logLevel() slog.Level {
	if o.debug || o.fuseLogs {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// openLogFile opens a log file for appending: created 0600 if missing, never through a symlink, and only a
// regular file of this user's, since the fallback file sits in a directory others may write to (/tmp).
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file %s: %w", path, errnoOf(err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("log file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (st.Uid != uint32(os.Geteuid()) && st.Uid != 0) {
		f.Close()
		return nil, fmt.Errorf("log file %s is not a regular file of this user's: give another with --log", path)
	}
	return f, nil
}

// fallbackLogPath is where a mount whose stderr goes nowhere logs on a machine without a system log: a file per
// user and mountpoint ("/tmp/scratch" gives tempfs-0-tmp-scratch.log), so that daemons never share one.
func fallbackLogPath(storeParent, mountpoint string) string {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r < ' ' || r == 0x7f {
			return '-'
		}
		return r
	}, strings.Trim(mountpoint, "/"))
	if name == "" {
		name = "root"
	}
	// A file name has at most 255 bytes; keep the mountpoint's end, which tells mounts apart.
	if limit := 255 - len("tempfs--.log.1") - 10; len(name) > limit {
		name = name[len(name)-limit:]
	}
	return filepath.Join(storeParent, "tempfs-"+strconv.Itoa(os.Geteuid())+"-"+name+".log")
}

// fallbackLogMax is the size at which the fallback log file is rotated.
const fallbackLogMax = 1 << 20

// cappedFile is a log file that is renamed to NAME.1 once it passes limit bytes, and started afresh.
type cappedFile struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	limit   int64
	takeFD2 bool // point fd 2 at each new file (the daemon's stderr goes nowhere otherwise)
}

func openCappedFile(path string, limit int64, takeFD2 bool) (*cappedFile, error) {
	c := &cappedFile{path: path, limit: limit, takeFD2: takeFD2}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cappedFile) open() error {
	f, err := openLogFile(c.path)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if c.takeFD2 {
		_ = unix.Dup3(int(f.Fd()), 2, 0)
	}
	c.f, c.size = f, st.Size()
	return nil
}

func (c *cappedFile) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size > 0 && c.size+int64(len(p)) > c.limit {
		// Rotate: the old lines stay in NAME.1 (one generation), the file starts again.
		if err := os.Rename(c.path, c.path+".1"); err == nil {
			c.f.Close()
			if err := c.open(); err != nil {
				return 0, err
			}
		}
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

func (c *cappedFile) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}

// stderrGoesNowhere reports whether fd 2 is /dev/null or closed: whatever is written there is lost.
func stderrGoesNowhere() bool {
	var st, null unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		return true
	}
	if err := unix.Stat(os.DevNull, &null); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}

// mountLog is the logger of a mount and what must be closed when the mount is gone.
type mountLog struct {
	*slog.Logger
	// where says where the lines go, for the first one.
	where  string
	closer io.Closer
}

func (l *mountLog) Close() {
	if l.closer != nil {
		_ = l.closer.Close()
	}
}

// openMountLog sets up the mount's log as the comment at the top of this file says.
func (o *mountOptions) openMountLog(storeParent, mountpoint string) (*mountLog, error) {
	opts := &slog.HandlerOptions{Level: o.logLevel()}
	nowhere := stderrGoesNowhere()
	path := o.logFile
	if path == "" && !nowhere {
		return &mountLog{Logger: slog.New(slog.NewTextHandler(os.Stderr, opts)), where: "stderr"}, nil
	}
	if path == "" {
		if h, closer, where, ok := systemLogHandler(opts); ok {
			return &mountLog{Logger: slog.New(h), where: where, closer: closer}, nil
		}
		path = fallbackLogPath(storeParent, mountpoint)
		c, err := openCappedFile(path, fallbackLogMax, nowhere)
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		return &mountLog{Logger: slog.New(slog.NewTextHandler(c, opts)), where: path + " (rotated to .1 past 1 MiB)", closer: c}, nil
	}
	f, err := openLogFile(path)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if nowhere {
		// The runtime's own last words (fatal errors, unrecovered panics) go to fd 2.
		_ = unix.Dup3(int(f.Fd()), 2, 0)
	}
	return &mountLog{Logger: slog.New(slog.NewTextHandler(f, opts)), where: path, closer: f}, nil
}

// systemLogHandler connects to the journal, or else to syslog, and returns a handler that sends each record
// there with its priority; ok is false when the machine has neither.
func systemLogHandler(opts *slog.HandlerOptions) (h slog.Handler, closer io.Closer, where string, ok bool) {
	if conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: journalSocket, Net: "unixgram"}); err == nil {
		return newLineHandler(opts, func(level slog.Level, line []byte) error {
			var msg bytes.Buffer
			fmt.Fprintf(&msg, "PRIORITY=%d\nSYSLOG_IDENTIFIER=%s\nMESSAGE=%s\n", journalPriority(level), logIdentifier, line)
			_, err := conn.Write(msg.Bytes())
			return err
		}), conn, "the journal", true
	}
	for _, path := range syslogSockets {
		for _, network := range []string{"unixgram", "unix"} {
			w, err := syslog.Dial(network, path, syslog.LOG_DAEMON|syslog.LOG_INFO, logIdentifier)
			if err != nil {
				continue
			}
			return newLineHandler(opts, func(level slog.Level, line []byte) error {
				return syslogSend(w, level, string(line))
			}), w, "syslog (" + path + ")", true
		}
	}
	return nil, nil, "", false
}

// journalPriority is syslog's priority number of a level: err 3, warning 4, info 6, debug 7.
func journalPriority(level slog.Level) int {
	switch {
	case level >= slog.LevelError:
		return 3
	case level >= slog.LevelWarn:
		return 4
	case level >= slog.LevelInfo:
		return 6
	}
	return 7
}

func syslogSend(w *syslog.Writer, level slog.Level, line string) error {
	switch journalPriority(level) {
	case 3:
		return w.Err(line)
	case 4:
		return w.Warning(line)
	case 6:
		return w.Info(line)
	}
	return w.Debug(line)
}

// lineHandler formats each record as one logfmt line (as on stderr, without the time, which the system log
// adds) and hands it to send with the record's level.
type lineHandler struct {
	shared *lineShared
	text   slog.Handler
}

// lineShared is what every handler derived from one lineHandler (WithAttrs, WithGroup) writes through.
type lineShared struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	send func(slog.Level, []byte) error
}

func newLineHandler(opts *slog.HandlerOptions, send func(slog.Level, []byte) error) *lineHandler {
	shared := &lineShared{send: send}
	noTime := *opts
	noTime.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	return &lineHandler{shared: shared, text: slog.NewTextHandler(&shared.buf, &noTime)}
}

func (h *lineHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.text.Enabled(ctx, level)
}

func (h *lineHandler) Handle(ctx context.Context, r slog.Record) error {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	h.shared.buf.Reset()
	if err := h.text.Handle(ctx, r); err != nil {
		return err
	}
	line := bytes.TrimRight(h.shared.buf.Bytes(), "\n")
	if err := h.shared.send(r.Level, line); err != nil {
		return errors.Join(errors.New("sending a log line to the system log"), err)
	}
	return nil
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &lineHandler{shared: h.shared, text: h.text.WithAttrs(attrs)}
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	return &lineHandler{shared: h.shared, text: h.text.WithGroup(name)}
}
