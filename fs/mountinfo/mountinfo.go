// Package mountinfo reads mount tables (/proc/self/mountinfo, /proc/1/mountinfo; proc(5)). It is the one place
// that knows the table's format, octal escapes included; what tempfs does with a mount (unmount it, abort its
// connection, tell a dead one) is package fs's. It is a package of its own because fs/owner, which fs imports,
// and cmd/tempfs/limits read mount tables too.
package mountinfo

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of a mount table.
type Mount struct {
	// Device is "major:minor"; FUSE names its connection directories after the minor number.
	Device string
	// Root is the directory of the filesystem mounted at Point (a cgroup, for a cgroup mount).
	Root string
	// Point is where it is mounted.
	Point string
	// FSType is the filesystem type with its subtype: "fuse.tempfs" for tempfs, "tmpfs", "cgroup2", ...
	FSType string
	// Source and SuperOptions are the fields after the type: "tmpfs", "rw,size=1024k"; a cgroup v1 mount
	// lists its controllers among its super options.
	Source, SuperOptions string
}

// Parse reads a mount table, in its order: later lines are mounted on top of earlier ones. Lines too short to
// name a mountpoint are skipped.
func Parse(table []byte) []Mount {
	var mounts []Mount
	for line := range strings.Lines(string(table)) {
		// id parent major:minor root mountpoint options [optional fields...] - fstype source superoptions
		pre, post, _ := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if len(fields) < 5 {
			continue
		}
		m := Mount{Device: fields[2], Root: Unescape(fields[3]), Point: Unescape(fields[4])}
		tail := strings.Fields(post)
		for i, f := range []*string{&m.FSType, &m.Source, &m.SuperOptions} {
			if i < len(tail) {
				*f = tail[i]
			}
		}
		mounts = append(mounts, m)
	}
	return mounts
}

// Find returns the topmost mount whose mountpoint is path (already absolute and clean, symlinks resolved), from
// /proc/self/mountinfo. It never touches path itself, so it works on a dead mount.
func Find(path string) (Mount, bool) {
	table, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Mount{}, false
	}
	clean := filepath.Clean(path)
	var found Mount
	ok := false
	for _, m := range Parse(table) {
		if m.Point == clean {
			// Later lines are mounted on top of earlier ones: the last match is the one path shows.
			found, ok = m, true
		}
	}
	return found, ok
}

// Unescape undoes the octal escapes of a mountinfo field (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
