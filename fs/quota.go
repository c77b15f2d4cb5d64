package fs

import (
	"syscall"

	"github.com/tempfs/tempfs/spool"
)

// --owner-quota (docs/guarantees.md, Owners): the file data of one owner stays under a cap. A file is charged to its
// owner, whoever writes it, by the bytes it allocates, as the other caps count them: a write, truncate or
// fallocate that would take the owner past the cap fails with EDQUOT before anything changes; other owners are
// not affected. Unowned and kept files are charged to nobody. An O_TMPFILE file has no owner until linkat names
// it, but its bytes are charged to its creator's owner meanwhile, and linkat moves them to the owner the name
// gives it (EDQUOT, and no name, if that owner has no room): no file's bytes escape the cap. Each owner's
// charge is a spool.Account, which the spool charges and checks under the file's own lock, in the operation
// itself; a file's charge goes when its data is freed.
//
// Lock order: FS.ownMu, then the spool file's locks (spool.File.ChargeTo, HandTo).

// quota is the daemon's per-owner cap; nil on FS without --owner-quota.
type quota struct {
	limit int64
	pool  *spool.Pool
	// made is told of each account made (the crash record writes the owners again).
	made func()
}

// setOwnerQuota caps each owner's file data at limit bytes (0: no cap), from Options.OwnerQuota.
func (fsys *FS) setOwnerQuota(limit int64) {
	if limit > 0 {
		fsys.quota = &quota{limit: limit, pool: fsys.pool, made: fsys.noteOwners}
	}
}

// spoolAccountLocked is the spool account of an owner's entries (nil: nobody's), made on first use. The caller
// holds FS.ownMu.
func (q *quota) spoolAccountLocked(set *ownedEntries) *spool.Account {
	if set == nil {
		return nil
	}
	if set.quota == nil {
		set.quota = q.pool.NewAccount(q.limit)
		q.made()
	}
	return set.quota
}

// chargeToLocked moves a file's charge to another owner's account (nil: nobody), when it is tagged, handed over
// or kept. The new owner may end up past its cap: handing over never fails for that. The caller holds FS.ownMu.
func (fsys *FS) chargeToLocked(n node, set *ownedEntries) {
	if f, ok := n.(*File); ok && fsys.quota != nil {
		f.data.HandTo(fsys.quota.spoolAccountLocked(set))
	}
}

// moveChargeLocked moves a file's charge to another owner's account (nil: nobody), or answers EDQUOT, and moves
// nothing, when that owner has no room for it: how linkat names an O_TMPFILE file, whose bytes were charged to
// its creator's owner. The caller holds FS.ownMu.
func (fsys *FS) moveChargeLocked(f *File, set *ownedEntries) syscall.Errno {
	if fsys.quota == nil {
		return 0
	}
	return toErrno(fsys.log, "linkat", f.data.ChargeTo(fsys.quota.spoolAccountLocked(set)))
}

// uncharge drops the charge of a file that is gone for good.
func (fsys *FS) uncharge(f *File) {
	if fsys.quota != nil {
		f.data.HandTo(nil)
	}
}
