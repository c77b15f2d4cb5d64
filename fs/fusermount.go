package fs

import (
	"bytes"
	"errors"
	"strings"
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

// maxHelperOutput bounds what is kept of fusermount3's stderr: its messages are one or two lines.
const maxHelperOutput = 4 << 10

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
