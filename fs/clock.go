package fs

import (
	"os"
	"strings"
	"time"
)

// Clock is where the filesystem reads the time. Wall is what stat shows (atime, mtime, ctime, birth time);
// Mono is the time the daemon has lived, which never steps: --max-age counts an entry's idle time on it, so
// that a step of the wall clock (NTP's first sync, a resumed VM, date -s) neither removes young entries nor
// keeps old ones forever.
type Clock interface {
	Wall() time.Time
	Mono() time.Duration // elapsed since monoEpoch
}

// monoEpoch is the origin of Mono readings: the package's start, with Go's monotonic reading.
var monoEpoch = time.Now()

// clock is the process's clock. It is set once, before any FS is built (UseClock), and only read after that.
var clock Clock = systemClock{}

// UseClock replaces the clock; call it before New. It exists for tests (see TestClockFile).
func UseClock(c Clock) { clock = c }

type systemClock struct{}

func (systemClock) Wall() time.Time     { return time.Now() }
func (systemClock) Mono() time.Duration { return time.Since(monoEpoch) }

// monoNow is the current Mono reading in nanoseconds, the unit of the idle stamps.
func monoNow() int64 { return int64(clock.Mono()) }

// monoOf is where t, a reading of the process's monotonic clock (time.Now(), possibly moved by Add), falls on
// the Mono timeline.
func monoOf(t time.Time) int64 { return int64(t.Sub(monoEpoch)) }

// TestClockFile is a Clock for tests of the daemon that must not step the system's clock: it is the system
// clock moved by two offsets read from the file at path on every reading, "WALL MONO" as Go durations
// ("2h 0s", "-2h 90s"). A missing or unreadable file means no offsets. The file must not be on the mount it
// serves. Every reading costs a file read: this is never the clock of a real mount.
type TestClockFile string

func (c TestClockFile) offsets() (wall, mono time.Duration) {
	raw, err := os.ReadFile(string(c))
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(string(raw))
	if len(fields) > 0 {
		wall, _ = time.ParseDuration(fields[0])
	}
	if len(fields) > 1 {
		mono, _ = time.ParseDuration(fields[1])
	}
	return wall, mono
}

func (c TestClockFile) Wall() time.Time {
	wall, _ := c.offsets()
	return time.Now().Add(wall)
}

func (c TestClockFile) Mono() time.Duration {
	_, mono := c.offsets()
	return time.Since(monoEpoch) + mono
}
