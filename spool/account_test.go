package spool

import (
	"errors"
	"sync"
	"syscall"
	"testing"
)

// accountOp is one operation on the file under test and what it must answer.
type accountOp struct {
	name string
	do   func(f *File) error
	want error // nil or ErrOverQuota
}

func writeOp(off, n int64, want error) accountOp {
	return accountOp{"write", func(f *File) error { _, err := f.WriteAt(pattern(int(n), 1), off); return err }, want}
}

func truncateOp(size int64, want error) accountOp {
	return accountOp{"truncate", func(f *File) error { return f.Truncate(size) }, want}
}

func allocateOp(off, n int64, mode uint32, want error) accountOp {
	return accountOp{"fallocate", func(f *File) error { return f.Allocate(off, n, mode) }, want}
}

var rolloverOp = accountOp{"rollover", func(f *File) error { return f.Rollover() }, nil}

// TestAccount: a file's account is charged what the file allocates, as the caps count it (the arena slot, a
// memfd's pages, a backing file's data blocks), after every operation; an operation whose growth would pass
// the limit fails with ErrOverQuota (EDQUOT) and changes neither the file nor the account.
func TestAccount(t *testing.T) {
	cases := []struct {
		name      string
		maxSize   int64
		limit     int64
		ops       []accountOp
		wantUsed  int64 // after the last op; -1: what the backing file allocates, checked by the invariant only
		wantWhere Placement
	}{
		{"writes within the limit", 0, 16 * kib,
			[]accountOp{writeOp(0, 8*kib, nil), writeOp(8*kib, 8*kib, nil)}, 16 * kib, Arena},
		{"a write past the limit", 0, 16 * kib,
			[]accountOp{writeOp(0, 8*kib, nil), writeOp(8*kib, 12*kib, ErrOverQuota)}, 8 * kib, Arena},
		{"a small file takes its whole slot", 0, 16 * kib,
			[]accountOp{writeOp(0, 1, nil), truncateOp(12*kib, nil), truncateOp(20*kib, ErrOverQuota)}, 12 * kib, Arena},
		{"a sparse truncate is free", 0, 128 * kib,
			[]accountOp{truncateOp(100*kib, nil), writeOp(48*kib, 4*kib, nil), writeOp(0, 130*kib, ErrOverQuota)}, 4 * kib, Memfd},
		{"a truncate past what the limit could hold", 0, 128 * kib,
			[]accountOp{writeOp(0, 100*kib, nil), truncateOp(129*kib, ErrOverQuota), truncateOp(128*kib, nil)}, 100 * kib, Memfd},
		{"no limit counts only", 0, 0,
			[]accountOp{writeOp(0, 100*kib, nil)}, 100 * kib, Memfd},
		{"fallocate past the limit", 0, 64 * kib,
			[]accountOp{allocateOp(0, 128*kib, 0, ErrOverQuota), allocateOp(0, 32*kib, 0, nil)}, 32 * kib, Arena},
		{"fallocate inside the size counts", 0, 128 * kib,
			[]accountOp{truncateOp(128*kib, nil), allocateOp(0, 64*kib, allocKeepSize, nil),
				allocateOp(128*kib, 64*kib, allocKeepSize, nil)}, 64 * kib, Memfd},
		{"a punched hole and a cut give back", 0, 128 * kib,
			[]accountOp{writeOp(0, 100*kib, nil), allocateOp(0, 64*kib, allocPunchHole, nil), truncateOp(80*kib, nil)}, 16 * kib, Memfd},
		{"truncating to zero gives all back", 0, 128 * kib,
			[]accountOp{writeOp(0, 100*kib, nil), truncateOp(0, nil)}, 0, Empty},
		{"a rollover for max-size checks the growth", 32 * kib, 48 * kib,
			[]accountOp{writeOp(0, 32*kib, nil), writeOp(32*kib, 32*kib, ErrOverQuota)}, 32 * kib, Arena},
		{"a rollover for max-size keeps the charge", 32 * kib, 128 * kib,
			[]accountOp{writeOp(0, 32*kib, nil), writeOp(32*kib, 32*kib, nil)}, -1, DiskFile},
		{"an explicit rollover keeps the charge", 0, 64 * kib,
			[]accountOp{writeOp(0, 5000, nil), rolloverOp}, -1, DiskFile},
		{"a disk file overwrites in place at the limit", 4 * kib, 64 * kib,
			[]accountOp{writeOp(0, 64*kib, nil), writeOp(16*kib, 16*kib, nil), writeOp(64*kib, 4*kib, ErrOverQuota)}, -1, DiskFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool, f := newTestFile(t, Config{MaxSize: tc.maxSize, MemoryCap: 64 * mib})
			a := pool.NewAccount(tc.limit)
			if err := f.ChargeTo(a); err != nil {
				t.Fatalf("ChargeTo: %v", err)
			}
			for i, op := range tc.ops {
				size, used := f.Size(), a.Used()
				err := op.do(f)
				if !errors.Is(err, op.want) || (err == nil) != (op.want == nil) {
					t.Fatalf("op %d (%s) = %v, want %v", i, op.name, err, op.want)
				}
				if err != nil {
					if !errors.Is(err, syscall.EDQUOT) {
						t.Errorf("op %d (%s): %v does not wrap EDQUOT", i, op.name, err)
					}
					if f.Size() != size || a.Used() != used {
						t.Errorf("op %d (%s) failed but changed size %d → %d, used %d → %d", i, op.name, size, f.Size(), used, a.Used())
					}
				}
				if got, want := a.Used(), allocated(t, f); got != want {
					t.Errorf("after op %d (%s): account used %d, the file allocates %d", i, op.name, got, want)
				}
				if tc.limit > 0 && a.Used() > tc.limit {
					t.Errorf("after op %d (%s): account used %d, past its limit %d", i, op.name, a.Used(), tc.limit)
				}
			}
			if tc.wantUsed >= 0 && a.Used() != tc.wantUsed {
				t.Errorf("used %d, want %d", a.Used(), tc.wantUsed)
			}
			if w := f.Where(); w != tc.wantWhere {
				t.Errorf("file is in %v, want %v", w, tc.wantWhere)
			}
			checkAccounting(t, pool, []*File{f})
			f.Close()
			if a.Used() != 0 {
				t.Errorf("after Close: account used %d, want 0", a.Used())
			}
		})
	}
}

// TestAccountMoves: ChargeTo moves a file's charge only to an account with room for it; HandTo moves it
// whatever the limit; nil detaches it.
func TestAccountMoves(t *testing.T) {
	cases := []struct {
		name             string
		toLimit, toHeld  int64 // the destination's limit and what another file of it holds
		hand             bool  // HandTo rather than ChargeTo
		toNil            bool
		wantErr          error
		wantFrom, wantTo int64 // the accounts' used bytes afterwards, not counting toHeld
	}{
		{"to an account with room", 64 * kib, 32 * kib, false, false, nil, 0, 16 * kib},
		{"to a full account", 64 * kib, 56 * kib, false, false, ErrOverQuota, 16 * kib, 0},
		{"handed to a full account", 64 * kib, 56 * kib, true, false, nil, 0, 16 * kib},
		{"to no account", 64 * kib, 0, false, true, nil, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := newTestPool(t, Config{MemoryCap: 64 * mib})
			from, to := pool.NewAccount(64*kib), pool.NewAccount(tc.toLimit)
			f, other := pool.NewFile(), pool.NewFile()
			defer f.Close()
			defer other.Close()
			f.HandTo(from)
			other.HandTo(to)
			mustWrite(t, f, pattern(int(16*kib), 1), 0)
			if tc.toHeld > 0 {
				mustWrite(t, other, pattern(int(tc.toHeld), 2), 0)
			}
			dest := to
			if tc.toNil {
				dest = nil
			}
			var err error
			if tc.hand {
				f.HandTo(dest)
			} else {
				err = f.ChargeTo(dest)
			}
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("move = %v, want %v", err, tc.wantErr)
			}
			if got := from.Used(); got != tc.wantFrom {
				t.Errorf("source account used %d, want %d", got, tc.wantFrom)
			}
			if got := to.Used() - tc.toHeld; got != tc.wantTo {
				t.Errorf("destination account used %d beyond what it held, want %d", got, tc.wantTo)
			}
			if tc.wantErr != nil && f.Account() != from || tc.wantErr == nil && f.Account() != dest {
				t.Errorf("file's account %p; from %p, to %p", f.Account(), from, dest)
			}
		})
	}
	t.Run("of another pool", func(t *testing.T) {
		f := newTestPool(t, Config{MemoryCap: mib}).NewFile()
		defer f.Close()
		if err := f.ChargeTo(newTestPool(t, Config{MemoryCap: mib}).NewAccount(0)); !errors.Is(err, errInvalid) {
			t.Errorf("ChargeTo an account of another pool = %v, want errInvalid", err)
		}
	})
}

// TestAccountKeepsChargeOfAVictim: a file the memory budget pushes to disk keeps its charge, even past its
// limit, and the write that pushed it is not refused for another account's quota.
func TestAccountKeepsChargeOfAVictim(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 96 * kib})
	a := pool.NewAccount(48 * kib)
	victim, writer := pool.NewFile(), pool.NewFile()
	defer victim.Close()
	defer writer.Close()
	victim.HandTo(a)
	mustWrite(t, victim, pattern(int(48*kib), 1), 0)
	mustWrite(t, writer, pattern(int(64*kib), 2), 0)
	if w := victim.Where(); w != DiskFile {
		t.Fatalf("the larger RAM file is in %v, want pushed to disk", w)
	}
	if got, want := a.Used(), allocated(t, victim); got != want {
		t.Errorf("account used %d, the pushed file allocates %d", got, want)
	}
	checkAccounting(t, pool, []*File{victim, writer})
}

// TestAccountConcurrentWriters: files of one account written at once never take it past its limit, and
// the account ends up charged exactly what they allocate.
func TestAccountConcurrentWriters(t *testing.T) {
	const limit = 256 * kib
	pool := newTestPool(t, Config{MaxSize: 96 * kib, MemoryCap: 160 * kib})
	a := pool.NewAccount(limit)
	files := make([]*File, 6)
	for i := range files {
		files[i] = pool.NewFile()
		files[i].HandTo(a)
		defer files[i].Close()
	}
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunk := pattern(int(8*kib), byte(i))
			for off := int64(0); off < 128*kib; off += 8 * kib {
				if _, err := f.WriteAt(chunk, off); err != nil {
					if !errors.Is(err, ErrOverQuota) {
						t.Errorf("write: %v", err)
					}
					return
				}
				if used := a.Used(); used > limit {
					t.Errorf("account used %d, past its limit %d", used, limit)
				}
			}
		}()
	}
	wg.Wait()
	var sum int64
	for _, f := range files {
		sum += allocated(t, f)
	}
	if got := a.Used(); got != sum || got > limit {
		t.Errorf("account used %d; the files allocate %d; limit %d", got, sum, limit)
	}
	checkAccounting(t, pool, files)
}
