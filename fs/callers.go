package fs

import (
	"os"
	"strconv"
	"strings"
)

// processOf returns the process id of the thread behind a request, or 0 if it cannot be told (the thread is
// gone): user.tempfs.created speaks of processes, while FUSE requests carry thread ids. The mapping and its
// cache are package owner's (ThreadGroups).
func (fsys *FS) processOf(tid uint32) uint32 {
	if tid == 0 {
		return 0
	}
	tgid, err := fsys.threads.Of(tid)
	if err != nil {
		return 0
	}
	return tgid
}

// inGroup reports whether the calling thread pid, whose filesystem gid is gid, is a member of group: by gid or
// by its supplementary groups (the Groups line of /proc/PID/status; FUSE requests do not carry them). It is
// asked only when a set-group-ID bit depends on it, which is rare, so it is not cached. A thread that cannot be
// read is taken as outside the group: the privilege bit is then dropped, the safe side.
func inGroup(gid, pid, group uint32) bool {
	if gid == group {
		return true
	}
	if pid == 0 {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if g, err := strconv.ParseUint(f, 10, 32); err == nil && uint32(g) == group {
				return true
			}
		}
		return false
	}
	return false
}
