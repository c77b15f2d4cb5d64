package spool

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStat(t *testing.T) {
	_, f := newTestFile(t, Config{MaxSize: 64 * kib, MemoryCap: mib})
	if st := f.Stat(); st != (Stat{}) {
		t.Fatalf("empty file: %+v, want zero", st)
	}
	if _, err := f.WriteAt(make([]byte, 5000), 0); err != nil {
		t.Fatal(err)
	}
	if st := f.Stat(); st.Size != 5000 || st.Blocks == 0 || st.External || st.ModTime != 0 {
		t.Fatalf("RAM file: %+v, want size 5000, some blocks, not external", st)
	}
	if err := f.Rollover(); err != nil {
		t.Fatal(err)
	}
	f.NoteExternalWrite()
	fd, ok := f.PassthroughFd()
	if !ok {
		t.Fatal("no passthrough fd on disk")
	}
	// The kernel writes the backing file directly; only fstat can know.
	if _, err := unix.Pwrite(fd, []byte("tail"), 9000); err != nil {
		t.Fatal(err)
	}
	if st := f.Stat(); st.Size != 9004 || !st.External || st.ModTime == 0 {
		t.Fatalf("passthrough-written file: %+v, want size 9004, external, an mtime", st)
	}
}

// TestSlotBlocksKeptCurrent checks that the st_blocks an arena file's writes keep current (arenaFile.pages) is
// always what asking the memfd finds, through random writes, truncates and fallocates in slots of every
// size, so that a stat needs no syscall and says what it said before.
func TestSlotBlocksKeptCurrent(t *testing.T) {
	p := newTestPool(t, Config{MemoryCap: 64 * mib})
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		f := p.NewFile()
		for step := range 30 {
			off := rng.Int64N(ArenaMaxFileSize)
			n := rng.Int64N(3*pageSize) + 1
			op := rng.IntN(6)
			switch op {
			case 0, 1, 2:
				buf := make([]byte, n)
				if rng.IntN(3) > 0 {
					buf[rng.Int64N(n)] = 1 // else all zeros: a small slot holds no page for them
				}
				if off+n > ArenaMaxFileSize {
					off = ArenaMaxFileSize - n
				}
				if _, err := f.WriteAt(buf, off); err != nil {
					t.Fatal(err)
				}
			case 3:
				if err := f.Truncate(rng.Int64N(ArenaMaxFileSize)); err != nil {
					t.Fatal(err)
				}
			case 4:
				modes := []uint32{0, allocKeepSize, allocPunchHole}
				if off+n > ArenaMaxFileSize {
					off = ArenaMaxFileSize - n
				}
				if err := f.Allocate(off, n, modes[rng.IntN(3)]); err != nil {
					t.Fatal(err)
				}
			case 5:
				f.Stat() // fills the cache between changes
			}
			f.mu.RLock()
			if a, ok := f.place.(*arenaFile); ok {
				kept := a.blocks(f)
				now := int64(bits.OnesCount16(a.pagesNow(f))) * (pageSize / 512)
				if kept != now {
					t.Fatalf("round %d step %d op %d off %d n %d: st_blocks kept %d, the memfd says %d (size %d, slot %d)",
						round, step, op, off, n, kept, now, f.size, a.slot.size)
				}
			}
			f.mu.RUnlock()
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
