package fs

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/tempfs/tempfs/fs/owner"
)

// FUSE requests carry the calling thread's id, but user.tempfs.created speaks of processes (kernel-notes.md):
// a thread id must be mapped to its process id (the Tgid line of /proc/TID/status). Reading that file costs
// ~30 µs here, too much for every template create, so the mapping is cached and a cached answer is checked
// with a stat of /proc/TGID/task/TID (~2.5 µs): that path exists only while TID is a thread of TGID, so a
// thread id reused by another process after its thread ended is never mapped to the old process.

// processCacheSize bounds the cache; when full it is emptied and refilled, which only costs the slow path.
const processCacheSize = 4096

type processCache struct {
	mu sync.Mutex
	m  map[uint32]uint32
}

// processOf returns the process id of thread tid, or 0 if it cannot be told (the thread is gone).
func (c *processCache) processOf(tid uint32) uint32 {
	if tid == 0 {
		return 0
	}
	c.mu.Lock()
	tgid, ok := c.m[tid]
	c.mu.Unlock()
	if ok && owner.IsThreadOf(tgid, tid) {
		return tgid
	}
	tgid = owner.ThreadGroup(tid)
	if tgid == 0 {
		return 0
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= processCacheSize {
		c.m = make(map[uint32]uint32)
	}
	c.m[tid] = tgid
	c.mu.Unlock()
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
