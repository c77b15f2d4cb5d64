package integration

// The spool's read rule (docs/guarantees.md, The spool): whatever serves the reads of a file (the kernel's page cache, passthrough, the daemon
// itself), every reader sees every write at once, across rollover and eviction under --memory. A separate process writes generations of a file; this process reads it through every
// kind of handle meanwhile and after, and no read may return bytes older than the last generation whose write
// had returned.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// genWriter writes generations of a file, from a process of its own. Generation g fills the first size(g)
// bytes: each 16-byte unit holds g and the index of its 4 KiB block, little-endian. After each generation's
// writes have returned it prints "g size" and flushes; after generation pause (0: none) it waits for a line on
// its standard input. mode says how it opens the file for each generation: "w" O_WRONLY (a direct-I/O handle),
// "rw" O_RDWR (a cached one), alternating when "mix".
const genWriter = `
import os, struct, sys
path, mode, first, last, size0, step, pause = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
for g in range(first, last + 1):
    size = size0 + (g - first) * step
    m = mode if mode != "mix" else ("w" if g % 2 else "rw")
    fd = os.open(path, (os.O_WRONLY if m == "w" else os.O_RDWR) | os.O_CREAT, 0o644)
    for off in range(0, size, 65536):
        n = min(65536, size - off)
        os.pwrite(fd, b"".join(struct.pack("<QQ", g, (off + i) // 4096) for i in range(0, n, 16)), off)
    os.close(fd)
    print(g, size, flush=True)
    if g == pause:
        sys.stdin.readline()
`

// checkGenerations fails unless data (the file's first bytes) holds generations from min to max, with each
// unit in its own block.
func checkGenerations(t *testing.T, what string, data []byte, min, max uint64) {
	t.Helper()
	for off := 0; off+16 <= len(data); off += 16 {
		g, blk := binary.LittleEndian.Uint64(data[off:]), binary.LittleEndian.Uint64(data[off+8:])
		if g < min || g > max || blk != uint64(off/4096) {
			t.Fatalf("%s: at offset %d: generation %d of block %d; want generation %d..%d of block %d (a stale read)",
				what, off, g, blk, min, max, off/4096)
		}
	}
}

// pageCacheReaders are the kinds of handle read from: fresh opens (passthrough on a disk file with no other
// handle open), a held read-only handle, a shared mapping of it, an O_DIRECT handle, and optionally a held
// read-write handle (cached, like the held read-only one).
type pageCacheReaders struct {
	path   string
	held   *os.File
	rw     *os.File
	direct *os.File
	mapped []byte
	buf    []byte // page-aligned, for O_DIRECT
}

func openPageCacheReaders(t *testing.T, path string, maxSize int, withRW bool) *pageCacheReaders {
	t.Helper()
	r := &pageCacheReaders{path: path, held: spoolOpen(t, path, os.O_RDONLY)}
	if withRW {
		r.rw = spoolOpen(t, path, os.O_RDWR)
	}
	r.direct = spoolOpen(t, path, os.O_RDONLY|syscall.O_DIRECT)
	var err error
	// Longer than the file for now: only the part inside its size is ever touched.
	if r.mapped, err = unix.Mmap(int(r.held.Fd()), 0, maxSize, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	if r.buf, err = unix.Mmap(-1, 0, maxSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(r.mapped); unix.Munmap(r.buf) })
	return r
}

// check reads the first size bytes through every handle and checks the generations in them.
func (r *pageCacheReaders) check(t *testing.T, when string, size int, min, max uint64) {
	t.Helper()
	read := func(kind string, f *os.File, dst []byte) {
		t.Helper()
		n, err := f.ReadAt(dst, 0)
		if n < len(dst) {
			t.Fatalf("%s: %s read %d bytes of %d: %v", when, kind, n, len(dst), err)
		}
		checkGenerations(t, when+": "+kind, dst, min, max)
	}
	fresh, err := os.Open(r.path)
	if err != nil {
		t.Fatal(err)
	}
	read("a fresh read-only open", fresh, make([]byte, size))
	fresh.Close()
	read("a held read-only handle", r.held, make([]byte, size))
	if r.rw != nil {
		read("a held read-write handle", r.rw, make([]byte, size))
	}
	read("an O_DIRECT handle", r.direct, r.buf[:size])
	checkGenerations(t, when+": a shared mapping", r.mapped[:size], min, max)
}

// runGenWriter starts the writer and returns a function that waits for its next "g size" line (ok false at
// its end), one that lets it go on after generation pause, and one that waits for its exit.
func runGenWriter(t *testing.T, path, mode string, first, last, size0, step, pause int) (next func() (g uint64, size int, ok bool), resume, wait func()) {
	t.Helper()
	cmd := exec.Command("python3", "-c", genWriter, path, mode,
		strconv.Itoa(first), strconv.Itoa(last), strconv.Itoa(size0), strconv.Itoa(step), strconv.Itoa(pause))
	cmd.Stderr = os.Stderr
	in, out := startTalking(t, cmd)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	next = func() (uint64, int, bool) {
		if !lines.Scan() {
			return 0, 0, false
		}
		var g uint64
		var size int
		if _, err := fmt.Sscan(lines.Text(), &g, &size); err != nil {
			t.Fatalf("writer said %q: %v", lines.Text(), err)
		}
		return g, size, true
	}
	resume = func() {
		if _, err := in.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	wait = func() {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	return next, resume, wait
}

// TestPageCacheCoherence: reads through every kind of handle while another process writes, before, during and
// after a rollover (by --max-size) and an eviction (by --memory), see no bytes older than the last write that
// returned, and once the writer is done, exactly its last generation.
func TestPageCacheCoherence(t *testing.T) {
	requireFUSE(t)
	const maxSize = 1 << 20
	cases := []struct {
		name  string
		args  []string
		mode  string
		rw    bool // a read-write handle held open meanwhile
		evict bool // fillers push the file out of RAM mid-way
		// The file grows from size0 by step per generation over gens generations.
		size0, step, gens int
		wantTier          string
	}{
		{"rollover by --max-size, direct writes", []string{"--max-size", "256KiB"}, "w", false, false, 64 << 10, 16 << 10, 30, "disk"},
		{"rollover by --max-size, mixed handles", []string{"--max-size", "256KiB"}, "mix", false, false, 64 << 10, 16 << 10, 30, "disk"},
		{"eviction by --memory, direct writes", []string{"--max-size", "0", "--memory", "1MiB"}, "w", false, true, 64 << 10, 16 << 10, 30, "disk"},
		{"eviction by --memory, a read-write handle held", []string{"--max-size", "0", "--memory", "1MiB"}, "mix", true, true, 64 << 10, 16 << 10, 30, "disk"},
		{"stays in RAM", []string{"--max-size", "1MiB"}, "w", false, false, 64 << 10, 8 << 10, 30, "memory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startMount(t, tc.args...)
			path := m.Path("f")
			// Generation 1 exists before the readers open.
			next, _, wait := runGenWriter(t, path, "w", 1, 1, tc.size0, 0, 0)
			if _, _, ok := next(); !ok {
				t.Fatal("the first writer printed nothing")
			}
			wait()
			r := openPageCacheReaders(t, path, maxSize, tc.rw)
			r.check(t, "generation 1, before the writer", tc.size0, 1, 1)

			last := uint64(1 + tc.gens)
			pause := 0
			if tc.evict {
				pause = 2 + tc.gens/2
			}
			next, resume, wait := runGenWriter(t, path, tc.mode, 2, int(last), tc.size0, tc.step, pause)
			size := tc.size0
			for {
				g, sz, ok := next()
				if !ok {
					break
				}
				size = sz
				if g == uint64(pause) {
					// The writer waits. Files of 250 KiB, each smaller than the target: the write that passes
					// the cap of 1 MiB rolls the largest other RAM file over, the target.
					r.check(t, fmt.Sprintf("generation %d, before the eviction", g), sz, g, g)
					for i := 0; spoolTier(t, path) == "memory"; i++ {
						if i == 4 {
							t.Fatalf("the target (%d bytes) is still in RAM after %d files of 250 KiB under --memory 1MiB", sz, i)
						}
						sh(t, m.Dir, fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x > filler%d", 250<<10, i))
					}
					r.check(t, fmt.Sprintf("generation %d, evicted", g), sz, g, g)
					resume()
				}
				// The writer goes on with later generations meanwhile: anything from g up may be read.
				r.check(t, fmt.Sprintf("during the writes, after generation %d returned", g), sz, g, last)
			}
			wait()
			r.check(t, "after the writer", size, last, last)
			if got := spoolTier(t, path); got != tc.wantTier {
				t.Fatalf("the file ends in %q, want %q (the case did not do what it is named for)", got, tc.wantTier)
			}
		})
	}
}
