package spool

import (
	"bytes"
	"errors"
	"math"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// step is one operation of a scripted test; exactly one of the kinds is set.
type step struct {
	write    []byte // WriteAt(write, off)
	truncate int64  // Truncate(truncate) when isTruncate
	alloc    int64  // Allocate(off, alloc, mode) when > 0
	mode     uint32
	rollover bool
	off      int64

	isTruncate bool
}

func writeAt(off int64, data []byte) step     { return step{write: data, off: off} }
func truncateTo(size int64) step              { return step{truncate: size, isTruncate: true} }
func allocate(off, n int64, mode uint32) step { return step{alloc: n, off: off, mode: mode} }
func rollover() step                          { return step{rollover: true} }

func (s step) run(f *File) error {
	switch {
	case s.write != nil:
		_, err := f.WriteAt(s.write, s.off)
		return err
	case s.isTruncate:
		return f.Truncate(s.truncate)
	case s.alloc > 0:
		return f.Allocate(s.off, s.alloc, s.mode)
	case s.rollover:
		return f.Rollover()
	}
	panic("empty step")
}

// layout builds expected content: size bytes of zeros with the given pieces placed at offsets.
func layout(size int64, pieces ...piece) []byte {
	b := make([]byte, size)
	for _, p := range pieces {
		copy(b[p.off:], p.data)
	}
	return b
}

type piece struct {
	off  int64
	data []byte
}

func TestFileOperations(t *testing.T) {
	hello := []byte("hello")
	page := pattern(4096, 1)
	tests := []struct {
		name  string
		steps []step
		want  []byte
	}{
		{"empty", nil, []byte{}},
		{"write at 0", []step{writeAt(0, hello)}, hello},
		{"overwrite inside", []step{writeAt(0, page), writeAt(100, hello)}, layout(4096, piece{0, page}, piece{100, hello})},
		{"write past EOF leaves a hole of zeros", []step{writeAt(10000, hello)}, layout(10005, piece{10000, hello})},
		{"write past EOF after data", []step{writeAt(0, hello), writeAt(3*4096, hello)}, layout(3*4096+5, piece{0, hello}, piece{3 * 4096, hello})},
		{"truncate up gives zeros", []step{writeAt(0, hello), truncateTo(9000)}, layout(9000, piece{0, hello})},
		{"truncate down cuts", []step{writeAt(0, page), truncateTo(10)}, page[:10]},
		{"truncate down then up gives zeros, not old data", []step{writeAt(0, page), truncateTo(10), truncateTo(4096)}, layout(4096, piece{0, page[:10]})},
		{"truncate to 0 then write", []step{writeAt(0, page), truncateTo(0), writeAt(2, hello)}, layout(7, piece{2, hello})},
		{"allocate extends with zeros", []step{allocate(0, 8192, 0)}, layout(8192)},
		{"allocate inside keeps data", []step{writeAt(0, page), allocate(0, 100, 0)}, page},
		{"allocate keep-size past EOF keeps size", []step{writeAt(0, hello), allocate(0, 1<<20, unix.FALLOC_FL_KEEP_SIZE)}, hello},
		{"punch hole zeros a range", []step{writeAt(0, page), writeAt(4096, page), allocate(4096, 4096, allocPunchHole)}, layout(8192, piece{0, page})},
		{"punch hole past EOF changes nothing", []step{writeAt(0, hello), allocate(4096, 4096, allocPunchHole)}, hello},
		{"rollover keeps data", []step{writeAt(0, page), writeAt(20000, hello), rollover()}, layout(20005, piece{0, page}, piece{20000, hello})},
		{"write after rollover", []step{writeAt(0, hello), rollover(), writeAt(3, hello)}, []byte("helhello")},
		{"truncate to 0 after rollover", []step{writeAt(0, hello), rollover(), truncateTo(0)}, []byte{}},
		{"punch hole on disk", []step{writeAt(0, page), rollover(), allocate(0, 4096, allocPunchHole)}, layout(4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, f := newTestFile(t, Config{MemoryCap: 4 * mib})
			for i, s := range tt.steps {
				if err := s.run(f); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				checkAccounting(t, pool, []*File{f})
			}
			checkContent(t, f, tt.want)
		})
	}
}

func TestReadAtBoundaries(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: mib})
	mustWrite(t, f, []byte("0123456789"), 0)
	tests := []struct {
		name    string
		off     int64
		len     int
		want    string
		wantErr error
	}{
		{"inside", 2, 3, "234", nil},
		{"short at EOF", 8, 5, "89", nil},
		{"at EOF", 10, 5, "", nil},
		{"past EOF", 1000, 5, "", nil},
		{"far past EOF", math.MaxInt64 - 1, 5, "", nil},
		{"empty buffer", 0, 0, "", nil},
		{"negative offset", -1, 5, "", syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, tt.len)
			n, err := f.ReadAt(buf, tt.off)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("ReadAt error = %v, want %v", err, tt.wantErr)
			}
			if got := string(buf[:n]); got != tt.want {
				t.Errorf("ReadAt = %q, want %q", got, tt.want)
			}
		})
	}
	empty := pool.NewFile()
	defer empty.Close()
	if n, err := empty.ReadAt(make([]byte, 10), 0); n != 0 || err != nil {
		t.Errorf("ReadAt of an empty file = %d, %v; want 0, nil", n, err)
	}
}

func TestInvalidArguments(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: mib})
	mustWrite(t, f, []byte("keep"), 0)
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"write at negative offset", func() error { _, err := f.WriteAt([]byte("x"), -1); return err }, syscall.EINVAL},
		{"write ending past MaxFileSize", func() error { _, err := f.WriteAt([]byte("xy"), MaxFileSize-1); return err }, ErrTooLarge},
		{"write whose end overflows int64", func() error { _, err := f.WriteAt([]byte("xy"), math.MaxInt64); return err }, syscall.EFBIG},
		{"truncate negative", func() error { return f.Truncate(-1) }, syscall.EINVAL},
		{"truncate past MaxFileSize", func() error { return f.Truncate(MaxFileSize + 1) }, ErrTooLarge},
		{"allocate negative offset", func() error { return f.Allocate(-1, 10, 0) }, syscall.EINVAL},
		{"allocate zero length", func() error { return f.Allocate(0, 0, 0) }, syscall.EINVAL},
		{"allocate overflowing", func() error { return f.Allocate(math.MaxInt64, 2, 0) }, ErrTooLarge},
		{"allocate zero-range mode", func() error { return f.Allocate(0, 10, unix.FALLOC_FL_ZERO_RANGE) }, syscall.EOPNOTSUPP},
		{"allocate punch without keep-size", func() error { return f.Allocate(0, 10, unix.FALLOC_FL_PUNCH_HOLE) }, syscall.EOPNOTSUPP},
		{"seek with SEEK_SET", func() error { _, err := f.Seek(0, unix.SEEK_SET); return err }, syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			checkContent(t, f, []byte("keep"))
			checkAccounting(t, pool, []*File{f})
		})
	}
	if n, err := f.WriteAt(nil, 1<<40); n != 0 || err != nil || f.Size() != 4 {
		t.Errorf("empty write far away = %d, %v, size %d; want 0, nil, size unchanged", n, err, f.Size())
	}
}

func TestRolloverThreshold(t *testing.T) {
	const maxSize = 16 << 10
	tests := []struct {
		name     string
		maxSize  int64
		steps    []step
		wantTier Tier
	}{
		{"write to exactly MaxSize stays in RAM", maxSize, []step{writeAt(0, pattern(maxSize, 0))}, Memory},
		{"write to MaxSize+1 rolls over", maxSize, []step{writeAt(0, pattern(maxSize+1, 0))}, Disk},
		{"one byte past MaxSize in a second write", maxSize, []step{writeAt(0, pattern(maxSize, 0)), writeAt(maxSize, []byte{1})}, Disk},
		{"sparse write past MaxSize rolls over", maxSize, []step{writeAt(maxSize, []byte{1})}, Disk},
		{"truncate to MaxSize stays", maxSize, []step{truncateTo(maxSize)}, Memory},
		{"truncate to MaxSize+1 rolls over", maxSize, []step{truncateTo(maxSize + 1)}, Disk},
		{"allocate to MaxSize+1 rolls over", maxSize, []step{allocate(0, maxSize+1, 0)}, Disk},
		{"allocate keep-size past MaxSize stays", maxSize, []step{writeAt(0, []byte{1}), allocate(0, 4*maxSize, allocKeepSize)}, Memory},
		{"shrinking does not bring it back", maxSize, []step{truncateTo(maxSize + 1), truncateTo(0)}, Disk},
		{"MaxSize 0 never rolls over by size", 0, []step{writeAt(0, pattern(int(mib), 0)), truncateTo(2 * mib)}, Memory},
		{"explicit rollover of an empty file", maxSize, []step{rollover()}, Disk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, f := newTestFile(t, Config{MaxSize: tt.maxSize, MemoryCap: 4 * mib})
			for i, s := range tt.steps {
				if err := s.run(f); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				checkAccounting(t, pool, []*File{f})
			}
			if got := f.Tier(); got != tt.wantTier {
				t.Errorf("Tier = %v, want %v", got, tt.wantTier)
			}
			wantRollovers := int64(0)
			if tt.wantTier == Disk {
				wantRollovers = 1
			}
			if got := pool.Stats().Rollovers; got != wantRollovers {
				t.Errorf("Rollovers = %d, want %d", got, wantRollovers)
			}
			fd, ok := f.PassthroughFd()
			if ok != (tt.wantTier == Disk) || (ok && fd < 0) || (!ok && fd != -1) {
				t.Errorf("PassthroughFd = %d, %v for a %v file", fd, ok, tt.wantTier)
			}
		})
	}
}

// TestRolloverKeepsHoles checks that a rollover copies only data: the spilled byte count and the
// disk file's allocated blocks show that the hole was not written.
func TestRolloverKeepsHoles(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: 8 * mib})
	mustWrite(t, f, []byte("head"), 0)
	mustWrite(t, f, []byte("tail"), 4*mib)
	want := layout(4*mib+4, piece{0, []byte("head")}, piece{4 * mib, []byte("tail")})
	if err := f.Rollover(); err != nil {
		t.Fatalf("Rollover: %v", err)
	}
	if err := f.Rollover(); err != nil {
		t.Fatalf("second Rollover (a no-op): %v", err)
	}
	checkContent(t, f, want)
	st := pool.Stats()
	// Pages of 4 KiB: [0, 4096) and [4 MiB, 4 MiB+4).
	if want := int64(4096 + 4); st.SpilledBytes != want {
		t.Errorf("SpilledBytes = %d, want %d (data pages only)", st.SpilledBytes, want)
	}
	// The disk cap counts allocated bytes: the hole costs nothing.
	if st.Rollovers != 1 || st.DiskFiles != 1 || st.MemoryFiles != 0 || st.RAMBytes != 0 || st.DiskBytes != f.Blocks()*512 {
		t.Errorf("Stats after rollover = %+v", st)
	}
	if blocks := f.Blocks(); blocks <= 0 || blocks > 64 {
		t.Errorf("Blocks = %d after rollover of 8 bytes of data in 4 MiB; want a few (holes kept)", blocks)
	}
	if err := f.Sync(new(WritebackMark)); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

func TestSeekDataHole(t *testing.T) {
	const pg = 4096
	// Data in [0, pg) and [3pg, 3pg+10), a hole between, and a trailing hole up to 6pg.
	build := func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(pg, 0), 0)
		mustWrite(t, f, pattern(10, 0), 3*pg)
		if err := f.Truncate(6 * pg); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		off    int64
		whence int
		want   int64 // -1: ENXIO
	}{
		{"data at 0", 0, unix.SEEK_DATA, 0},
		{"hole after first page", 0, unix.SEEK_HOLE, pg},
		{"data after hole", pg, unix.SEEK_DATA, 3 * pg},
		{"inside hole is a hole", 2 * pg, unix.SEEK_HOLE, 2 * pg},
		{"hole after second data", 3 * pg, unix.SEEK_HOLE, 4 * pg},
		{"no data in trailing hole", 4 * pg, unix.SEEK_DATA, -1},
		{"data at end", 6 * pg, unix.SEEK_DATA, -1},
		{"hole at end", 6 * pg, unix.SEEK_HOLE, -1},
		{"negative", -1, unix.SEEK_DATA, -1},
	}
	for _, tier := range []Tier{Memory, Disk} {
		t.Run(tier.String(), func(t *testing.T) {
			_, f := newTestFile(t, Config{MemoryCap: mib})
			if _, err := f.Seek(0, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
				t.Errorf("SEEK_DATA on an empty file: %v, want ENXIO", err)
			}
			build(t, f)
			if tier == Disk {
				if err := f.Rollover(); err != nil {
					t.Fatal(err)
				}
			}
			for _, tt := range tests {
				got, err := f.Seek(tt.off, tt.whence)
				if tt.want < 0 {
					if !errors.Is(err, syscall.ENXIO) {
						t.Errorf("%s: Seek(%d) = %d, %v; want ENXIO", tt.name, tt.off, got, err)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Errorf("%s: Seek(%d) = %d, %v; want %d", tt.name, tt.off, got, err, tt.want)
				}
			}
		})
	}
}

func TestAllocateBlocks(t *testing.T) {
	for _, tier := range []Tier{Memory, Disk} {
		t.Run(tier.String(), func(t *testing.T) {
			pool, f := newTestFile(t, Config{MemoryCap: mib})
			if tier == Disk {
				if err := f.Rollover(); err != nil {
					t.Fatal(err)
				}
			}
			// Larger than the arena's files, so that the file has an fd of its own in both tiers.
			const size = 4 * ArenaMaxFileSize
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			if b := f.Blocks(); b != 0 {
				t.Errorf("Blocks of a sparse file = %d, want 0", b)
			}
			checkAccounting(t, pool, []*File{f})
			if err := f.Allocate(0, size, 0); err != nil {
				t.Fatal(err)
			}
			if b := f.Blocks(); b < size/512 {
				t.Errorf("Blocks after allocating %d bytes = %d, want >= %d", size, b, size/512)
			}
			checkAccounting(t, pool, []*File{f})
			if err := f.Allocate(0, size, allocPunchHole); err != nil {
				t.Fatal(err)
			}
			if b := f.Blocks(); b != 0 {
				t.Errorf("Blocks after punching everything = %d, want 0", b)
			}
			checkAccounting(t, pool, []*File{f})
			checkContent(t, f, make([]byte, size))
		})
	}
}

func TestCloseFreesEverything(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 4 * mib})
	before := openFdCount(t)
	const n = 50
	var files []*File
	for i := range n {
		f := pool.NewFile()
		files = append(files, f)
		mustWrite(t, f, pattern(1000, byte(i)), 0)
		if i%2 == 1 {
			if err := f.Rollover(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 1000 { // empty files hold no descriptor
		files = append(files, pool.NewFile())
	}
	checkAccounting(t, pool, files)
	// The disk files hold one each; the RAM files share one arena memfd.
	if got := openFdCount(t); got != before+n/2+1 {
		t.Errorf("open fds = %d with %d disk files and %d small RAM files, want %d", got, n/2, n/2, before+n/2+1)
	}
	for _, f := range files {
		if err := f.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	// The arena closes a memfd once its last file is gone.
	if got, memfds := openFdCount(t), pool.Stats().ArenaMemfds; memfds != 0 || got != before {
		t.Errorf("open fds = %d after Close with %d arena memfds, want %d and 0", got, memfds, before)
	}
	st := pool.Stats()
	if st.Files != 0 || st.MemoryFiles != 0 || st.DiskFiles != 0 || st.RAMBytes != 0 || st.DiskBytes != 0 {
		t.Errorf("Stats after closing everything = %+v", st)
	}
	// Each odd file is in RAM beside the even ones until its own rollover: 25 + 1 files at the top,
	// each in a 1 KiB arena slot.
	if want := int64(n/2+1) * 1024; st.PeakRAMBytes != want {
		t.Errorf("PeakRAMBytes = %d, want %d", st.PeakRAMBytes, want)
	}
}

func TestTruncateToZeroReleasesMemfd(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: mib})
	before := openFdCount(t)
	// Past the arena's largest files, so that the file has a memfd of its own.
	mustWrite(t, f, []byte("x"), ArenaMaxFileSize)
	if got := openFdCount(t); got != before+1 {
		t.Errorf("fds after first write = %d, want %d", got, before+1)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if got := openFdCount(t); got != before {
		t.Errorf("fds after truncate to 0 = %d, want %d", got, before)
	}
	checkAccounting(t, pool, []*File{f})
	// A small file leaves the arena the same way.
	mustWrite(t, f, []byte("x"), 0)
	if st := pool.Stats(); st.ArenaFiles != 1 || st.RAMBytes != arenaMinSlot {
		t.Errorf("after a 1-byte write: %d arena files, %d RAM bytes; want 1 and %d", st.ArenaFiles, st.RAMBytes, arenaMinSlot)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.ArenaFiles != 0 || st.RAMBytes != 0 {
		t.Errorf("after truncate to 0: %d arena files, %d RAM bytes; want 0 and 0", st.ArenaFiles, st.RAMBytes)
	}
	checkAccounting(t, pool, []*File{f})
}

func TestClosedFile(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: mib})
	f := pool.NewFile()
	mustWrite(t, f, []byte("data"), 0)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	tests := []struct {
		name string
		op   func() error
	}{
		{"Close", f.Close},
		{"ReadAt", func() error { _, err := f.ReadAt(buf, 0); return err }},
		{"WriteAt", func() error { _, err := f.WriteAt(buf, 0); return err }},
		{"Truncate", func() error { return f.Truncate(1) }},
		{"Allocate", func() error { return f.Allocate(0, 1, 0) }},
		{"Seek", func() error { _, err := f.Seek(0, unix.SEEK_DATA); return err }},
		{"Rollover", f.Rollover},
		{"Sync", func() error { return f.Sync(new(WritebackMark)) }},
	}
	for _, tt := range tests {
		if err := tt.op(); !errors.Is(err, ErrClosed) || !errors.Is(err, syscall.EBADF) {
			t.Errorf("%s after Close: %v, want ErrClosed (EBADF)", tt.name, err)
		}
	}
	if fd, ok := f.PassthroughFd(); ok || fd != -1 {
		t.Errorf("PassthroughFd after Close = %d, %v", fd, ok)
	}
	if f.Size() != 0 || f.Blocks() != 0 {
		t.Errorf("Size, Blocks after Close = %d, %d; want 0, 0", f.Size(), f.Blocks())
	}
	checkAccounting(t, pool, nil)
}

// TestNoteExternalWrite plays the kernel writing the backing fd directly (passthrough).
func TestNoteExternalWrite(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: mib})
	mustWrite(t, f, []byte("abc"), 0)
	f.NoteExternalWrite() // a RAM file is never handed out: no effect
	if _, ok := f.PassthroughFd(); ok {
		t.Fatal("a RAM file offered a passthrough fd")
	}
	if err := f.Rollover(); err != nil {
		t.Fatal(err)
	}
	fd, ok := f.PassthroughFd()
	if !ok {
		t.Fatal("no passthrough fd on disk")
	}
	f.NoteExternalWrite()
	if _, err := unix.Pwrite(fd, []byte("xyz"), 100); err != nil {
		t.Fatal(err)
	}
	if got := f.Size(); got != 103 {
		t.Errorf("Size after an external write = %d, want 103", got)
	}
	checkAccounting(t, pool, []*File{f})
	mustWrite(t, f, []byte("!"), 200)
	checkContent(t, f, layout(201, piece{0, []byte("abc")}, piece{100, []byte("xyz")}, piece{200, []byte("!")}))
	checkAccounting(t, pool, []*File{f})
	if err := f.Truncate(50); err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, pool, []*File{f})
}

func TestNewPoolValidates(t *testing.T) {
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"valid", Config{MemoryCap: 1, Store: store}, true},
		{"no store", Config{MemoryCap: 1}, false},
		{"zero memory cap", Config{Store: store}, false},
		{"negative max size", Config{MemoryCap: 1, MaxSize: -1, Store: store}, false},
		{"negative disk cap", Config{MemoryCap: 1, DiskCap: -1, Store: store}, false},
	}
	for _, tt := range tests {
		pool, err := NewPool(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: NewPool error = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err == nil && pool.Config().MemoryCap != tt.cfg.MemoryCap {
			t.Errorf("%s: Config() does not return the config", tt.name)
		}
	}
}

func TestTierString(t *testing.T) {
	for tier, want := range map[Tier]string{Memory: "memory", Disk: "disk", Tier(7): "Tier(7)"} {
		if got := tier.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(tier), got, want)
		}
	}
	if !bytes.Contains([]byte(ErrNoSpace.Error()), []byte("no space")) || !errors.Is(ErrNoSpace, syscall.ENOSPC) {
		t.Errorf("ErrNoSpace = %v does not wrap ENOSPC", ErrNoSpace)
	}
}

// TestReadExtent checks the splice source a READ is answered with: the same bytes as ReadAt, in place in the
// File's descriptor, on both tiers.
func TestReadExtent(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: mib})
	mem := pool.NewFile()
	defer mem.Close()
	mustWrite(t, mem, []byte("0123456789"), 0)
	disk := pool.NewFile()
	defer disk.Close()
	mustWrite(t, disk, []byte("0123456789"), 0)
	if err := disk.Rollover(); err != nil {
		t.Fatal(err)
	}
	empty := pool.NewFile()
	defer empty.Close()

	tests := []struct {
		name    string
		f       *File
		off     int64
		len     int
		want    string // "" with wantOK false: nothing to hand over
		wantOK  bool
		wantErr error
	}{
		{"memory, inside", mem, 2, 3, "234", true, nil},
		{"memory, short at EOF", mem, 8, 5, "89", true, nil},
		{"memory, at EOF", mem, 10, 5, "", false, nil},
		{"memory, far past EOF", mem, math.MaxInt64 - 1, 5, "", false, nil},
		{"memory, nothing asked", mem, 0, 0, "", false, nil},
		{"memory, negative offset", mem, -1, 5, "", false, syscall.EINVAL},
		{"disk, inside", disk, 2, 3, "234", true, nil},
		{"disk, short at EOF", disk, 8, 5, "89", true, nil},
		{"never written (no descriptor)", empty, 0, 5, "", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext, ok, err := tt.f.ReadExtent(tt.off, tt.len)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("ReadExtent error = %v, want %v", err, tt.wantErr)
			}
			if ok != tt.wantOK {
				t.Fatalf("ReadExtent ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			buf := make([]byte, ext.Len)
			n, err := unix.Pread(ext.Fd, buf, ext.Off)
			if err != nil {
				ext.Release()
				t.Fatalf("pread of the extent: %v", err)
			}
			copied := make([]byte, ext.Len+8)
			m, err := ext.ReadInto(copied)
			ext.Release()
			if got := string(buf[:n]); got != tt.want || ext.Len != len(tt.want) {
				t.Errorf("extent holds %q (Len %d), want %q", got, ext.Len, tt.want)
			}
			if got := string(copied[:m]); err != nil || got != tt.want {
				t.Errorf("ReadInto = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	closed := pool.NewFile()
	mustWrite(t, closed, []byte("x"), 0)
	closed.Close()
	if _, ok, err := closed.ReadExtent(0, 1); ok || !errors.Is(err, ErrClosed) {
		t.Errorf("ReadExtent of a closed file = ok %v, %v; want ErrClosed", ok, err)
	}
}

// TestReadExtentHoldsTheFile checks that a held extent keeps its bytes in place: writes, truncates, rollovers
// and Close take f.mu exclusively, and cannot while the extent is held (go-fuse splices from the descriptor
// after the READ handler has returned).
func TestReadExtentHoldsTheFile(t *testing.T) {
	_, f := newTestFile(t, Config{MemoryCap: mib})
	mustWrite(t, f, []byte("before"), 0)
	ext, ok, err := f.ReadExtent(0, 6)
	if err != nil || !ok {
		t.Fatalf("ReadExtent = %v, %v", ok, err)
	}
	if f.mu.TryLock() {
		f.mu.Unlock()
		ext.Release()
		t.Fatal("the file's lock could be taken exclusively while an extent was held")
	}
	ext.Release()
	if !f.mu.TryLock() {
		t.Fatal("the file's lock stayed held after Release")
	}
	f.mu.Unlock()
	mustWrite(t, f, []byte("after!"), 0)
}
