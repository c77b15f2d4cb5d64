package fs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountHelperError is a mount that fusermount3 refused, with what it said: its stderr, on one line, is the
// cause a user can act on (go-fuse's own error is only a raw wait status).
type MountHelperError struct {
	// Message is fusermount3's stderr, its lines joined by "; ".
	Message string
	Err     error
}

func (e *MountHelperError) Error() string { return e.Message }

func (e *MountHelperError) Unwrap() error { return e.Err }

// stderrSwap serializes newServerTellingCause's use of os.Stderr.
var stderrSwap sync.Mutex

// maxHelperOutput bounds what is kept of fusermount3's stderr: its messages are one or two lines.
const maxHelperOutput = 4 << 10

// newServerTellingCause is fuse.NewServer, with fusermount3's stderr caught and turned into the error. go-fuse
// starts fusermount3 (a user's mount, or root's when the direct mount fails) with the process's os.Stderr as
// the helper's stderr, so that its message would reach a terminal as a second line beside a raw wait status,
// or nobody at all under --daemon. os.Stderr points at a pipe while the server mounts; the logger and
// everything else hold the *os.File they were given before, so nothing but the helper's output lands there.
func newServerTellingCause(raw fuse.RawFileSystem, mountpoint string, opts *fuse.MountOptions) (*fuse.Server, string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		server, err := fuse.NewServer(raw, mountpoint, opts)
		return server, "", err
	}
	said := make(chan string, 1)
	go func() {
		defer r.Close()
		out, _ := io.ReadAll(io.LimitReader(r, maxHelperOutput))
		_, _ = io.Copy(io.Discard, r)
		said <- oneLine(out)
	}()
	stderrSwap.Lock()
	saved := os.Stderr
	os.Stderr = w
	server, err := fuse.NewServer(raw, mountpoint, opts)
	os.Stderr = saved
	stderrSwap.Unlock()
	w.Close()
	message := <-said
	if err != nil && message != "" {
		return nil, "", &MountHelperError{Message: message, Err: err}
	}
	return server, message, err
}

// oneLine joins the non-empty lines of out with "; ".
func oneLine(out []byte) string {
	var lines []string
	for _, line := range bytes.Split(out, []byte("\n")) {
		if s := strings.TrimSpace(string(line)); s != "" {
			lines = append(lines, s)
		}
	}
	return strings.Join(lines, "; ")
}

// IsMountHelperError reports whether err is a mount that fusermount3 refused and explained.
func IsMountHelperError(err error) bool {
	var helper *MountHelperError
	return errors.As(err, &helper)
}
