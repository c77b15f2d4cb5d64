package fs

import (
	"context"
	"time"

	"github.com/tempfs/tempfs/naming"
)

// The reaper enforces --max-age: an entry that has been neither opened, read nor modified for that long, and has
// nothing open below it, is removed. Files made from templates need no reaping (they go at their last close);
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
			case now := <-ticker.C:
				if n := fsys.Reap(maxAge, now); n > 0 {
					fsys.log.Info("reaped old entries", "count", n, "max_age", maxAge)
				}
			}
		}
	}()
}

// Reap removes, once, every entry older than maxAge at now, and returns how many it removed.
func (fsys *FS) Reap(maxAge time.Duration, now time.Time) int {
	removed, _ := fsys.reapDir(fsys.root, timespecOf(now.Add(-maxAge)))
	fsys.noteRemoved(removedMaxAge, removed)
	return removed
}

// lastActivity is the later of atime and mtime.
func (a *attrs) lastActivity() timespec {
	a.mu.Lock()
	defer a.mu.Unlock()
	return laterOf(a.atime, a.mtime)
}

// reapDir reaps below d and reports whether d is now empty.
func (fsys *FS) reapDir(d *Dir, cutoff timespec) (removed int, empty bool) {
	for name, ch := range d.Children() {
		if naming.IsTemplate(name) {
			continue
		}
		switch n := ch.Operations().(type) {
		case *Dir:
			r, subEmpty := fsys.reapDir(n, cutoff)
			removed += r
			if subEmpty && n.attrs.lastActivity().before(cutoff) && fsys.reapSubdir(d, name, n) {
				removed++
			}
		case leafNode:
			if n.lastUse().before(cutoff) && fsys.reapLeaf(d, name, n) {
				removed++
			}
		}
	}
	fsys.nsMu.Lock()
	empty = d.entries == 0
	fsys.nsMu.Unlock()
	return removed, empty
}

// reapLeaf unlinks (d, name) unless the node is open; the kernel is told with NotifyDelete.
func (fsys *FS) reapLeaf(d *Dir, name string, l leafNode) bool {
	fsys.nsMu.Lock()
	if f, ok := l.(*File); ok && f.opens > 0 {
		fsys.nsMu.Unlock()
		return false
	}
	if !d.dropLeafNameLocked(l, name) {
		fsys.nsMu.Unlock()
		return false
	}
	unused := l.takeUnusedLocked()
	fsys.nsMu.Unlock()
	_ = d.NotifyDelete(name, l.EmbeddedInode())
	if unused {
		l.free()
	}
	return true
}

// reapSubdir removes the empty directory (d, name).
func (fsys *FS) reapSubdir(d *Dir, name string, sub *Dir) bool {
	fsys.nsMu.Lock()
	dropped := d.dropSubdirLocked(sub, name)
	fsys.nsMu.Unlock()
	if !dropped {
		return false
	}
	_ = d.NotifyDelete(name, sub.EmbeddedInode())
	fsys.counts.dirs.Add(-1)
	sub.ForgetPersistent()
	return true
}
