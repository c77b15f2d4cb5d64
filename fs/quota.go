package fs

import (
	"sync"
	"syscall"
)

// --owner-quota (docs/guarantees.md, Owners): the file data of one owner stays under a cap. A file is charged to its
// owner, whoever writes it, by its size: a write, truncate or fallocate that would take the owner past the cap
// fails with EDQUOT before anything changes; other owners are not affected. Unowned and kept files are charged
// to nobody. An O_TMPFILE file has no owner until linkat names it, but its bytes are charged to its
// creator's owner meanwhile, and linkat moves them to the owner the name gives it (EDQUOT, and no name, if that
// owner has no room): no file's bytes escape the cap. An operation first reserves its largest possible growth (the new end of the file), then settles
// on the file's real size; a file's charge goes when its data is freed.
//
// Lock order: quota.mu is a leaf, taken after FS.ownMu where both are held.

// quota is the daemon's per-owner cap; nil on FS without --owner-quota.
type quota struct {
	limit int64
	mu    sync.Mutex
}

// fileCharge is what a file is charged, and to whom. Guarded by quota.mu.
type fileCharge struct {
	account *ownedEntries // the owner's account; nil when the file is charged to nobody
	bytes   int64
}

// setOwnerQuota caps each owner's file data at limit bytes (0: no cap), from Options.OwnerQuota.
func (fsys *FS) setOwnerQuota(limit int64) {
	if limit > 0 {
		fsys.quota = &quota{limit: limit}
	}
}

// reserve charges the growth of f to end bytes before an operation, or answers EDQUOT when the owner's
// data would pass the cap. settle must follow the operation, whatever its outcome.
func (fsys *FS) reserve(f *File, end int64) syscall.Errno {
	q := fsys.quota
	if q == nil {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	c := &f.charge
	if c.account == nil || end <= c.bytes {
		return 0
	}
	growth := end - c.bytes
	if c.account.charged+growth > q.limit {
		return syscall.EDQUOT
	}
	c.account.charged += growth
	c.bytes = end
	return 0
}

// settle charges f its real size after an operation.
func (fsys *FS) settle(f *File) {
	q := fsys.quota
	if q == nil {
		return
	}
	q.mu.Lock()
	charged := f.charge.account != nil
	q.mu.Unlock()
	if !charged {
		return
	}
	size := f.data.Size()
	q.mu.Lock()
	if c := &f.charge; c.account != nil {
		c.account.charged += size - c.bytes
		c.bytes = size
	}
	q.mu.Unlock()
}

// chargeTo moves a file's charge to another owner's account (nil: nobody), when it is tagged, handed over or
// kept. The new owner may end up past its cap: handing over never fails for that. The caller holds FS.ownMu.
func (fsys *FS) chargeToLocked(n node, account *ownedEntries) {
	f, ok := n.(*File)
	if !ok || fsys.quota == nil || f.freed.Load() {
		return
	}
	q := fsys.quota
	size := f.data.Size()
	q.mu.Lock()
	c := &f.charge
	if c.account != nil {
		c.account.charged -= c.bytes
	}
	c.account, c.bytes = account, size
	if account != nil {
		account.charged += size
	}
	q.mu.Unlock()
}

// fitsLocked reports whether a file's charge can move to account (nil: nobody) without taking that owner
// past the cap: how linkat names an O_TMPFILE file, whose bytes were charged to its creator's owner. The
// caller holds FS.ownMu.
func (fsys *FS) fitsLocked(n node, account *ownedEntries) bool {
	f, ok := n.(*File)
	q := fsys.quota
	if !ok || q == nil || account == nil || f.freed.Load() {
		return true
	}
	size := f.data.Size()
	q.mu.Lock()
	defer q.mu.Unlock()
	return f.charge.account == account || account.charged+size <= q.limit
}

// uncharge drops a freed file's charge.
func (fsys *FS) uncharge(f *File) {
	q := fsys.quota
	if q == nil {
		return
	}
	q.mu.Lock()
	if c := &f.charge; c.account != nil {
		c.account.charged -= c.bytes
		c.account, c.bytes = nil, 0
	}
	q.mu.Unlock()
}
