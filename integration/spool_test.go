package integration

// The spool (docs/guarantees.md, The spool), through real mounts: rollover at --max-size, by truncate and on demand; the
// memory cap (a write never fails for lack of RAM while the disk has room); the disk cap (ENOSPC that changes
// nothing else); the disk store (nothing named with data, gone at unmount); statfs; passthrough of disk-resident
// files (and none under --disk). Expectations come from the contract and the flags given, never from tempfs.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spoolStats is the part of the user.tempfs.stats JSON (`tempfs status --json`) that these tests read.
type spoolStats struct {
	Files        int64  `json:"files"`
	OpenHandles  int64  `json:"open_handles"`
	RAMBytes     int64  `json:"ram_bytes"`
	RAMCap       int64  `json:"ram_cap"`
	PeakRAMBytes int64  `json:"peak_ram_bytes"`
	DiskBytes    int64  `json:"disk_bytes"`
	DiskCap      int64  `json:"disk_cap"`
	DiskFiles    int64  `json:"disk_files"`
	Rollovers    int64  `json:"rollovers"`
	BytesWritten int64  `json:"bytes_written"`
	Passthrough  *bool  `json:"passthrough"`
	DirectWrites bool   `json:"direct_writes"`
	Store        string `json:"store"`
	// Capacity (capacity_test.go).
	RAMCapSource        string `json:"ram_cap_source"`
	PeakDiskBytes       int64  `json:"peak_disk_bytes"`
	DiskWrittenBytes    int64  `json:"disk_written_bytes"`
	ArenaFiles          int64  `json:"arena_files"`
	ArenaMemfds         int64  `json:"arena_memfds"`
	Descriptors         int64  `json:"descriptors"`
	DescriptorLimit     int64  `json:"descriptor_limit"`
	DescriptorLimitHits int64  `json:"descriptor_limit_hits"`
	StoreRecreated      int64  `json:"store_recreated"`
	StoreError          string `json:"store_error"`
}

func spoolGetStats(t testing.TB, m *mount) spoolStats {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(m.Dir, "user.tempfs.stats", buf)
	if err != nil {
		t.Fatalf("getxattr(%s, user.tempfs.stats): %v", m.Dir, err)
	}
	var s spoolStats
	if err := json.Unmarshal(buf[:n], &s); err != nil {
		t.Fatalf("stats JSON %q: %v", buf[:n], err)
	}
	if s.Passthrough == nil {
		t.Fatalf("stats JSON has no \"passthrough\": %s", buf[:n])
	}
	return s
}

// spoolTier is getxattr(path, "user.tempfs.spool"): "memory" or "disk".
func spoolTier(t testing.TB, path string) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Getxattr(path, "user.tempfs.spool", buf)
	if err != nil {
		t.Fatalf("getxattr(%s, user.tempfs.spool): %v", path, err)
	}
	return string(buf[:n])
}

func spoolWantTier(t testing.TB, path, want, when string) {
	t.Helper()
	if got := spoolTier(t, path); got != want {
		t.Fatalf("%s: user.tempfs.spool of %s is %q, want %q", when, filepath.Base(path), got, want)
	}
}

// spoolRollover is SpooledTemporaryFile.rollover(): setxattr(path, "user.tempfs.rollover", "").
func spoolRollover(path string) error {
	return unix.Setxattr(path, "user.tempfs.rollover", []byte{}, 0)
}

// spoolData is n deterministic pseudo-random bytes.
func spoolData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// spoolSame fails unless got equals want, naming the first differing offset.
func spoolSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: %d bytes read, want %d; first difference at offset %d", what, len(got), len(want), i)
}

// spoolOpen opens path and closes it at cleanup (os.File makes a second Close harmless).
func spoolOpen(t testing.TB, path string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func spoolWriteAt(t testing.TB, f *os.File, p []byte, off int64) {
	t.Helper()
	if n, err := f.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("pwrite of %d bytes at %d to %s: n=%d err=%v", len(p), off, filepath.Base(f.Name()), n, err)
	}
}

// spoolContent reads the whole file through a fresh open and compares it with want.
func spoolContent(t testing.TB, path string, want []byte, when string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	spoolSame(t, when+": content of "+filepath.Base(path), got, want)
}

// spoolFdContent reads size+1 bytes at 0 through f (to see the end too) and compares with want.
func spoolFdContent(t testing.TB, f *os.File, want []byte, when string) {
	t.Helper()
	buf := make([]byte, len(want)+1)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != len(want) {
		t.Fatalf("%s: pread: n=%d %v", when, n, err)
	}
	spoolSame(t, when+": pread of "+filepath.Base(f.Name()), buf[:n], want)
}

func spoolSize(t testing.TB, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func spoolWantSize(t testing.TB, f *os.File, want int64, when string) {
	t.Helper()
	if got := spoolSize(t, f); got != want {
		t.Fatalf("%s: fstat size of %s is %d, want %d", when, filepath.Base(f.Name()), got, want)
	}
	fi, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != want {
		t.Fatalf("%s: stat size of %s is %d, want %d", when, filepath.Base(f.Name()), fi.Size(), want)
	}
}

// spoolWaitIdle waits until the daemon holds n open handles: RELEASE is asynchronous, and whether a new open
// is served by passthrough depends on the handles still open.
func spoolWaitIdle(t testing.TB, m *mount, n int64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("open handles drain to %d", n), func() bool {
		return spoolGetStats(t, m).OpenHandles == n
	})
}

func spoolQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// spoolAlignedBuf is a page-aligned buffer, as O_DIRECT reads need.
func spoolAlignedBuf(t testing.TB, n int) []byte {
	t.Helper()
	n = (n + 4095) &^ 4095
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// TestSpoolRollover: a file stays in RAM while its size is at most --max-size and is rolled over to disk by the
// first write or truncate past it; setxattr user.tempfs.rollover rolls over on demand; a rolled-over file stays
// on disk; data reads back exactly across every rollover, also through handles that were open and reading
// while it happened.
func TestSpoolRollover(t *testing.T) {
	const maxSize = 64 << 10
	m := startMount(t, "--max-size", "64KiB", "--memory", "4MiB")

	t.Run("WriteAtThreshold", func(t *testing.T) {
		path := m.Path("exact")
		want := spoolData(1, maxSize+1)
		f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		spoolWriteAt(t, f, want[:maxSize], 0)
		spoolWantSize(t, f, maxSize, "after writing exactly --max-size")
		spoolWantTier(t, path, "memory", "after writing exactly --max-size bytes")
		spoolContent(t, path, want[:maxSize], "at --max-size")
		// Overwriting inside the file does not grow it: still RAM.
		spoolWriteAt(t, f, want[100:200], 100)
		spoolWantTier(t, path, "memory", "after an overwrite inside --max-size")
		before := spoolGetStats(t, m).Rollovers
		spoolWriteAt(t, f, want[maxSize:], maxSize)
		spoolWantTier(t, path, "disk", "after one byte past --max-size")
		spoolWantSize(t, f, maxSize+1, "after one byte past --max-size")
		spoolContent(t, path, want, "after the rollover")
		spoolFdContent(t, f, want, "through the writing handle after the rollover")
		if after := spoolGetStats(t, m).Rollovers; after != before+1 {
			t.Errorf("rollovers went from %d to %d over one rollover", before, after)
		}
	})

	t.Run("ManySmallWrites", func(t *testing.T) {
		path := m.Path("small-writes")
		want := spoolData(2, maxSize+4096)
		f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		for off := 0; off < maxSize; off += 4096 {
			spoolWriteAt(t, f, want[off:off+4096], int64(off))
			spoolWantTier(t, path, "memory", fmt.Sprintf("at size %d", off+4096))
		}
		spoolWriteAt(t, f, want[maxSize:], maxSize)
		spoolWantTier(t, path, "disk", "after a write past --max-size")
		spoolContent(t, path, want, "after the rollover")
	})

	t.Run("SparseWritePastEOF", func(t *testing.T) {
		path := m.Path("sparse")
		want := make([]byte, maxSize+1)
		f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		want[maxSize-1] = 'a'
		spoolWriteAt(t, f, want[maxSize-1:maxSize], maxSize-1)
		spoolWantTier(t, path, "memory", "after a sparse write ending at --max-size")
		spoolContent(t, path, want[:maxSize], "sparse file at --max-size")
		want[maxSize] = 'b'
		spoolWriteAt(t, f, want[maxSize:], maxSize)
		spoolWantTier(t, path, "disk", "after a write one byte past --max-size")
		spoolContent(t, path, want, "sparse file after the rollover")
	})

	t.Run("OtherProcess", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "src")
		want := spoolData(3, maxSize+1)
		if err := os.WriteFile(src, want, 0o600); err != nil {
			t.Fatal(err)
		}
		sh(t, m.Dir, "head -c 65536 "+spoolQuote(src)+" > proc")
		spoolWantTier(t, m.Path("proc"), "memory", "after `head -c 65536 > proc`")
		sh(t, m.Dir, "tail -c 1 "+spoolQuote(src)+" >> proc")
		spoolWantTier(t, m.Path("proc"), "disk", "after `tail -c 1 >> proc`")
		spoolContent(t, m.Path("proc"), want, "written by two processes")
	})

	t.Run("Truncate", func(t *testing.T) {
		path := m.Path("trunc")
		want := spoolData(4, 100)
		f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		spoolWriteAt(t, f, want, 0)
		if err := f.Truncate(maxSize); err != nil {
			t.Fatal(err)
		}
		want = append(want, make([]byte, maxSize-len(want))...)
		spoolWantTier(t, path, "memory", "after ftruncate to exactly --max-size")
		spoolContent(t, path, want, "truncated to --max-size")
		if err := f.Truncate(maxSize + 1); err != nil {
			t.Fatal(err)
		}
		want = append(want, 0)
		spoolWantTier(t, path, "disk", "after ftruncate to --max-size+1")
		spoolWantSize(t, f, maxSize+1, "after ftruncate to --max-size+1")
		spoolContent(t, path, want, "after the truncate rollover")
		// Shrinking never brings a file back.
		if err := f.Truncate(50); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path, "disk", "after shrinking a rolled-over file to 50 bytes")
		spoolContent(t, path, want[:50], "after shrinking")
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path, "disk", "after truncating a rolled-over file to 0")
		spoolWriteAt(t, f, []byte("again"), 0)
		spoolWantTier(t, path, "disk", "after writing 5 bytes to a rolled-over file truncated to 0")
		spoolContent(t, path, []byte("again"), "after truncate to 0 and a new write")

		// truncate(1) from another process.
		sh(t, m.Dir, "printf abc > trunc2 && truncate -s 65536 trunc2")
		spoolWantTier(t, m.Path("trunc2"), "memory", "after `truncate -s 65536`")
		sh(t, m.Dir, "truncate -s 65537 trunc2")
		spoolWantTier(t, m.Path("trunc2"), "disk", "after `truncate -s 65537`")
		want2 := append([]byte("abc"), make([]byte, maxSize+1-3)...)
		spoolContent(t, m.Path("trunc2"), want2, "after `truncate -s 65537`")
		// O_TRUNC does not bring it back either.
		sh(t, m.Dir, "printf xy > trunc2")
		spoolWantTier(t, m.Path("trunc2"), "disk", "after O_TRUNC and a 2-byte write")
		spoolContent(t, m.Path("trunc2"), []byte("xy"), "after O_TRUNC")
	})

	t.Run("Explicit", func(t *testing.T) {
		path := m.Path("explicit")
		want := spoolData(5, 1000)
		f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		spoolWriteAt(t, f, want, 0)
		spoolWantTier(t, path, "memory", "a 1000-byte file")
		before := spoolGetStats(t, m).Rollovers
		if err := spoolRollover(path); err != nil {
			t.Fatalf("setxattr user.tempfs.rollover: %v", err)
		}
		spoolWantTier(t, path, "disk", "after setxattr user.tempfs.rollover")
		if after := spoolGetStats(t, m).Rollovers; after != before+1 {
			t.Errorf("rollovers went from %d to %d over one explicit rollover", before, after)
		}
		spoolContent(t, path, want, "after the explicit rollover")
		spoolFdContent(t, f, want, "through the handle open across the rollover")
		if err := spoolRollover(path); err != nil {
			t.Fatalf("a second rollover must be a no-op: %v", err)
		}
		spoolWantTier(t, path, "disk", "after a second rollover")
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path, "disk", "after truncating to 0")
		spoolWriteAt(t, f, want[:10], 0)
		spoolWantTier(t, path, "disk", "after a small write to a rolled-over file")
		spoolContent(t, path, want[:10], "after truncate and rewrite")

		// An empty file, rolled over by another process (Python's os.setxattr).
		sh(t, m.Dir, ": > empty && python3 -c 'import os; os.setxattr(\"empty\", \"user.tempfs.rollover\", b\"\")'")
		spoolWantTier(t, m.Path("empty"), "disk", "an empty file after rollover by python3")
		spoolContent(t, m.Path("empty"), nil, "an empty rolled-over file")
		sh(t, m.Dir, "printf hello >> empty")
		spoolWantTier(t, m.Path("empty"), "disk", "after appending to it")
		spoolContent(t, m.Path("empty"), []byte("hello"), "after appending")
	})

	t.Run("ReadersAcrossRollover", func(t *testing.T) {
		// A writer appends 4 KiB at a time across --max-size while two other handles of the file (one through
		// the page cache, one O_DIRECT so that every read reaches the daemon) read it from the start in a loop.
		// Each byte is written once, so a read must return exactly a prefix of the final content, and at least
		// what had been written before the read began: the rollover is atomic with respect to other handles.
		path := m.Path("readers")
		want := spoolData(6, 4*maxSize)
		w := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		cached := spoolOpen(t, path, os.O_RDONLY)
		direct := spoolOpen(t, path, os.O_RDONLY|syscall.O_DIRECT)
		var committed atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		readers := []*spoolReader{
			{name: "cached", fd: int(cached.Fd()), buf: spoolAlignedBuf(t, len(want)+4096)},
			{name: "O_DIRECT", fd: int(direct.Fd()), buf: spoolAlignedBuf(t, len(want)+4096)},
		}
		var failed atomic.Bool
		for _, r := range readers {
			wg.Go(func() { r.loop(t, &want, &committed, stop, &failed) })
		}
		stopReaders := func() {
			close(stop)
			wg.Wait()
			if failed.Load() {
				t.FailNow()
			}
		}
		// waitReads waits until every reader finished a read that began after now.
		waitReads := func() {
			for _, r := range readers {
				start := r.reads.Load()
				eventually(t, 10*time.Second, r.name+" reader makes progress", func() bool {
					return r.reads.Load() >= start+2 || failed.Load()
				})
			}
		}
		for off := 0; off < len(want) && !failed.Load(); off += 4096 {
			spoolWriteAt(t, w, want[off:off+4096], int64(off))
			committed.Store(int64(off + 4096))
			waitReads()
		}
		stopReaders()
		spoolWantTier(t, path, "disk", "after appending past --max-size")
		spoolFdContent(t, cached, want, "the reader open across the rollover")
		spoolFdContent(t, direct, want, "the O_DIRECT reader open across the rollover")

		// An explicit rollover while the readers read a RAM file.
		path2 := m.Path("readers2")
		want2 := spoolData(7, maxSize-4096)
		if err := os.WriteFile(path2, want2, 0o644); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path2, "memory", "before the explicit rollover")
		cached2 := spoolOpen(t, path2, os.O_RDONLY)
		direct2 := spoolOpen(t, path2, os.O_RDONLY|syscall.O_DIRECT)
		readers[0].fd, readers[1].fd = int(cached2.Fd()), int(direct2.Fd())
		want = want2
		committed.Store(int64(len(want2)))
		stop = make(chan struct{})
		for _, r := range readers {
			wg.Go(func() { r.loop(t, &want, &committed, stop, &failed) })
		}
		waitReads()
		if err := spoolRollover(path2); err != nil {
			t.Fatal(err)
		}
		waitReads()
		stopReaders()
		spoolWantTier(t, path2, "disk", "after the explicit rollover")
		spoolFdContent(t, direct2, want2, "the O_DIRECT reader after the explicit rollover")
	})
}

// spoolReader reads a file from offset 0 in a loop (see ReadersAcrossRollover).
type spoolReader struct {
	name  string
	fd    int
	buf   []byte
	reads atomic.Int64
}

func (r *spoolReader) loop(t *testing.T, want *[]byte, committed *atomic.Int64, stop <-chan struct{}, failed *atomic.Bool) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		before := committed.Load()
		n, err := unix.Pread(r.fd, r.buf, 0)
		switch {
		case err != nil:
			t.Errorf("%s reader: pread: %v", r.name, err)
		case int64(n) < before:
			t.Errorf("%s reader: read %d bytes, but %d had been written before the read began", r.name, n, before)
		case n > len(*want):
			t.Errorf("%s reader: read %d bytes of a file of at most %d", r.name, n, len(*want))
		case !bytes.Equal(r.buf[:n], (*want)[:n]):
			i := 0
			for r.buf[i] == (*want)[i] {
				i++
			}
			t.Errorf("%s reader: %d bytes read differ from what was written at offset %d", r.name, n, i)
		default:
			r.reads.Add(1)
			continue
		}
		failed.Store(true)
		return
	}
}

// TestSpoolMaxSizeZero: --max-size 0 never rolls over by size (Python's max_size=0), but rollover on demand
// still works.
func TestSpoolMaxSizeZero(t *testing.T) {
	m := startMount(t, "--max-size", "0", "--memory", "16MiB")
	path := m.Path("big")
	want := spoolData(10, 4<<20) // 4 times the default --max-size
	f := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	for off := 0; off < len(want); off += 1 << 20 {
		spoolWriteAt(t, f, want[off:off+1<<20], int64(off))
	}
	spoolWantTier(t, path, "memory", "a 4 MiB file with --max-size 0")
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, 4<<20)...)
	spoolWantTier(t, path, "memory", "truncated to 8 MiB with --max-size 0")
	spoolContent(t, path, want, "an 8 MiB RAM file")
	if s := spoolGetStats(t, m); s.Rollovers != 0 {
		t.Errorf("rollovers = %d with --max-size 0 and RAM to spare, want 0", s.Rollovers)
	}
	if err := spoolRollover(path); err != nil {
		t.Fatalf("setxattr user.tempfs.rollover: %v", err)
	}
	spoolWantTier(t, path, "disk", "after an explicit rollover")
	spoolContent(t, path, want, "after the explicit rollover")
}

// TestSpoolMemoryCap: with --memory 1MiB, 40 files each a bit larger than a third of the cap are written by
// separate processes; every write succeeds, RAM-resident data never passes the cap (checked after each file),
// the files that had to go report "disk", and every file reads back exactly (a write never fails for
// lack of RAM while the disk store has room).
func TestSpoolMemoryCap(t *testing.T) {
	const memCap = 1 << 20
	const size = memCap/3 + 4096 + 123
	const nFiles = 40
	m := startMount(t, "--max-size", "0", "--memory", "1MiB")
	srcDir := t.TempDir()
	wants := make([][]byte, nFiles)
	for i := range wants {
		wants[i] = spoolData(uint64(100+i), size)
		if err := os.WriteFile(filepath.Join(srcDir, fmt.Sprint(i)), wants[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	checkCap := func(when string) spoolStats {
		t.Helper()
		s := spoolGetStats(t, m)
		if s.RAMCap != memCap {
			t.Fatalf("ram_cap = %d with --memory 1MiB", s.RAMCap)
		}
		if s.RAMBytes > s.RAMCap || s.PeakRAMBytes > s.RAMCap {
			t.Fatalf("%s: ram_bytes %d (peak %d) passed ram_cap %d", when, s.RAMBytes, s.PeakRAMBytes, s.RAMCap)
		}
		return s
	}
	// checkFiles reads every file back and checks that the RAM-resident ones fit under the cap.
	checkFiles := func(dir string) (memFiles, diskFiles int) {
		t.Helper()
		for i, want := range wants {
			path := filepath.Join(dir, fmt.Sprint(i))
			spoolContent(t, path, want, "at the end")
			switch tier := spoolTier(t, path); tier {
			case "memory":
				memFiles++
			case "disk":
				diskFiles++
			default:
				t.Fatalf("user.tempfs.spool of %s is %q", path, tier)
			}
		}
		s := checkCap("at the end")
		if int64(memFiles)*size > s.RAMBytes {
			t.Errorf("%d files of %d bytes report memory, but ram_bytes is %d", memFiles, size, s.RAMBytes)
		}
		if memFiles*size > memCap {
			t.Errorf("%d files of %d bytes report memory: more than --memory %d", memFiles, size, memCap)
		}
		if s.Rollovers < int64(diskFiles) {
			t.Errorf("rollovers = %d, but %d files report disk", s.Rollovers, diskFiles)
		}
		return memFiles, diskFiles
	}

	t.Run("OneAfterAnother", func(t *testing.T) {
		if err := os.Mkdir(m.Path("seq"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range nFiles {
			sh(t, m.Path("seq"), fmt.Sprintf("cat %s > %d", spoolQuote(filepath.Join(srcDir, fmt.Sprint(i))), i))
			checkCap(fmt.Sprintf("after file %d", i))
		}
		memFiles, diskFiles := checkFiles(m.Path("seq"))
		if diskFiles < nFiles-memCap/size {
			t.Errorf("only %d of %d files report disk", diskFiles, nFiles)
		}
		t.Logf("%d files in RAM, %d on disk", memFiles, diskFiles)
	})

	t.Run("Concurrent", func(t *testing.T) {
		// Four processes write ten files each at the same time: the memory budget's victims are busy files.
		if err := os.Mkdir(m.Path("par"), 0o755); err != nil {
			t.Fatal(err)
		}
		var cmds []*exec.Cmd
		var outs []*bytes.Buffer
		for p := range 4 {
			script := fmt.Sprintf("for i in $(seq %d 4 %d); do cat %s/$i > $i; done", p, nFiles-1, spoolQuote(srcDir))
			cmd := exec.Command("sh", "-ec", script)
			cmd.Dir = m.Path("par")
			out := &bytes.Buffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds, outs = append(cmds, cmd), append(outs, out)
		}
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Errorf("writer %d: %v\n%s", i, err, outs[i])
			}
		}
		checkFiles(m.Path("par"))
	})

	t.Run("FileLargerThanCap", func(t *testing.T) {
		want := spoolData(200, memCap+memCap/2)
		if err := os.WriteFile(m.Path("huge"), want, 0o644); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, m.Path("huge"), "disk", "a file larger than --memory")
		spoolContent(t, m.Path("huge"), want, "a file larger than --memory")
		checkCap("after a file larger than the cap")
	})
}

// TestSpoolDiskCap: with --disk 4MiB, a write past the cap fails with ENOSPC and changes nothing else: the file
// keeps its size and content, other files are intact, a RAM file that would have to roll over stays in RAM;
// after a file is deleted, writing works again.
func TestSpoolDiskCap(t *testing.T) {
	const diskCap = 4 << 20
	const memCap = 1 << 20
	const chunk = 64 << 10 // one FUSE write request, so that a write is refused or done whole
	m := startMount(t, "--max-size", "64KiB", "--memory", "1MiB", "--disk", "4MiB")
	if s := spoolGetStats(t, m); s.DiskCap != diskCap {
		t.Fatalf("disk_cap = %d with --disk 4MiB", s.DiskCap)
	}

	// a takes half of the cap.
	aWant := spoolData(300, diskCap/2)
	a := spoolOpen(t, m.Path("a"), os.O_RDWR|os.O_CREATE|os.O_EXCL)
	for off := 0; off < len(aWant); off += chunk {
		spoolWriteAt(t, a, aWant[off:off+chunk], int64(off))
	}
	spoolWantTier(t, m.Path("a"), "disk", "a 2 MiB file")

	// b grows until the cap refuses: exactly the other half fits.
	bAll := spoolData(301, diskCap)
	b := spoolOpen(t, m.Path("b"), os.O_RDWR|os.O_CREATE|os.O_EXCL)
	var bSize int64
	var lastErr error
	for bSize < int64(len(bAll)) {
		n, err := b.WriteAt(bAll[bSize:bSize+chunk], bSize)
		if err != nil {
			if n != 0 {
				t.Fatalf("a write refused by the disk cap wrote %d bytes", n)
			}
			lastErr = err
			break
		}
		bSize += chunk
	}
	if !errors.Is(lastErr, syscall.ENOSPC) {
		t.Fatalf("writing past --disk: err = %v at size %d, want ENOSPC", lastErr, bSize)
	}
	if bSize != diskCap-int64(len(aWant)) {
		t.Fatalf("b reached %d bytes before ENOSPC; with --disk %d and a of %d bytes, exactly %d fit",
			bSize, diskCap, len(aWant), diskCap-len(aWant))
	}
	bWant := bAll[:bSize]
	checkB := func(when string) {
		t.Helper()
		spoolWantSize(t, b, bSize, when)
		spoolFdContent(t, b, bWant, when)
	}
	checkB("after ENOSPC")
	spoolFdContent(t, a, aWant, "the other file after ENOSPC")
	if s := spoolGetStats(t, m); s.DiskBytes > diskCap {
		t.Errorf("disk_bytes %d passed disk_cap %d", s.DiskBytes, diskCap)
	}

	// A write that does not grow the file needs no space.
	patch := spoolData(302, 1000)
	spoolWriteAt(t, b, patch, 5000)
	copy(bWant[5000:], patch)
	checkB("after an overwrite inside b at the cap")

	// Another process (dd) appending to b fails with ENOSPC and changes nothing.
	out := shFails(t, m.Dir, "dd if=/dev/zero of=b bs=64k count=1 oflag=append conv=notrunc")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("dd past the disk cap: %q, want ENOSPC", out)
	}
	checkB("after dd failed")

	// A RAM file that would have to roll over to grow: ENOSPC, and it stays in RAM, unchanged. Its size is a
	// whole page: a write starting inside a partial page is split by the kernel, and the first part may succeed.
	cWant := spoolData(303, 4096)
	c := spoolOpen(t, m.Path("c"), os.O_RDWR|os.O_CREATE|os.O_EXCL)
	spoolWriteAt(t, c, cWant, 0)
	spoolWantTier(t, m.Path("c"), "memory", "a 4096-byte file")
	if _, err := c.WriteAt(spoolData(304, chunk), int64(len(cWant))); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("growing a RAM file past --max-size with the disk full: err = %v, want ENOSPC", err)
	}
	spoolWantTier(t, m.Path("c"), "memory", "after its rollover was refused")
	spoolWantSize(t, c, int64(len(cWant)), "after its rollover was refused")
	spoolFdContent(t, c, cWant, "after its rollover was refused")
	if err := c.Truncate(chunk + 1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("truncating a RAM file past --max-size with the disk full: err = %v, want ENOSPC", err)
	}
	spoolWantSize(t, c, int64(len(cWant)), "after its truncate was refused")
	if err := spoolRollover(m.Path("c")); err == nil {
		t.Fatal("setxattr user.tempfs.rollover succeeded with the disk full")
	}
	spoolWantTier(t, m.Path("c"), "memory", "after an explicit rollover was refused")
	spoolFdContent(t, c, cWant, "after an explicit rollover was refused")

	// RAM full too: 15 files of 64 KiB and c fit under --memory 1MiB; a 16th cannot get room (its victim would
	// need the disk), so its write fails with ENOSPC and every RAM file stays in RAM, unchanged.
	var rWants [][]byte
	var rFiles []*os.File
	for i := range 15 {
		want := spoolData(uint64(310+i), chunk)
		f := spoolOpen(t, m.Path(fmt.Sprintf("r%d", i)), os.O_RDWR|os.O_CREATE|os.O_EXCL)
		spoolWriteAt(t, f, want, 0)
		rWants, rFiles = append(rWants, want), append(rFiles, f)
	}
	if s := spoolGetStats(t, m); s.RAMBytes != int64(15*chunk+len(cWant)) {
		t.Fatalf("ram_bytes = %d with 15 files of %d bytes and one of %d in RAM", s.RAMBytes, chunk, len(cWant))
	}
	lastWant := spoolData(330, chunk)
	last := spoolOpen(t, m.Path("r15"), os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if _, err := last.WriteAt(lastWant, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a write that needs RAM with RAM and disk full: err = %v, want ENOSPC", err)
	}
	spoolWantSize(t, last, 0, "after its write was refused")
	for i, f := range rFiles {
		spoolWantTier(t, f.Name(), "memory", "after a refused write elsewhere")
		spoolFdContent(t, f, rWants[i], "after a refused write elsewhere")
	}
	if s := spoolGetStats(t, m); s.RAMBytes > memCap || s.DiskBytes > diskCap {
		t.Fatalf("ram_bytes %d / disk_bytes %d passed their caps", s.RAMBytes, s.DiskBytes)
	}
	checkB("after the RAM writes")
	spoolFdContent(t, a, aWant, "the other file after the RAM writes")

	// Deleting a frees its space (once its last handle is released): every refused write now succeeds.
	a.Close()
	if err := os.Remove(m.Path("a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "disk_bytes drops after deleting a", func() bool {
		return spoolGetStats(t, m).DiskBytes <= diskCap-int64(len(aWant))
	})
	spoolWriteAt(t, b, bAll[bSize:bSize+chunk], bSize)
	bSize += chunk
	bWant = bAll[:bSize]
	checkB("after writing past the old cap position")
	spoolWriteAt(t, last, lastWant, 0)
	grow := spoolData(305, chunk)
	spoolWriteAt(t, c, grow, int64(len(cWant)))
	cWant = append(cWant, grow...)
	spoolWantTier(t, m.Path("c"), "disk", "after it grew past --max-size with room on disk")
	spoolFdContent(t, c, cWant, "c after its rollover")
	spoolFdContent(t, last, lastWant, "r15 after room was made")
	for i, f := range rFiles {
		spoolFdContent(t, f, rWants[i], "the RAM files at the end")
	}
	if s := spoolGetStats(t, m); s.RAMBytes > memCap || s.DiskBytes > diskCap {
		t.Fatalf("ram_bytes %d / disk_bytes %d passed their caps", s.RAMBytes, s.DiskBytes)
	}
}

// TestSpoolStore: while files with data are on disk, the store holds no named file with data (the only name is
// the empty lock file; the data is in unlinked files the daemon holds open), statfs reflects the caps, and the
// store directory is gone after unmount.
func TestSpoolStore(t *testing.T) {
	const memCap, diskCap = 1 << 20, 4 << 20
	m := startMount(t, "--max-size", "64KiB", "--memory", "1MiB", "--disk", "4MiB")
	dirs := storeDirs(t, m.StoreParent)
	if len(dirs) != 1 {
		t.Fatalf("store directories under %s: %v, want one", m.StoreParent, dirs)
	}
	store := dirs[0]
	if s := spoolGetStats(t, m); s.Store != store {
		t.Errorf("stats store = %q, want %q", s.Store, store)
	}
	fi, err := os.Stat(store)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("store directory mode %v, want 0700", fi.Mode().Perm())
	}

	// Three disk-resident files with data: one closed, one open, one rolled over explicitly; one RAM file.
	if err := os.WriteFile(m.Path("closed"), spoolData(400, 128<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	open := spoolOpen(t, m.Path("open"), os.O_RDWR|os.O_CREATE|os.O_EXCL)
	spoolWriteAt(t, open, spoolData(401, 200<<10), 0)
	if err := os.WriteFile(m.Path("explicit"), spoolData(402, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spoolRollover(m.Path("explicit")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("ram"), spoolData(403, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"closed", "open", "explicit"} {
		spoolWantTier(t, m.Path(name), "disk", name)
	}

	var named []string
	err = filepath.Walk(store, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path != store {
			named = append(named, strings.TrimPrefix(path, store+"/"))
		}
		if info.Mode().IsRegular() && info.Size() > 0 {
			t.Errorf("the store holds a named file with data: %s (%d bytes)", path, info.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(named) != 1 || named[0] != ".lock" {
		t.Errorf("names in the store: %q, want only the empty .lock", named)
	}
	// The data is in the store nonetheless: the daemon holds unlinked files there.
	if n := deletedStoreFds(t, m, store); n < 3 {
		t.Errorf("the daemon holds %d unlinked files in the store, want at least one per disk-resident file (3)", n)
	}

	// statfs: the RAM cap plus the disk cap, within a block.
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	total := int64(st.Blocks) * st.Bsize
	if d := total - (memCap + diskCap); d <= -st.Bsize || d >= st.Bsize {
		t.Errorf("statfs total %d bytes (%d blocks of %d), want --memory + --disk = %d", total, st.Blocks, st.Bsize, memCap+diskCap)
	}
	if st.Bfree > st.Blocks || st.Bavail > st.Blocks {
		t.Errorf("statfs free %d / avail %d blocks of %d", st.Bfree, st.Bavail, st.Blocks)
	}

	// After unmount, the store directory is gone.
	open.Close()
	m.stop(t)
	if left := storeDirs(t, m.StoreParent); len(left) != 0 {
		t.Errorf("store directories left after unmount: %v", left)
	}

	t.Run("StatfsWithoutDiskCap", func(t *testing.T) {
		m := startMount(t, "--memory", "1MiB")
		var st, storeSt syscall.Statfs_t
		if err := syscall.Statfs(m.Dir, &st); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Statfs(m.StoreParent, &storeSt); err != nil {
			t.Fatal(err)
		}
		// The RAM cap plus what the store's filesystem has free, and nothing used: df must not show the
		// other data on that filesystem as tempfs's. Others write there meanwhile: within 64 MiB.
		total := int64(st.Blocks) * st.Bsize
		if used := int64(st.Blocks-st.Bfree) * st.Bsize; used != 0 {
			t.Errorf("statfs of an empty mount: %d bytes used, want 0", used)
		}
		const slack = 64 << 20
		if storeFree := int64(storeSt.Bavail) * storeSt.Bsize; total < memCap+storeFree-slack || total > memCap+storeFree+slack {
			t.Errorf("statfs total %d bytes, want --memory %d plus the store's free space %d", total, memCap, storeFree)
		}
	})
}

// TestSpoolPassthrough: a disk-resident file opened again is served by passthrough (the kernel reads and writes
// the backing file; the daemon sees none of it), and every view of the file agrees: other handles, a reopen,
// stat's size and mtime, mmap. Handles opened while a daemon-served one is open keep working across rollover.
// Under --disk passthrough is off, and the cap holds for a file opened after its rollover.
func TestSpoolPassthrough(t *testing.T) {
	t.Run("DiskResident", func(t *testing.T) {
		m := startMount(t, "--max-size", "64KiB", "--memory", "1MiB")
		if s := spoolGetStats(t, m); !*s.Passthrough {
			t.Fatal("stats say passthrough is off on a mount without --disk")
		}
		path := m.Path("pt")
		want := spoolData(500, 128<<10)
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path, "disk", "a 128 KiB file")
		spoolWaitIdle(t, m, 0)
		written := spoolGetStats(t, m).BytesWritten

		f1 := spoolOpen(t, path, os.O_RDWR)
		f2 := spoolOpen(t, path, os.O_RDONLY)
		patch := spoolData(501, 5000)
		spoolWriteAt(t, f1, patch, 10000)
		copy(want[10000:], patch)
		ext := spoolData(502, 3000)
		spoolWriteAt(t, f1, ext, 200000) // past the end, leaving a hole
		want = append(want, make([]byte, 200000-len(want))...)
		want = append(want, ext...)
		spoolWantSize(t, f1, int64(len(want)), "after passthrough writes")
		spoolFdContent(t, f1, want, "the writing passthrough handle")
		spoolFdContent(t, f2, want, "another handle open during the writes")
		f3 := spoolOpen(t, path, os.O_RDONLY)
		spoolFdContent(t, f3, want, "a handle opened after the writes")
		spoolContent(t, path, want, "read by a fresh open while the handles are open")

		s := spoolGetStats(t, m)
		if !*s.Passthrough {
			t.Fatalf("stats say passthrough is off after I/O on a disk-resident file; log:\n%s", m.Log())
		}
		if s.BytesWritten != written {
			t.Errorf("bytes_written went from %d to %d: the daemon served writes that passthrough should have", written, s.BytesWritten)
		}

		// mtime: utimes sticks, and a passthrough write moves it.
		old := time.Date(2000, 1, 2, 3, 4, 5, 0, time.UTC)
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(old) {
			t.Errorf("mtime after utimes(2000-01-02) of a passthrough-written file: %v (err %v), want %v", fi.ModTime(), err, old)
		}
		start := time.Now()
		spoolWriteAt(t, f1, []byte("mtime"), 0)
		copy(want, "mtime")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if mt := fi.ModTime(); !mt.After(old) || mt.Before(start.Add(-time.Second)) {
			t.Errorf("mtime after a passthrough write at %v: %v", start, mt)
		}
		ext2 := []byte("grown")
		spoolWriteAt(t, f1, ext2, int64(len(want)))
		want = append(want, ext2...)
		if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(want)) {
			t.Fatalf("stat size after a passthrough append: %d (err %v), want %d", fi.Size(), err, len(want))
		}

		// mmap of a passthrough handle.
		mm, err := unix.Mmap(int(f1.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap of a passthrough handle: %v", err)
		}
		spoolSame(t, "mmap of a passthrough handle", mm, want)
		copy(mm[70000:], "through mmap")
		copy(want[70000:], "through mmap")
		if err := unix.Msync(mm, unix.MS_SYNC); err != nil {
			t.Fatal(err)
		}
		if err := unix.Munmap(mm); err != nil {
			t.Fatal(err)
		}
		spoolFdContent(t, f2, want, "after a write through mmap")

		// A reopen after every handle is gone.
		f1.Close()
		f2.Close()
		f3.Close()
		spoolWaitIdle(t, m, 0)
		spoolContent(t, path, want, "after every handle was closed")
		sh(t, m.Dir, "printf tail >> pt")
		want = append(want, "tail"...)
		spoolContent(t, path, want, "after an append by another process")
		if s := spoolGetStats(t, m); !*s.Passthrough {
			t.Fatalf("stats say passthrough is off at the end; log:\n%s", m.Log())
		}
	})

	t.Run("HandlesAcrossRollover", func(t *testing.T) {
		// A daemon-served handle (opened while the file was in RAM) stays open across the rollover; handles
		// opened meanwhile must work with it (the kernel refuses to mix passthrough and cached handles).
		m := startMount(t, "--max-size", "64KiB", "--memory", "1MiB")
		path := m.Path("mixed")
		want := spoolData(510, 100<<10)
		a := spoolOpen(t, path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		spoolWriteAt(t, a, want[:1000], 0)
		spoolWantTier(t, path, "memory", "a 1000-byte file")
		spoolWriteAt(t, a, want[1000:], 1000)
		spoolWantTier(t, path, "disk", "after growing past --max-size")
		b, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("opening a rolled-over file while a handle from its RAM days is open: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		patch := spoolData(511, 3000)
		spoolWriteAt(t, b, patch, 50000)
		copy(want[50000:], patch)
		spoolFdContent(t, a, want, "the old handle after a write through the new one")
		spoolWriteAt(t, a, patch[:10], 0)
		copy(want, patch[:10])
		spoolFdContent(t, b, want, "the new handle after a write through the old one")
		a.Close()
		c, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			t.Fatalf("opening while only a handle opened after the rollover is open: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		spoolFdContent(t, c, want, "a third handle")
		b.Close()
		c.Close()
		spoolWaitIdle(t, m, 0)
		d := spoolOpen(t, path, os.O_RDWR)
		spoolWriteAt(t, d, []byte("d"), 1)
		want[1] = 'd'
		spoolFdContent(t, d, want, "a handle opened after all were closed")
		if s := spoolGetStats(t, m); !*s.Passthrough {
			t.Fatalf("stats say passthrough is off; log:\n%s", m.Log())
		}
	})

	t.Run("OffUnderDiskCap", func(t *testing.T) {
		const diskCap = 1 << 20
		const chunk = 64 << 10
		m := startMount(t, "--max-size", "64KiB", "--memory", "1MiB", "--disk", "1MiB")
		if s := spoolGetStats(t, m); *s.Passthrough {
			t.Fatal("stats say passthrough is on under --disk")
		}
		path := m.Path("capped")
		all := spoolData(520, diskCap+chunk)
		if err := os.WriteFile(path, all[:2*chunk], 0o644); err != nil {
			t.Fatal(err)
		}
		spoolWantTier(t, path, "disk", "a 128 KiB file")
		spoolWaitIdle(t, m, 0)
		written := spoolGetStats(t, m).BytesWritten
		f := spoolOpen(t, path, os.O_RDWR)
		size := int64(2 * chunk)
		var lastErr error
		for size < int64(len(all)) {
			if _, err := f.WriteAt(all[size:size+chunk], size); err != nil {
				lastErr = err
				break
			}
			size += chunk
		}
		if !errors.Is(lastErr, syscall.ENOSPC) || size != diskCap {
			t.Fatalf("a file reopened after rollover grew to %d bytes (err %v); want exactly --disk %d, then ENOSPC", size, lastErr, diskCap)
		}
		spoolWantSize(t, f, diskCap, "after ENOSPC")
		spoolFdContent(t, f, all[:diskCap], "after ENOSPC")
		s := spoolGetStats(t, m)
		if s.DiskBytes > diskCap {
			t.Errorf("disk_bytes %d passed disk_cap %d", s.DiskBytes, diskCap)
		}
		if *s.Passthrough {
			t.Error("stats say passthrough is on under --disk")
		}
		if s.BytesWritten-written != diskCap-2*chunk {
			t.Errorf("the daemon saw %d bytes of writes through the reopened handle, want %d (no passthrough under --disk)",
				s.BytesWritten-written, diskCap-2*chunk)
		}
	})
}

// TestSpoolPassthroughKillsSetuid: a write by an unprivileged user clears the set-user-ID and set-group-ID bits
// of the file it writes, as on tmpfs, also when the file is disk-resident and the write is served by
// passthrough (the daemon does not see those writes; the kernel's rules apply, as on tmpfs).
func TestSpoolPassthroughKillsSetuid(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to write as another user; CI=true forbids skipping")
		}
		t.Skip("needs root to write as another user")
	}
	m := startMount(t, "--max-size", "64KiB", "-o", "allow_other")
	ref := mountTmpfs(t, syscall.MS_NODEV) // without nosuid: set-user-ID bits are what the test watches
	for _, dir := range []string{m.Dir, ref} {
		for p := filepath.Dir(dir); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o711); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, 0o1777); err != nil {
			t.Fatal(err)
		}
	}
	// modeAfterWrite makes a file of size bytes with mode, lets uid 65534 append to it, and returns its mode.
	modeAfterWrite := func(dir, name string, size int, mode os.FileMode) os.FileMode {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if dir == m.Dir {
			spoolWaitIdle(t, m, 0) // the other user's open is then the only one: passthrough for a disk file
		}
		cmd := exec.Command("sh", "-c", "printf x >> "+spoolQuote(path))
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("append as uid 65534 to %s: %v\n%s", path, err, out)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != int64(size+1) {
			t.Fatalf("%s: size %d after the append, want %d", path, fi.Size(), size+1)
		}
		return fi.Mode()
	}
	for _, c := range []struct {
		name string
		size int
		mode os.FileMode
	}{
		{"ram-setuid", 100, os.ModeSetuid | 0o777},
		{"disk-setuid", 200 << 10, os.ModeSetuid | 0o777},
		{"disk-setgid", 200 << 10, os.ModeSetgid | 0o777},
	} {
		want := modeAfterWrite(ref, c.name, c.size, c.mode)
		got := modeAfterWrite(m.Dir, c.name, c.size, c.mode)
		if c.size > 64<<10 {
			spoolWantTier(t, m.Path(c.name), "disk", c.name)
		}
		if got != want {
			t.Errorf("%s (%v, %d bytes): mode after an unprivileged write is %v, tmpfs gives %v", c.name, c.mode, c.size, got, want)
		}
	}
	if s := spoolGetStats(t, m); !*s.Passthrough {
		t.Errorf("stats say passthrough is off; log:\n%s", m.Log())
	}
}

// TestWrittenDataKeptOnce: bytes written to a RAM-resident file are held once, in the spool. Handles opened for
// writing bypass the FUSE page cache, so the kernel keeps no second copy of the data as it is written; it
// caches what is read.
func TestWrittenDataKeptOnce(t *testing.T) {
	m := startMount(t, "--max-size", "4MiB")
	if !spoolGetStats(t, m).DirectWrites {
		// Kernels before 6.6 lack FUSE_DIRECT_IO_ALLOW_MMAP; tempfs then caches every handle, as before.
		if os.Getenv("CI") == "true" {
			t.Fatal("direct writes are off: the CI kernel (6.18) grants FUSE_DIRECT_IO_ALLOW_MMAP")
		}
		t.Skip("the kernel does not grant FUSE_DIRECT_IO_ALLOW_MMAP, so tempfs writes through the page cache")
	}
	path := m.Path("once")
	data := bytes.Repeat([]byte("kept once; "), (1<<20)/11)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if tier := spoolTier(t, path); tier != "memory" {
		t.Fatalf("a %d-byte file under --max-size 4MiB is on %s", len(data), tier)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unix.Munmap(mem) }()
	cached := func() (n, of int) {
		vec := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)),
			uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatal("mincore:", errno)
		}
		for _, v := range vec {
			n += int(v & 1)
		}
		return n, len(vec)
	}
	if n, of := cached(); n != 0 {
		t.Errorf("%d of %d pages of a file just written are in the FUSE page cache: its data is held twice", n, of)
	}
	if !bytes.Equal(mem, data) {
		t.Fatal("the mapping does not read back what was written")
	}
	if n, of := cached(); n != of {
		t.Errorf("after reading the whole file, %d of %d pages are cached; reads should be", n, of)
	}

	// A read-write open of an existing file (a database, say) reads through the page cache: its small,
	// repeated reads must not cost a round trip each.
	again := m.Path("rw")
	if err := os.WriteFile(again, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rw, err := os.OpenFile(again, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	got, err := io.ReadAll(rw)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading back through O_RDWR: %d bytes, %v", len(got), err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	if mem, err = unix.Mmap(int(rw.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	if n, of := cached(); n != of {
		t.Errorf("after reading a file through an O_RDWR handle, %d of %d pages are cached; want all", n, of)
	}
}

// TestReadAhead: a root mount asks the kernel for read-ahead of the FUSE request size (1 MiB) instead of the
// 128 KiB it offers, so a cached read costs one round trip per MiB.
func TestReadAhead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting a mount's read-ahead needs root")
	}
	m := startMount(t)
	var st unix.Stat_t
	if err := unix.Stat(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "1024" {
		t.Errorf("%s = %s, want 1024", path, strings.TrimSpace(string(got)))
	}
}

// TestDirectAndCachedHandlesAgree: a file's creating handle and write-only handles bypass the page cache, while
// read-write opens of the file, read-only opens and mmaps go through it. Every write must be seen at once by
// every other way in, as on tmpfs, without msync.
func TestDirectAndCachedHandlesAgree(t *testing.T) {
	m := startMount(t)
	path := m.Path("agree")
	const size = 64 << 10
	created, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600) // direct I/O
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(created)
	if _, err := unix.Pwrite(created, bytes.Repeat([]byte("A"), size), 0); err != nil {
		t.Fatal(err)
	}
	cached, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0) // an existing file opened read-write: cached
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cached)
	mem, err := unix.Mmap(cached, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	writeOnly, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0) // direct I/O
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(writeOnly)

	pread := func(fd int, off int64) string {
		buf := make([]byte, 4)
		if _, err := unix.Pread(fd, buf, off); err != nil {
			t.Fatal(err)
		}
		return string(buf)
	}
	pwrite := func(fd int, s string, off int64) {
		if _, err := unix.Pwrite(fd, []byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}

	check("the mapping, after the creating handle's write", string(mem[:4]), "AAAA")
	pwrite(created, "BBBB", 4096)
	check("the mapping, after a direct write", string(mem[4096:4100]), "BBBB")
	copy(mem[8192:], "CCCC")
	check("a direct read, after a write through the mapping", pread(created, 8192), "CCCC")
	check("a cached read, after a write through the mapping", pread(cached, 8192), "CCCC")
	pwrite(created, "DDDD", 8192)
	check("the mapping, after a direct write over its dirty page", string(mem[8192:8196]), "DDDD")
	pwrite(writeOnly, "EEEE", 12288)
	check("the mapping, after a write-only handle's write", string(mem[12288:12292]), "EEEE")
	check("a cached read, after a write-only handle's write", pread(cached, 12288), "EEEE")
	pwrite(cached, "FFFF", 16384)
	check("a direct read, after a cached write", pread(created, 16384), "FFFF")
	reader, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(reader)
	for off, want := range map[int64]string{0: "AAAA", 4096: "BBBB", 8192: "DDDD", 12288: "EEEE", 16384: "FFFF"} {
		check(fmt.Sprintf("a new reader at %d", off), pread(reader, off), want)
	}
}
