package fs

import (
	"context"
	"time"
)

// The reaper enforces --max-age: an entry that has been neither opened, read nor modified for that long, and has
// nothing open below it, is removed. Idle time is counted on the Mono clock (see Clock), never from atime or
// mtime: those are wall-clock times, which a user may set (touch -d, tar x, cp -p) and the wall clock may step. Files made from templates need no reaping (they go at their last close);
// once persisted they are ordinary. Removals by the reaper do not count as activity in their directory, so a
// directory whose contents were all reaped can be reaped on the same sweep.

// StartReaper sweeps the tree every maxAge/10 (at least every second, at most every minute) until ctx ends.
func (fsys *FS) StartReaper(ctx context.Context, maxAge time.Duration) {
	every := min(max(maxAge/10, time.Second), time.Minute)
	go func() {
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				if n := fsys.reapAt(maxAge, clock.Mono()); n > 0 {
					fsys.log.Info("reaped old entries", "count", n, "max_age", maxAge)
				}
			}
		}
	}()
}

// Reap removes, once, every entry unused for longer than maxAge at now, and returns how many it removed. now
// is a reading of the system's monotonic clock (time.Now(), possibly moved on with Add), under the system
// clock; the sweeps of StartReaper read the Clock in use.
func (fsys *FS) Reap(maxAge time.Duration, now time.Time) int {
	return fsys.reapAt(maxAge, time.Duration(monoOf(now)))
}

// reapAt reaps at the Mono reading now.
func (fsys *FS) reapAt(maxAge, now time.Duration) int {
	defer fsys.backgroundWork()()
	removed, _ := fsys.reapDir(fsys.root, int64(now-maxAge))
	fsys.noteRemoved(removedMaxAge, removed)
	return removed
}

// lastUsed is when the entry was last used, on the Mono clock.
func (a *attrs) lastUsed() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used
}

// reapDir reaps below d and reports whether d is now empty.
func (fsys *FS) reapDir(d *Dir, cutoff int64) (removed int, empty bool) {
	type entry struct {
		name string
		n    node
	}
	d.entriesMu.RLock()
	entries := make([]entry, 0, len(d.children))
	for name, n := range d.children {
		entries = append(entries, entry{name, n})
	}
	d.entriesMu.RUnlock()
	for _, e := range entries {
		switch n := e.n.(type) {
		case *Dir:
			r, subEmpty := fsys.reapDir(n, cutoff)
			removed += r
			if subEmpty && n.attrs.lastUsed() < cutoff && fsys.reapSubdir(d, e.name, n) {
				removed++
			}
		case leafNode:
			if n.lastUse() < cutoff && fsys.reapLeaf(d, e.name, n) {
				removed++
			}
		}
	}
	d.entriesMu.RLock()
	empty = len(d.children) == 0
	d.entriesMu.RUnlock()
	return removed, empty
}

// reapLeaf unlinks (d, name) unless the node is open or the name is a template file's generated name; the
// kernel is told with NotifyDelete. A generated name with no handle open is one whose last close is under
// way (File.release counted the handle closed and waits for d's lock to remove the name): that close removes
// it, and it must find it there.
func (fsys *FS) reapLeaf(d *Dir, name string, l leafNode) bool {
	d.entriesMu.Lock()
	lp := l.leafPart()
	lp.stateMu.Lock()
	f, isFile := l.(*File)
	dropped := !(isFile && (f.opens > 0 || f.isGeneratedLocked(d, name))) && d.dropLeafNameLocked(l, name)
	unused := dropped && l.takeUnusedLocked()
	lp.stateMu.Unlock()
	d.entriesMu.Unlock()
	if !dropped {
		return false
	}
	d.forgetChild(name, l)
	d.fs.notifyKernel(func() { _ = d.NotifyDelete(name, l.EmbeddedInode()) })
	if unused {
		l.free()
	}
	return true
}

// reapSubdir removes the empty directory (d, name). The sweeps read (d, name, sub) earlier: sub may have left
// d since, even become its ancestor, so sub's lock is taken only once d's lock shows sub still in d (a child's
// lock after its parent's, see fs.go).
func (fsys *FS) reapSubdir(d *Dir, name string, sub *Dir) bool {
	d.entriesMu.Lock()
	if d.children[name] != sub {
		d.entriesMu.Unlock()
		return false
	}
	sub.entriesMu.Lock()
	dropped := d.dropSubdirLocked(sub, name)
	sub.entriesMu.Unlock()
	d.entriesMu.Unlock()
	if !dropped {
		return false
	}
	d.forgetChild(name, sub)
	d.fs.notifyKernel(func() { _ = d.NotifyDelete(name, sub.EmbeddedInode()) })
	fsys.counts.dirs.Add(-1)
	sub.ForgetPersistent()
	return true
}
