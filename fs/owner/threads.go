package owner

import "sync"

// FUSE requests carry the calling thread's id, but owners and user.tempfs.created speak of processes: a thread
// id is mapped to its process id (the Tgid line of /proc/TID/status). Reading that file costs ~30 µs here, too
// much for every create, so the mapping is cached, and a cached answer is checked with one syscall
// (isThreadOf), so a thread id reused by another process after its thread ended is never mapped to the old
// process.

// threadCacheSize bounds the cache; when full it is emptied, which only costs the slow path again.
const threadCacheSize = 4096

// ThreadGroups maps thread ids to process ids. The zero value is ready to use.
type ThreadGroups struct {
	mu sync.Mutex
	m  map[uint32]uint32 // threads other than a main thread, to their process
}

// Of returns the process id of thread tid, or ErrCallerGone when the thread has exited (or the error that kept
// /proc from being read).
func (c *ThreadGroups) Of(tid uint32) (uint32, error) {
	c.mu.Lock()
	tgid, ok := c.m[tid]
	c.mu.Unlock()
	if ok && isThreadOf(tgid, tid) {
		return tgid, nil
	}
	tgid, err := threadGroup(tid)
	if err != nil {
		return 0, err
	}
	if tgid != tid {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= threadCacheSize {
			c.m = make(map[uint32]uint32)
		}
		c.m[tid] = tgid
		c.mu.Unlock()
	}
	return tgid, nil
}
