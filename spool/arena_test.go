package spool

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestArenaSlotSizes(t *testing.T) {
	tests := []struct{ size, slot int64 }{
		{1, 512}, {512, 512}, {513, 1024}, {1024, 1024}, {1025, 2048}, {2048, 2048}, {2049, 4096},
		{4096, 4096}, {4097, 8192}, {8192, 8192}, {8193, 12288}, {60000, 61440}, {65535, 65536}, {65536, 65536},
	}
	for _, tt := range tests {
		if got := arenaSlotSize(tt.size); got != tt.slot {
			t.Errorf("arenaSlotSize(%d) = %d, want %d", tt.size, got, tt.slot)
		}
		if c := arenaClassFor(tt.size); c < 0 || c >= arenaClasses {
			t.Errorf("arenaClassFor(%d) = %d, out of [0, %d)", tt.size, c, arenaClasses)
		}
	}
}

// TestArenaManyFilesFewDescriptors: 20,000 small files of mixed sizes hold a handful of memfds, not one
// each, read back exactly, and give everything back when closed.
func TestArenaManyFilesFewDescriptors(t *testing.T) {
	pool := newTestPool(t, Config{MaxSize: mib, MemoryCap: 256 * mib})
	before := openFdCount(t)
	const n = 20000
	files := make([]*File, n)
	for i := range files {
		files[i] = pool.NewFile()
		mustWrite(t, files[i], pattern(1+i%4096, byte(i)), 0)
	}
	if got := openFdCount(t) - before; got > 2*arenaClasses {
		t.Errorf("%d small files hold %d descriptors, want at most %d", n, got, 2*arenaClasses)
	}
	st := pool.Stats()
	if st.ArenaFiles != n || st.ArenaMemfds != int64(openFdCount(t)-before) {
		t.Errorf("ArenaFiles %d, ArenaMemfds %d; want %d and the %d descriptors open", st.ArenaFiles, st.ArenaMemfds, n, openFdCount(t)-before)
	}
	for i := 0; i < n; i += 997 {
		checkContent(t, files[i], pattern(1+i%4096, byte(i)))
	}
	checkAccounting(t, pool, files)
	for _, f := range files {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if st := pool.Stats(); st.RAMBytes != 0 || st.ArenaFiles != 0 || st.ArenaMemfds != 0 || st.Descriptors != 0 {
		t.Errorf("after Close: RAMBytes %d, ArenaFiles %d, ArenaMemfds %d, Descriptors %d; want all 0", st.RAMBytes, st.ArenaFiles, st.ArenaMemfds, st.Descriptors)
	}
	if got := openFdCount(t); got != before {
		t.Errorf("open fds = %d after closing every file, want %d", got, before)
	}
}

// TestArenaReusedSlotsReadZeros: a slot given back and handed out again holds nothing of its old owner,
// past the new owner's size either (truncate up, sparse write), whatever the slot size.
func TestArenaReusedSlotsReadZeros(t *testing.T) {
	for _, size := range []int{300, 3000, 40000} {
		pool := newTestPool(t, Config{MemoryCap: 64 * mib})
		var old []*File
		for i := range 64 {
			f := pool.NewFile()
			mustWrite(t, f, pattern(size, byte(i)), 0)
			old = append(old, f)
		}
		for _, f := range old {
			f.Close()
		}
		for i := range 64 {
			f := pool.NewFile()
			mustWrite(t, f, []byte("x"), 0)
			if err := f.Truncate(int64(size)); err != nil {
				t.Fatal(err)
			}
			checkContent(t, f, layout(int64(size), piece{0, []byte("x")}))
			// Shrink, then grow again: the cut bytes are gone.
			mustWrite(t, f, pattern(size, byte(i)), 0)
			if err := f.Truncate(10); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, f, []byte("y"), int64(size-1))
			checkContent(t, f, layout(int64(size), piece{0, pattern(size, byte(i))[:10]}, piece{int64(size - 1), []byte("y")}))
			f.Close()
		}
	}
}

// TestArenaGrowthMovesTheFile: a file that grows moves to bigger slots, then out of the arena to a memfd of
// its own, keeping its bytes and its holes; one that grows past MaxSize from the arena rolls over.
func TestArenaGrowthMovesTheFile(t *testing.T) {
	pool, f := newTestFile(t, Config{MaxSize: 1 * mib, MemoryCap: 64 * mib})
	want := layout(0)
	step := func(data []byte, off int64) {
		t.Helper()
		mustWrite(t, f, data, off)
		if end := off + int64(len(data)); end > int64(len(want)) {
			want = append(want, make([]byte, end-int64(len(want)))...)
		}
		copy(want[off:], data)
		checkContent(t, f, want)
		checkAccounting(t, pool, []*File{f})
	}
	step([]byte("head"), 0)
	if st := pool.Stats(); st.ArenaFiles != 1 || st.RAMBytes != 512 {
		t.Fatalf("1 small file: ArenaFiles %d, RAMBytes %d; want 1, 512", st.ArenaFiles, st.RAMBytes)
	}
	step(pattern(100, 1), 700)
	step(pattern(100, 2), 20000)
	step(pattern(100, 3), ArenaMaxFileSize) // out of the arena
	if st := pool.Stats(); st.ArenaFiles != 0 || f.Tier() != Memory {
		t.Fatalf("a %d-byte file: ArenaFiles %d, tier %v; want 0, memory", f.Size(), st.ArenaFiles, f.Tier())
	}
	// The pages between the pieces stayed holes in the new memfd.
	if got, err := f.Seek(4096, unix.SEEK_DATA); err != nil || got != 16384 {
		t.Errorf("SEEK_DATA from 4096 after leaving the arena = %d, %v; want 16384", got, err)
	}
	step(pattern(10, 4), 2*mib) // past MaxSize: to disk
	if f.Tier() != Disk {
		t.Fatalf("tier = %v past MaxSize", f.Tier())
	}

	g := pool.NewFile()
	defer g.Close()
	mustWrite(t, g, []byte("small"), 0)
	if err := g.Rollover(); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.ArenaFiles != 0 || st.SpilledBytes < 5 {
		t.Errorf("after rolling over an arena file: %+v", st)
	}
	checkContent(t, g, []byte("small"))
	checkAccounting(t, pool, []*File{f, g})
}

// TestArenaCopyKeepsWrittenZeros: zeros written to a small file are data, as on tmpfs: they are copied
// when it moves to disk (and counted there), while a hole stays a hole.
func TestArenaCopyKeepsWrittenZeros(t *testing.T) {
	pool, f := newTestFile(t, Config{MemoryCap: 64 * mib})
	mustWrite(t, f, make([]byte, 3*pageSize), 0) // written zeros
	mustWrite(t, f, []byte("x"), 6*pageSize)     // a hole of three pages before it
	if err := f.Rollover(); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.SpilledBytes != 3*pageSize+1 {
		t.Errorf("SpilledBytes = %d, want %d (the written zeros and the last byte, not the hole)", st.SpilledBytes, 3*pageSize+1)
	}
	if got, err := f.Seek(0, unix.SEEK_HOLE); err != nil || got < 3*pageSize || got > 6*pageSize {
		t.Errorf("SEEK_HOLE from 0 on disk = %d, %v; want the hole at %d", got, err, 3*pageSize)
	}
	checkContent(t, f, layout(6*pageSize+1, piece{6 * pageSize, []byte("x")}))
	checkAccounting(t, pool, []*File{f})
}

// TestArenaSeekStaysInTheFile: SEEK_DATA and SEEK_HOLE of an arena file never answer outside it, even
// though its neighbours' pages are data.
func TestArenaSeekStaysInTheFile(t *testing.T) {
	pool := newTestPool(t, Config{MemoryCap: 64 * mib})
	a, b := pool.NewFile(), pool.NewFile()
	defer a.Close()
	defer b.Close()
	mustWrite(t, a, []byte("aaaa"), 0)
	mustWrite(t, b, []byte("bbbb"), 0)
	for _, f := range []*File{a, b} {
		if got, err := f.Seek(0, unix.SEEK_HOLE); err != nil || got != 4 {
			t.Errorf("SEEK_HOLE from 0 = %d, %v; want 4 (the end)", got, err)
		}
		if got, err := f.Seek(2, unix.SEEK_DATA); err != nil || got != 2 {
			t.Errorf("SEEK_DATA from 2 = %d, %v; want 2", got, err)
		}
		if _, err := f.Seek(4, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
			t.Errorf("SEEK_DATA at the end: %v, want ENXIO", err)
		}
	}
}

// TestDescriptorLimitIsNoSpace: when the process cannot open one more descriptor, a file that needs one
// fails with ErrNoSpace (ENOSPC, never EMFILE), the refusal is counted, and small files still fit in the
// arena's existing memfds.
func TestDescriptorLimitIsNoSpace(t *testing.T) {
	var logged []string
	pool := newTestPool(t, Config{MemoryCap: 64 * mib})
	pool.log = newCapturingLogger(&logged)
	small := pool.NewFile()
	defer small.Close()
	mustWrite(t, small, []byte("warm"), 0) // the 512-byte class has a memfd now

	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Fill the table up to a low soft limit with dups, so that the next descriptor fails with EMFILE.
	low := lim
	low.Cur = uint64(openFdCount(t) + 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []int
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}
	restore := func() {
		for _, fd := range fillers {
			unix.Close(fd)
		}
		fillers = nil
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	defer restore()

	big := pool.NewFile()
	defer big.Close()
	_, err := big.WriteAt(pattern(int(ArenaMaxFileSize+1), 1), 0)
	other := pool.NewFile()
	defer other.Close()
	_, smallErr := other.WriteAt([]byte("tiny"), 0)
	restore()
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
		t.Errorf("write that needs a memfd with the table full: %v, want ENOSPC and not EMFILE", err)
	}
	if smallErr != nil {
		t.Errorf("small file with the table full: %v, want it in the arena's memfd", smallErr)
	}
	if st := pool.Stats(); st.DescriptorLimitHits != 1 {
		t.Errorf("DescriptorLimitHits = %d, want 1", st.DescriptorLimitHits)
	}
	if len(logged) != 1 {
		t.Errorf("logged %q; want one line", logged)
	}
	mustWrite(t, big, pattern(int(ArenaMaxFileSize+1), 1), 0)
	checkAccounting(t, pool, []*File{small, big, other})
}

// TestStoreRecreatedAfterDeletion: a store directory deleted while in use is made again (same checks as
// at start) when a file next needs the disk; if its parent is gone too, the rollover fails with ENOSPC,
// never EPERM, with one log line and the cause in Stats.
func TestStoreRecreatedAfterDeletion(t *testing.T) {
	var logged []string
	parent := filepath.Join(t.TempDir(), "parent")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := OpenStoreWithLogger(parent, newCapturingLogger(&logged))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pool, err := NewPool(Config{MemoryCap: mib, Store: store, Logger: newCapturingLogger(&logged)})
	if err != nil {
		t.Fatal(err)
	}
	first := store.Path()
	if err := os.RemoveAll(first); err != nil {
		t.Fatal(err)
	}
	if _, msg := store.health(); msg == "" {
		t.Errorf("health of a deleted store says nothing")
	}
	f := pool.NewFile()
	defer f.Close()
	mustWrite(t, f, []byte("data"), 0)
	if err := f.Rollover(); err != nil {
		t.Fatalf("rollover with the store deleted: %v", err)
	}
	if store.Path() == first {
		t.Errorf("store path still %s", first)
	}
	if st, err := os.Stat(store.Path()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("new store %s: %v, %v; want a 0700 directory", store.Path(), st, err)
	}
	if st := pool.Stats(); st.StoreRecreated != 1 || st.StoreError != "" {
		t.Errorf("StoreRecreated %d, StoreError %q; want 1, empty", st.StoreRecreated, st.StoreError)
	}
	checkContent(t, f, []byte("data"))

	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	logged = nil
	for range 3 {
		g := pool.NewFile()
		mustWrite(t, g, []byte("more"), 0)
		err := g.Rollover()
		if !errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EPERM) {
			t.Errorf("rollover with the store's parent gone: %v, want ENOSPC", err)
		}
		checkContent(t, g, []byte("more"))
		g.Close()
	}
	if st := pool.Stats(); st.StoreError == "" {
		t.Errorf("StoreError empty with the store's parent gone")
	}
	errorLines := 0
	for _, l := range logged {
		if l == "ERROR" {
			errorLines++
		}
	}
	if errorLines != 1 {
		t.Errorf("logged %q; want one error line for three failures", logged)
	}
}
