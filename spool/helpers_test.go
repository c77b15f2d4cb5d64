package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

// failOnWarn is a slog handler that turns every warning or error into a test failure, so that
// a code path that "only logs" cannot hide in a passing test.
type failOnWarn struct{ t testing.TB }

func (h failOnWarn) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelWarn }
func (h failOnWarn) Handle(_ context.Context, r slog.Record) error {
	var attrs bytes.Buffer
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&attrs, " %s=%v", a.Key, a.Value)
		return true
	})
	h.t.Errorf("unexpected log at %s: %s%s", r.Level, r.Message, attrs.String())
	return nil
}
func (h failOnWarn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h failOnWarn) WithGroup(string) slog.Handler      { return h }

// newTestPool makes a pool over a fresh store in t.TempDir(); cleanup closes the store and
// checks that its directory is gone.
func newTestPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("store.Close: %v", err)
		}
		if _, err := os.Lstat(store.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("store dir %s still there after Close (lstat: %v)", store.Path(), err)
		}
	})
	cfg.Store = store
	if cfg.Logger == nil {
		cfg.Logger = slog.New(failOnWarn{t})
	}
	pool, err := NewPool(cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	return pool
}

// newTestFile is an empty file of a new test pool (newTestPool), closed at cleanup.
func newTestFile(t testing.TB, cfg Config) (*Pool, *File) {
	t.Helper()
	pool := newTestPool(t, cfg)
	f := pool.NewFile()
	t.Cleanup(func() { f.Close() })
	return pool, f
}

// checkAccounting asserts the pool's counters against the files themselves: RAMBytes is exactly
// the sum of the allocated bytes (arena slots, Blocks × 512 of memfds) of Memory-tier files, DiskBytes
// that of the data blocks of Disk-tier ones (Pool.diskAllocation), each Account's used bytes that of its
// files, the file counts agree, RAM never passed its cap, and empty RAM files hold no descriptor. files
// must be all the live files of the pool.
func checkAccounting(t testing.TB, pool *Pool, files []*File) {
	t.Helper()
	var want Stats
	accounts := map[*Account]int64{}
	for _, f := range files {
		size := f.Size()
		if a := f.Account(); a != nil {
			accounts[a] += allocated(t, f)
		}
		want.Files++
		switch f.Tier() {
		case Memory:
			want.MemoryFiles++
			want.RAMBytes += allocated(t, f)
			f.mu.RLock()
			fd, _ := f.place.at()
			hasFd := fd >= 0
			f.mu.RUnlock()
			if hasFd != (size > 0) {
				t.Errorf("RAM file of size %d: holds an fd = %v, want %v", size, hasFd, size > 0)
			}
		case Disk:
			want.DiskFiles++
			want.DiskBytes += allocated(t, f)
		}
	}
	got := pool.Stats()
	if got.Files != want.Files || got.MemoryFiles != want.MemoryFiles || got.DiskFiles != want.DiskFiles ||
		got.RAMBytes != want.RAMBytes || got.DiskBytes != want.DiskBytes {
		t.Errorf("Stats = files %d/%d/%d ram %d disk %d; the files themselves say %d/%d/%d ram %d disk %d",
			got.Files, got.MemoryFiles, got.DiskFiles, got.RAMBytes, got.DiskBytes,
			want.Files, want.MemoryFiles, want.DiskFiles, want.RAMBytes, want.DiskBytes)
	}
	if got.RAMBytes > got.RAMCap || got.PeakRAMBytes > got.RAMCap {
		t.Errorf("RAM %d (peak %d) passed the cap %d", got.RAMBytes, got.PeakRAMBytes, got.RAMCap)
	}
	if got.DiskCap > 0 && got.DiskBytes > got.DiskCap {
		t.Errorf("disk %d passed the cap %d", got.DiskBytes, got.DiskCap)
	}
	for a, sum := range accounts {
		if used := a.Used(); used != sum {
			t.Errorf("an account's used bytes are %d; its files allocate %d", used, sum)
		}
	}
}

// allocated is what the caps count for f, measured now: its arena slot, its memfd's blocks, its backing
// file's data blocks (Pool.diskAllocation), or a passthrough file's blocks.
func allocated(t testing.TB, f *File) int64 {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if a, ok := f.place.(*arenaFile); ok {
		return a.slot.size
	}
	fd, _ := f.place.at()
	if f.closed || fd < 0 {
		return 0
	}
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		t.Fatalf("fstat: %v", err)
	}
	if w := f.place.where(); w == Memfd || w == DiskPassthrough {
		return st.Blocks * 512
	}
	n, err := f.pool.diskAllocation(fd, st.Size, &st)
	if err != nil {
		t.Fatalf("diskAllocation: %v", err)
	}
	return n
}

// readAll reads the whole file through ReadAt, asking for a little more than Size to see EOF.
func readAll(t testing.TB, f *File) []byte {
	t.Helper()
	buf := make([]byte, f.Size()+100)
	n, err := f.ReadAt(buf, 0)
	if err != nil {
		t.Fatalf("ReadAt: %v", err)
	}
	return buf[:n]
}

// checkContent asserts size and content, reporting the first difference rather than two dumps.
func checkContent(t testing.TB, f *File, want []byte) {
	t.Helper()
	if size := f.Size(); size != int64(len(want)) {
		t.Fatalf("Size = %d, want %d", size, len(want))
	}
	got := readAll(t, f)
	if !bytes.Equal(got, want) {
		if len(got) != len(want) {
			t.Fatalf("read %d bytes, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("content differs first at offset %d: got %#x, want %#x", i, got[i], want[i])
			}
		}
	}
}

// pattern is recognisable, non-zero test data; seed makes different writes differ.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251) + 1
		if b[i] == 0 {
			b[i] = 0x5a
		}
	}
	return b
}

// openFdCount is the number of descriptors this process has open.
func openFdCount(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing /proc/self/fd: %v", err)
	}
	return len(entries)
}

func mustWrite(t testing.TB, f *File, p []byte, off int64) {
	t.Helper()
	if n, err := f.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

// capturingHandler records the level of every record at Info and above ("INFO", "WARN", "ERROR").
type capturingHandler struct{ levels *[]string }

func (h capturingHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}
func (h capturingHandler) Handle(_ context.Context, r slog.Record) error {
	*h.levels = append(*h.levels, r.Level.String())
	return nil
}
func (h capturingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h capturingHandler) WithGroup(string) slog.Handler      { return h }

func newCapturingLogger(levels *[]string) *slog.Logger { return slog.New(capturingHandler{levels}) }
