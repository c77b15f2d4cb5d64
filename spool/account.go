package spool

// Lock order: see the package comment in pool.go. An Account's used bytes are guarded by its Pool's mu,
// where every change of a File's allocated bytes is made; a File's account is changed with the File's mu
// and the Pool's mu both held, so either lock suffices to read it.

import (
	"fmt"
	"syscall"
)

// ErrOverQuota: an operation would take a File's Account past its limit. Nothing changed.
var ErrOverQuota = fmt.Errorf("spool: account's quota reached: %w", syscall.EDQUOT)

// Account is a quota over some of a Pool's files (an owner's, for the FUSE layer): the bytes the files
// attached to it allocate, counted as the pool's caps count them (a small RAM file's whole arena slot, the
// pages of a larger one, a disk file's data blocks; holes are free), stay under a limit. A write, truncate or
// fallocate whose growth would pass the limit fails with ErrOverQuota before anything changes; what an
// operation frees is given back when it ends; a File's charge follows it to disk when it rolls over, and goes
// when it is closed. Moving a File's bytes between placements (a rollover under memory pressure, say) never
// fails for the quota: only an operation's own growth is checked.
type Account struct {
	pool  *Pool
	limit int64 // 0: no limit, the account only counts
	used  int64 // guarded by pool.mu: the sum of the attached files' accounted bytes, and rollovers' holds
}

// NewAccount makes an account of limit bytes (0: no limit) with no file attached.
func (p *Pool) NewAccount(limit int64) *Account {
	return &Account{pool: p, limit: max(limit, 0)}
}

// Used is the bytes the account's files allocate now.
func (a *Account) Used() int64 {
	a.pool.mu.Lock()
	defer a.pool.mu.Unlock()
	return a.used
}

// Limit is the account's limit (0: none).
func (a *Account) Limit() int64 { return a.limit }

// hasRoomLocked reports whether growing by growth bytes keeps the account within its limit (always for a
// nil account, or growth <= 0). The caller holds pool.mu.
func (a *Account) hasRoomLocked(growth int64) bool {
	return a == nil || growth <= 0 || a.limit == 0 || a.used+growth <= a.limit
}

// Account is the account f is attached to, or nil.
func (f *File) Account() *Account {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.account
}

// ChargeTo attaches f to a (nil: to none), moving its allocated bytes from its old account to a. It fails
// with ErrOverQuota, and moves nothing, when a has no room for them.
func (f *File) ChargeTo(a *Account) error { return f.moveCharge(a, true) }

// HandTo attaches f to a (nil: to none), as ChargeTo does, even if a is taken past its limit: a file
// handed to an owner is that owner's, full or not.
func (f *File) HandTo(a *Account) { _ = f.moveCharge(a, false) }

func (f *File) moveCharge(a *Account, mustFit bool) error {
	if a != nil && a.pool != f.pool {
		return fmt.Errorf("spool: an account of another pool: %w", errInvalid)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.account == a {
		return nil
	}
	p := f.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if mustFit && !a.hasRoomLocked(f.accounted) {
		return fmt.Errorf("spool: moving %d bytes to an account of %d of %d: %w", f.accounted, a.used, a.limit, ErrOverQuota)
	}
	if f.account != nil {
		f.account.used -= f.accounted
	}
	f.account = a
	if a != nil {
		a.used += f.accounted
	}
	return nil
}
