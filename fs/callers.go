package fs

import (
	"os"
	"strconv"
	"strings"
	"sync"
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
	if ok && threadOf(tgid, tid) {
		return tgid
	}
	tgid = readTgid(tid)
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

func threadOf(tgid, tid uint32) bool {
	if tgid == tid {
		_, err := os.Stat("/proc/" + strconv.FormatUint(uint64(tid), 10))
		return err == nil
	}
	_, err := os.Stat("/proc/" + strconv.FormatUint(uint64(tgid), 10) + "/task/" + strconv.FormatUint(uint64(tid), 10))
	return err == nil
}

// readTgid reads the Tgid line of /proc/TID/status.
func readTgid(tid uint32) uint32 {
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return 0
			}
			return uint32(n)
		}
	}
	return 0
}
