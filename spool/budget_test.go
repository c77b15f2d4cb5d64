package spool

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMemoryCapEvictsLargestFirst writes 40 files of a bit more than a third of the cap each, in
// 64 KiB chunks, and checks at every chunk that the write succeeded, RAM stayed under the cap,
// and the files moved to disk were exactly the largest other RAM files (by allocated bytes, what
// the cap counts), no more than needed.
func TestMemoryCapEvictsLargestFirst(t *testing.T) {
	const memoryCap, chunk = mib, 64 * kib
	pool := newTestPool(t, Config{MemoryCap: memoryCap})
	rng := rand.New(rand.NewPCG(1, 2))
	var files []*File
	var contents [][]byte
	for i := range 40 {
		size := memoryCap/3 + 1 + rng.Int64N(8*kib) // distinct enough that "largest" is clear
		data := pattern(int(size), byte(i))
		f := pool.NewFile()
		files = append(files, f)
		contents = append(contents, data)
		for off := int64(0); off < size; off += chunk {
			// RAM allocations of the other files before the write.
			before := map[*File]int64{}
			var ramBefore int64
			for _, g := range files {
				if g.Tier() == Memory {
					ramBefore += allocated(t, g)
					if g != f {
						before[g] = allocated(t, g)
					}
				}
			}
			fBefore := allocated(t, f)
			end := min(off+chunk, size)
			mustWrite(t, f, data[off:end], off)
			checkAccounting(t, pool, files)
			if f.Tier() != Memory {
				t.Fatalf("file %d went to disk although other RAM files could make room", i)
			}
			var moved []int64
			for g, s := range before {
				if g.Tier() == Disk {
					moved = append(moved, s)
				}
			}
			if len(moved) == 0 {
				continue
			}
			// The moved files are the largest others.
			var others []int64
			for _, s := range before {
				others = append(others, s)
			}
			slices.Sort(others)
			slices.Reverse(others)
			slices.Sort(moved)
			slices.Reverse(moved)
			if !slices.Equal(moved, others[:len(moved)]) {
				t.Fatalf("file %d chunk at %d moved sizes %v to disk; the largest others were %v", i, off, moved, others)
			}
			// And no more than needed: without the last (smallest) victim the write did not fit.
			var sumMoved int64
			for _, s := range moved {
				sumMoved += s
			}
			growth := allocated(t, f) - fBefore
			if ramBefore-sumMoved+growth > memoryCap || ramBefore-sumMoved+moved[len(moved)-1]+growth <= memoryCap {
				t.Fatalf("file %d chunk at %d: moved %v with %d in RAM before: not the fewest that make room", i, off, moved, ramBefore)
			}
		}
	}
	for i, f := range files {
		checkContent(t, f, contents[i])
	}
	st := pool.Stats()
	if st.Rollovers != st.DiskFiles || st.Rollovers < 30 || st.PeakRAMBytes > memoryCap {
		t.Errorf("Stats = %+v: want ≥ 30 rollovers, one per disk file, peak under the cap", st)
	}
	for _, f := range files {
		f.Close()
	}
}

// TestMemoryCapTooSmallForOneFile: a file larger than the whole budget goes to disk itself,
// without pushing the others out for nothing.
func TestMemoryCapTooSmallForOneFile(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 64 * kib})
	small, big := pool.NewFile(), pool.NewFile()
	defer small.Close()
	defer big.Close()
	mustWrite(t, small, pattern(int(32*kib), 1), 0)
	mustWrite(t, big, pattern(int(65*kib), 2), 0)
	if small.Tier() != Memory || big.Tier() != Disk {
		t.Errorf("tiers = small %v, big %v; want memory, disk", small.Tier(), big.Tier())
	}
	checkAccounting(t, pool, []*File{small, big})
}

func TestDiskCap(t *testing.T) {
	const maxSize, diskCap = 16 * kib, 64 * kib
	pool := newTestPool(t, Config{MaxSize: maxSize, MemoryCap: mib, DiskCap: diskCap})
	onDisk, inRAM, other := pool.NewFile(), pool.NewFile(), pool.NewFile()
	files := []*File{onDisk, inRAM, other}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	diskData, ramData, otherData := pattern(int(40*kib), 1), pattern(int(10*kib), 2), pattern(int(8*kib), 3)
	mustWrite(t, onDisk, diskData, 0) // rolls over: 40 KiB of 64 on disk
	mustWrite(t, inRAM, ramData, 0)
	mustWrite(t, other, otherData, 0)
	if onDisk.Tier() != Disk || inRAM.Tier() != Memory {
		t.Fatalf("setup: tiers %v, %v", onDisk.Tier(), inRAM.Tier())
	}
	rolloversBefore := pool.Stats().Rollovers
	fdsBefore := openFdCount(t)

	tests := []struct {
		name string
		f    *File
		op   func(f *File) error
	}{
		{"write past the cap on disk", onDisk, func(f *File) error { _, err := f.WriteAt(pattern(int(30*kib), 9), 40*kib); return err }},
		{"allocate past the cap", onDisk, func(f *File) error { return f.Allocate(0, 100*kib, 0) }},
		{"allocate keep-size past the cap", onDisk, func(f *File) error {
			if err := f.Truncate(100 * kib); err != nil {
				return err
			}
			err := f.Allocate(0, 100*kib, allocKeepSize)
			if terr := f.Truncate(40 * kib); terr != nil {
				return terr
			}
			return err
		}},
		{"write whose rollover does not fit", inRAM, func(f *File) error { _, err := f.WriteAt(pattern(int(20*kib), 9), 10*kib); return err }},
		{"allocate whose rollover does not fit", inRAM, func(f *File) error { return f.Allocate(0, 30*kib, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tier := tt.f.Tier()
			err := tt.op(tt.f)
			if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("error = %v, want ErrNoSpace", err)
			}
			if got := tt.f.Tier(); got != tier {
				t.Errorf("tier changed from %v to %v", tier, got)
			}
			checkContent(t, onDisk, diskData)
			checkContent(t, inRAM, ramData)
			checkContent(t, other, otherData)
			checkAccounting(t, pool, files)
		})
	}
	// Overwriting data in place near the cap allocates nothing, so it works.
	if _, err := onDisk.WriteAt(pattern(int(40*kib), 7), 0); err != nil {
		t.Fatalf("overwrite in place near the disk cap: %v", err)
	}
	mustWrite(t, onDisk, diskData, 0)
	// An explicit rollover that does not fit leaves the file in RAM: 60 KiB on disk, 10 to move.
	if err := onDisk.Allocate(0, 60*kib, 0); err != nil {
		t.Fatal(err)
	}
	if err := inRAM.Rollover(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Rollover of 10 KiB with 4 KiB left: %v, want ErrNoSpace", err)
	}
	if inRAM.Tier() != Memory {
		t.Errorf("tier after a failed Rollover = %v, want memory", inRAM.Tier())
	}
	checkContent(t, inRAM, ramData)
	checkAccounting(t, pool, files)
	if st := pool.Stats(); st.Rollovers != rolloversBefore {
		t.Errorf("Rollovers went from %d to %d through failed operations", rolloversBefore, st.Rollovers)
	}
	if got := openFdCount(t); got != fdsBefore {
		t.Errorf("open fds = %d, want %d: a failed rollover leaked its backing file", got, fdsBefore)
	}
	// Room made on disk makes the same operations work.
	if err := onDisk.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := inRAM.Truncate(30 * kib); err != nil {
		t.Fatalf("truncate after freeing disk: %v", err)
	}
	if inRAM.Tier() != Disk {
		t.Errorf("tier after truncate past MaxSize = %v", inRAM.Tier())
	}
	checkContent(t, inRAM, layout(30*kib, piece{0, ramData}))
	checkAccounting(t, pool, files)
}

// TestDiskCapCountsAllocatedBytes: under --disk, holes are free, as on tmpfs: a 1-byte write at 10 GiB
// and a truncate to 5 GiB fit under a 64 KiB cap, and the disk counter shows the blocks, not the size.
func TestDiskCapCountsAllocatedBytes(t *testing.T) {
	const diskCap = 64 * kib
	pool := newTestPool(t, Config{MaxSize: 16 * kib, MemoryCap: mib, DiskCap: diskCap})
	sparse, truncated := pool.NewFile(), pool.NewFile()
	defer sparse.Close()
	defer truncated.Close()
	files := []*File{sparse, truncated}
	if _, err := sparse.WriteAt([]byte{1}, 10<<30); err != nil {
		t.Fatalf("1-byte write at 10 GiB under a %d-byte disk cap: %v", diskCap, err)
	}
	if err := truncated.Truncate(5 << 30); err != nil {
		t.Fatalf("truncate to 5 GiB under a %d-byte disk cap: %v", diskCap, err)
	}
	if sparse.Tier() != Disk || truncated.Tier() != Disk {
		t.Fatalf("tiers %v, %v; want both on disk (past MaxSize)", sparse.Tier(), truncated.Tier())
	}
	checkAccounting(t, pool, files)
	st := pool.Stats()
	if want := allocated(t, sparse) + allocated(t, truncated); st.DiskBytes > 16*kib || st.DiskBytes != want {
		t.Errorf("DiskBytes = %d for a 1-byte write and a truncate; want their blocks (%d), a few KiB", st.DiskBytes, want)
	}
	if st.PeakDiskBytes < st.DiskBytes || st.DiskWrittenBytes < 1 {
		t.Errorf("PeakDiskBytes %d, DiskWrittenBytes %d; want >= DiskBytes %d and >= 1", st.PeakDiskBytes, st.DiskWrittenBytes, st.DiskBytes)
	}
	// Filling the holes is what costs: 60 KiB more do not fit.
	if _, err := truncated.WriteAt(pattern(int(62*kib), 1), 0); !errors.Is(err, ErrNoSpace) {
		t.Errorf("writing 62 KiB of data with %d bytes on disk under a %d cap: %v, want ErrNoSpace", st.DiskBytes, diskCap, err)
	}
	checkAccounting(t, pool, files)
}

// TestDiskCapIgnoresStoreMetadata: the disk cap counts the data blocks of the backing files, not the
// blocks the store's filesystem adds for its own bookkeeping. On ext4 a file of five separate extents
// needs an extent tree block, which st_blocks counts: allocated by fallocate at once, and for written
// (delayed) data only at writeback, with no call on the file. Counted, it took DiskBytes past a cap that
// the data fitted exactly (TestModel's seed 1795862286788038034), or away from the files' st_blocks
// between two calls. Five 4 KiB pieces must fit a 20 KiB cap, a sixth must not, and the counter must
// stay the data's size across a writeback.
func TestDiskCapIgnoresStoreMetadata(t *testing.T) {
	const piece, pieces = 4 * kib, 5
	for _, tc := range []struct {
		name string
		fill func(f *File, off int64) error
	}{
		{"fallocate", func(f *File, off int64) error { return f.Allocate(off, piece, allocKeepSize) }},
		{"write", func(f *File, off int64) error { _, err := f.WriteAt(pattern(int(piece), 7), off); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, f := newTestFile(t, Config{MaxSize: 16 * kib, MemoryCap: mib, DiskCap: pieces * piece})
			const size = 2 * (pieces + 1) * piece // room for pieces+1 extents with a hole after each
			if err := f.Truncate(size); err != nil || f.Tier() != Disk {
				t.Fatalf("truncate past MaxSize: %v, tier %v; want a rollover", err, f.Tier())
			}
			for i := range int64(pieces) {
				if err := tc.fill(f, 2*i*piece); err != nil {
					t.Fatalf("piece %d of %d under a cap of %d: %v", i+1, pieces, pieces*piece, err)
				}
				checkAccounting(t, pool, []*File{f})
			}
			if err := f.Sync(new(WritebackMark)); err != nil { // writeback: ext4 places the delayed extents now
				t.Fatal(err)
			}
			checkAccounting(t, pool, []*File{f})
			if st := pool.Stats(); st.DiskBytes != pieces*piece {
				t.Errorf("DiskBytes = %d after %d pieces of %d bytes (st_blocks × 512 = %d)", st.DiskBytes, pieces, piece, f.Blocks()*512)
			}
			t.Logf("st_blocks × 512 = %d for %d bytes of data", f.Blocks()*512, pieces*piece)
			if err := tc.fill(f, 2*pieces*piece); !errors.Is(err, ErrNoSpace) {
				t.Errorf("piece %d past the cap: %v, want ErrNoSpace", pieces+1, err)
			}
			checkAccounting(t, pool, []*File{f})
		})
	}
}

// TestDiskMeasureStaysLocal: after a write, fallocate, punched hole or truncate, a disk file's data blocks
// are measured again in the pages the operation touched, not in the whole file: FIEMAP costs per extent
// (12 ms for a file of 10000 extents on ext4), which every write to a file written at random places would
// pay. With a thousand extents in the file, each operation may read a few, and the counter must still be
// the whole file's data blocks.
func TestDiskMeasureStaysLocal(t *testing.T) {
	const piece, pieces = 4 * kib, 1000
	pool, f := newTestFile(t, Config{MaxSize: 16 * kib, MemoryCap: mib, DiskCap: 64 * mib})
	if err := f.Truncate(2 * pieces * piece); err != nil || f.Tier() != Disk {
		t.Fatalf("truncate past MaxSize: %v, tier %v; want a rollover", err, f.Tier())
	}
	for i := range int64(pieces) { // a piece, a hole, a piece...: an extent each
		mustWrite(t, f, pattern(int(piece), byte(i)), 2*i*piece)
	}
	checkAccounting(t, pool, []*File{f})
	if pool.fiemapUnsupported.Load() {
		t.Logf("the store's filesystem has no FIEMAP: disk files are counted by st_blocks, with an fstat")
		return
	}
	middle := int64(pieces) * piece
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"overwrite", func() error { _, err := f.WriteAt(pattern(100, 1), middle+10); return err }},
		{"fill a hole", func() error { _, err := f.WriteAt(pattern(int(piece), 2), middle+piece); return err }},
		{"fallocate", func() error { return f.Allocate(middle+3*piece, 2*piece, allocKeepSize) }},
		{"punch a hole", func() error { return f.Allocate(middle, 3*piece, allocPunchHole) }},
		{"append", func() error { _, err := f.WriteAt(pattern(int(piece), 3), f.Size()); return err }},
		{"truncate", func() error { return f.Truncate(f.Size() - 5*piece) }},
		{"grow", func() error { return f.Truncate(f.Size() + 100*piece) }},
	} {
		before := pool.measuredExtents.Load()
		if err := op.do(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if read := pool.measuredExtents.Load() - before; read > 10 {
			t.Errorf("%s read %d extents of the file's %d to count its blocks: the whole file, not the pages it touched", op.name, read, pieces)
		}
		checkAccounting(t, pool, []*File{f})
	}
}

// TestMemoryCapWithFullDisk: when neither a victim nor the file itself can go to disk, the write
// fails with ErrNoSpace and leaves everything as it was.
func TestMemoryCapWithFullDisk(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 64 * kib, DiskCap: 16 * kib})
	a, b := pool.NewFile(), pool.NewFile()
	defer a.Close()
	defer b.Close()
	aData, bData := pattern(int(40*kib), 1), pattern(int(20*kib), 2)
	mustWrite(t, a, aData, 0)
	mustWrite(t, b, bData, 0)
	if _, err := b.WriteAt(pattern(int(10*kib), 3), 20*kib); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write that needs disk room: %v, want ErrNoSpace", err)
	}
	checkContent(t, a, aData)
	checkContent(t, b, bData)
	checkAccounting(t, pool, []*File{a, b})
	if a.Tier() != Memory || b.Tier() != Memory {
		t.Errorf("tiers = %v, %v; want both in RAM", a.Tier(), b.Tier())
	}
}

// TestStoreFilesystemFull fills a real (tiny tmpfs) store filesystem: the write fails with
// ErrNoSpace, the size it had is restored, and a rollover that cannot be copied leaves the file
// in RAM. It needs root to mount the tmpfs.
func TestStoreFilesystemFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	parent := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", parent, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(parent, 0); err != nil {
			t.Errorf("unmounting the test tmpfs: %v", err)
		}
	})
	store, err := OpenStore(parent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pool, err := NewPool(Config{MemoryCap: 8 * mib, Store: store, Logger: slog.New(failOnWarn{t})})
	if err != nil {
		t.Fatal(err)
	}

	onDisk := pool.NewFile()
	defer onDisk.Close()
	head := pattern(int(100*kib), 1)
	mustWrite(t, onDisk, head, 0)
	if err := onDisk.Rollover(); err != nil {
		t.Fatal(err)
	}
	if n, err := onDisk.WriteAt(pattern(int(2*mib), 2), 50*kib); !errors.Is(err, ErrNoSpace) || n != int(50*kib) {
		t.Fatalf("write past the filesystem's end = %d, %v; want %d (the part inside the old size), ErrNoSpace", n, err, 50*kib)
	}
	if got := onDisk.Size(); got != 100*kib {
		t.Errorf("size after a failed write = %d, want the old %d", got, 100*kib)
	}
	var st unix.Stat_t
	fd, _ := onDisk.PassthroughFd()
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 100*kib {
		t.Errorf("backing file size after a failed write = %d (%v), want %d", st.Size, err, 100*kib)
	}

	inRAM := pool.NewFile()
	defer inRAM.Close()
	ramData := pattern(int(2*mib), 3)
	mustWrite(t, inRAM, ramData, 0)
	fdsBefore := openFdCount(t)
	if err := inRAM.Rollover(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("rollover onto a full filesystem: %v, want ErrNoSpace", err)
	}
	if inRAM.Tier() != Memory {
		t.Errorf("tier after a failed rollover = %v, want memory", inRAM.Tier())
	}
	if got := openFdCount(t); got != fdsBefore {
		t.Errorf("fds = %d after a failed rollover, want %d", got, fdsBefore)
	}
	checkContent(t, inRAM, ramData)
	checkAccounting(t, pool, []*File{onDisk, inRAM})
}

// TestLeavingTheArenaKeepsTheReservation grows small files out of the arena into memfds of their own from
// several goroutines under a tight memory cap. The RAM counter must never pass the cap: moving out of the
// arena once gave back the reservation made for the new memfd before the write was counted, and another
// file's reservation took it meanwhile (seen as peak_ram_bytes 70 KiB over the cap under scripts/stress).
func TestLeavingTheArenaKeepsTheReservation(t *testing.T) {
	const memoryCap = 320 * kib
	pool := newTestPool(t, Config{MaxSize: 256 * kib, MemoryCap: memoryCap})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				f := pool.NewFile()
				small := bytes.Repeat([]byte{byte(w)}, 40*int(kib)+i)
				big := bytes.Repeat([]byte{byte(i)}, 100*int(kib))
				if _, err := f.WriteAt(small, 0); err != nil {
					t.Errorf("small write: %v", err)
				}
				if _, err := f.WriteAt(big, 41*kib); err != nil { // past ArenaMaxFileSize: into a memfd
					t.Errorf("big write: %v", err)
				}
				if err := f.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if st := pool.Stats(); st.PeakRAMBytes > memoryCap {
		t.Errorf("peak RAM counter %d passed the cap %d", st.PeakRAMBytes, memoryCap)
	}
}

// TestSetMemoryCapSpillsDown: a cap lowered under what RAM files hold (the daemon's memory limit was lowered)
// rolls the largest over to disk until the rest fit, keeping every byte; a raised cap lets new files stay.
func TestSetMemoryCapSpillsDown(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 1 << 20})
	var files []*File
	var data [][]byte
	for i := range 6 {
		f := pool.NewFile()
		t.Cleanup(func() { f.Close() })
		p := pattern(128<<10, byte(i))
		mustWrite(t, f, p, 0)
		files, data = append(files, f), append(data, p)
	}
	if st := pool.Stats(); st.RAMBytes != 6*128<<10 || st.Rollovers != 0 {
		t.Fatalf("before: %+v", st)
	}
	if err := pool.SetMemoryCap(300 << 10); err != nil {
		t.Fatal(err)
	}
	st := pool.Stats()
	if st.RAMCap != 300<<10 || st.RAMBytes > 300<<10 || st.Rollovers != 4 || st.MemoryFiles != 2 {
		t.Errorf("after lowering the cap to 300 KiB: %+v; want 2 files of 128 KiB left in RAM, 4 rolled over", st)
	}
	for i, f := range files {
		checkContent(t, f, data[i])
	}
	if err := pool.SetMemoryCap(1 << 20); err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, pool, files) // under the first cap again, which the peak never passed
	f := pool.NewFile()
	t.Cleanup(func() { f.Close() })
	mustWrite(t, f, pattern(512<<10, 9), 0)
	if f.Tier() != Memory {
		t.Errorf("a file written after the cap was raised again went to %v", f.Tier())
	}
	if err := pool.SetMemoryCap(0); err == nil {
		t.Error("SetMemoryCap(0) succeeded")
	}
}
