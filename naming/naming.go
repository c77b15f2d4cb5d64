// Package naming holds tempfs's rules for names, with no knowledge of FUSE or of
// how files are stored: template parsing and random name drawing (docs/guarantees.md,
// Names and templates), validation of path components, the temp-dir search that Python's
// tempfile.gettempdir performs, and the size syntax of the command line.
//
// Errors are plain Go errors that wrap the errno the filesystem should answer,
// so the fs package maps them with errors.Is in one place.
package naming

import (
	"errors"
	"fmt"
	"syscall"
)

// Alphabet is Python tempfile's alphabet for random names. It has no 'X', which
// is what makes a generated name never a template.
const Alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"

// MinRun is the shortest run of 'X' that makes a name a template, as mkstemp.
const MinRun = 6

// MaxDraws is how many names Draw tries before giving up, as Python's TMP_MAX.
const MaxDraws = 100

// MaxNameLen is the longest path component in bytes, as Linux's NAME_MAX.
const MaxNameLen = 255

// TempPrefix is Python's gettempprefix(): the default prefix of generated names.
const TempPrefix = "tmp"

var (
	// ErrNotTemplate reports a name with no run of at least MinRun 'X'.
	ErrNotTemplate = errors.New("naming: not a template")
	// ErrMultipleRuns reports a component with two or more runs of at least
	// MinRun 'X': replacing one would still leave a template, so it is refused.
	ErrMultipleRuns = fmt.Errorf("naming: more than one run of %d or more X in one name: %w", MinRun, syscall.EINVAL)
	// ErrExhausted reports that MaxDraws candidate names all existed.
	ErrExhausted = fmt.Errorf("naming: %d random names all exist: %w", MaxDraws, syscall.EEXIST)
	// ErrNameTooLong reports a component longer than MaxNameLen bytes.
	ErrNameTooLong = fmt.Errorf("naming: name longer than %d bytes: %w", MaxNameLen, syscall.ENAMETOOLONG)
	// ErrInvalidName reports a component that cannot name an entry: empty, ".",
	// "..", or containing '/' or NUL.
	ErrInvalidName = fmt.Errorf("naming: invalid name: %w", syscall.EINVAL)
)
