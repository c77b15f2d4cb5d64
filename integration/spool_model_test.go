package integration

// A randomized model test of the spool (docs/guarantees.md, The spool) through a real mount: "data written is read back exactly,
// across rollover, concurrent handles, truncate, sparse writes, mmap, and writes at offsets past the end".
// A seeded random sequence of operations on 3 files with 2 handles each runs against the mount and against a
// []byte per file; after every step the file's size (fstat on both handles) and its tier must agree with the
// model, and every few steps (and at the end) the whole content. --max-size 16KiB makes files roll over in the
// middle of the sequence; files are recreated now and then so that rollovers keep happening.
//
// Replay a failure with the logged seed: TEMPFS_SPOOL_MODEL_SEED=N go test -race -run TestSpoolModel ./integration/
// (TEMPFS_SPOOL_MODEL_STEPS=N changes the number of steps).

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	spoolModelSeedEnv  = "TEMPFS_SPOOL_MODEL_SEED"
	spoolModelStepsEnv = "TEMPFS_SPOOL_MODEL_STEPS"
	// spoolModelMaxSize and spoolModelMemory are the mount's --max-size and --memory. Three files of at most
	// --max-size in RAM take 48 KiB, under --memory: the memory budget never moves a file, so a file is on disk
	// exactly when it once grew past --max-size or was rolled over explicitly, and the model knows which.
	spoolModelMaxSize = 16 << 10
	spoolModelMemory  = 64 << 10
	// spoolModelSpan bounds offsets and sizes: about 3 times --max-size.
	spoolModelSpan = 48 << 10
	// spoolModelCheckEvery is how often the whole content of every file is compared.
	spoolModelCheckEvery = 20
)

type spoolModelFile struct {
	name   string
	fds    [2]*os.File
	data   []byte
	onDisk bool // grew past --max-size or was rolled over: must say "disk" from now on
}

type spoolModel struct {
	t       *testing.T
	m       *mount
	rng     *rand.Rand
	files   [3]*spoolModelFile
	step    int
	history []string // the last operations, for the failure message
	seed    uint64
}

func TestSpoolModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(spoolModelSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", spoolModelSeedEnv, s, err)
		}
		seed = v
	}
	steps := 3000
	if s := os.Getenv(spoolModelStepsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", spoolModelStepsEnv, s, err)
		}
		steps = v
	}
	t.Logf("seed %d; replay with %s=%d go test -race -run 'TestSpoolModel$' ./integration/", seed, spoolModelSeedEnv, seed)

	m := startMount(t, "--max-size", "16KiB", "--memory", "64KiB")
	md := &spoolModel{t: t, m: m, rng: rand.New(rand.NewPCG(seed, 0x6d6f64656c)), seed: seed}
	for i := range md.files {
		f := &spoolModelFile{name: m.Path(fmt.Sprintf("f%d", i))}
		md.files[i] = f
		md.create(f)
	}
	counts := map[string]int{}
	for md.step = 1; md.step <= steps; md.step++ {
		i := md.rng.IntN(len(md.files))
		f := md.files[i]
		op := md.do(f, md.rng.IntN(len(f.fds)))
		counts[op]++
		md.checkSizeAndTier(f)
		if md.step%spoolModelCheckEvery == 0 {
			md.checkAll()
		}
	}
	md.checkAll()
	s := spoolGetStats(t, m)
	if !*s.Passthrough {
		t.Errorf("stats say passthrough went off during the sequence; log:\n%s", m.Log())
	}
	if s.Rollovers == 0 {
		t.Errorf("no rollover happened in %d steps", steps)
	}
	t.Logf("%d steps, %d rollovers: %v", steps, s.Rollovers, counts)
}

func (md *spoolModel) fail(format string, args ...any) {
	md.t.Helper()
	md.t.Fatalf("seed %d, step %d: %s\nlast operations:\n  %s", md.seed, md.step, fmt.Sprintf(format, args...),
		strings.Join(md.history, "\n  "))
}

func (md *spoolModel) logOp(format string, args ...any) {
	md.history = append(md.history, fmt.Sprintf("%d: ", md.step)+fmt.Sprintf(format, args...))
	if len(md.history) > 40 {
		md.history = md.history[1:]
	}
}

// create makes the file anew (it starts in RAM) and opens both handles.
func (md *spoolModel) create(f *spoolModelFile) {
	md.t.Helper()
	nf, err := os.OpenFile(f.name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		md.fail("create %s: %v", f.name, err)
	}
	f.fds[0] = nf
	f.fds[1] = md.open(f, os.O_RDWR)
	f.data = nil
	f.onDisk = false
	md.t.Cleanup(func() { f.fds[0].Close(); f.fds[1].Close() })
}

func (md *spoolModel) open(f *spoolModelFile, flag int) *os.File {
	md.t.Helper()
	nf, err := os.OpenFile(f.name, flag, 0)
	if err != nil {
		md.fail("open %s: %v", f.name, err)
	}
	return nf
}

// offset draws an offset in [0, span), favouring the end of the file and --max-size.
func (md *spoolModel) offset(f *spoolModelFile) int {
	switch md.rng.IntN(4) {
	case 0:
		return len(f.data)
	case 1:
		return max(0, spoolModelMaxSize-md.rng.IntN(64))
	default:
		return md.rng.IntN(spoolModelSpan)
	}
}

func (md *spoolModel) grow(f *spoolModelFile, size int) {
	if size > len(f.data) {
		f.data = append(f.data, make([]byte, size-len(f.data))...)
	}
	if size > spoolModelMaxSize {
		f.onDisk = true
	}
}

// do runs one random operation on f through handle j and applies it to the model; it returns the op's name.
func (md *spoolModel) do(f *spoolModelFile, j int) string {
	md.t.Helper()
	fd := f.fds[j]
	base := f.name[strings.LastIndexByte(f.name, '/')+1:]
	switch r := md.rng.IntN(100); {
	case r < 30: // pwrite, possibly past the end
		off := md.offset(f)
		n := 1 + md.rng.IntN(8<<10)
		if md.rng.IntN(4) == 0 { // end exactly at --max-size or one past it
			n = max(1, spoolModelMaxSize+md.rng.IntN(2)-off)
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(md.rng.Uint32())
		}
		md.logOp("%s fd%d pwrite %d bytes at %d (size %d)", base, j, n, off, len(f.data))
		if w, err := fd.WriteAt(p, int64(off)); err != nil || w != n {
			md.fail("pwrite %d bytes at %d: n=%d err=%v", n, off, w, err)
		}
		md.grow(f, off+n)
		copy(f.data[off:], p)
		return "pwrite"
	case r < 38: // sparse write well past the end
		off := len(f.data) + 1 + md.rng.IntN(12<<10)
		n := 1 + md.rng.IntN(4<<10)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(md.rng.Uint32())
		}
		md.logOp("%s fd%d sparse pwrite %d bytes at %d (size %d)", base, j, n, off, len(f.data))
		if w, err := fd.WriteAt(p, int64(off)); err != nil || w != n {
			md.fail("sparse pwrite %d bytes at %d: n=%d err=%v", n, off, w, err)
		}
		md.grow(f, off+n)
		copy(f.data[off:], p)
		return "sparse"
	case r < 53: // pread of a random range, possibly past the end
		off := md.rng.IntN(len(f.data) + 4096)
		n := 1 + md.rng.IntN(16<<10)
		md.logOp("%s fd%d pread %d bytes at %d (size %d)", base, j, n, off, len(f.data))
		buf := make([]byte, n)
		got, err := unix.Pread(int(fd.Fd()), buf, int64(off))
		if err != nil {
			md.fail("pread %d at %d: %v", n, off, err)
		}
		want := f.data[min(off, len(f.data)):min(off+n, len(f.data))]
		if got != len(want) || string(buf[:got]) != string(want) {
			md.fail("pread %d at %d of %s: got %d bytes, want %d; first difference at %d",
				n, off, base, got, len(want), off+spoolFirstDiff(buf[:got], want))
		}
		return "pread"
	case r < 62: // ftruncate, to boundary sizes now and then
		size := md.rng.IntN(spoolModelSpan)
		switch md.rng.IntN(5) {
		case 0:
			size = spoolModelMaxSize + md.rng.IntN(2)
		case 1:
			size = 0
		}
		md.logOp("%s fd%d ftruncate %d (size %d)", base, j, size, len(f.data))
		if err := fd.Truncate(int64(size)); err != nil {
			md.fail("ftruncate %d: %v", size, err)
		}
		if size < len(f.data) {
			f.data = f.data[:size]
		}
		md.grow(f, size)
		return "ftruncate"
	case r < 71: // fallocate: mode 0 (may extend), KEEP_SIZE, or PUNCH_HOLE|KEEP_SIZE
		off := md.rng.IntN(len(f.data) + 8<<10)
		n := 1 + md.rng.IntN(8<<10)
		modes := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}
		mode := modes[md.rng.IntN(len(modes))]
		md.logOp("%s fd%d fallocate mode %#x off %d len %d (size %d)", base, j, mode, off, n, len(f.data))
		if err := unix.Fallocate(int(fd.Fd()), mode, int64(off), int64(n)); err != nil {
			md.fail("fallocate mode %#x off %d len %d: %v", mode, off, n, err)
		}
		switch mode {
		case 0:
			md.grow(f, off+n)
		case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE:
			clear(f.data[min(off, len(f.data)):min(off+n, len(f.data))])
		}
		return "fallocate"
	case r < 79: // reopen this handle, sometimes with O_TRUNC
		flag := os.O_RDWR
		if md.rng.IntN(5) == 0 {
			flag |= os.O_TRUNC
		}
		md.logOp("%s fd%d reopen flags %#x (size %d)", base, j, flag, len(f.data))
		if err := fd.Close(); err != nil {
			md.fail("close: %v", err)
		}
		f.fds[j] = md.open(f, flag)
		if flag&os.O_TRUNC != 0 {
			f.data = f.data[:0]
		}
		return "reopen"
	case r < 83: // reopen both handles once the daemon released them (a disk file then gets passthrough)
		md.logOp("%s reopen both (size %d)", base, len(f.data))
		for k := range f.fds {
			if err := f.fds[k].Close(); err != nil {
				md.fail("close: %v", err)
			}
		}
		others := int64(2 * (len(md.files) - 1))
		eventually(md.t, 10*time.Second, "handles released", func() bool { return spoolGetStats(md.t, md.m).OpenHandles == others })
		for k := range f.fds {
			f.fds[k] = md.open(f, os.O_RDWR)
		}
		return "reopen-both"
	case r < 92: // write through a shared mapping, msync, unmap
		if len(f.data) == 0 {
			return "mmap-empty"
		}
		off := md.rng.IntN(len(f.data))
		n := 1 + md.rng.IntN(min(len(f.data)-off, 8<<10))
		md.logOp("%s fd%d mmap write %d bytes at %d (size %d)", base, j, n, off, len(f.data))
		mm, err := unix.Mmap(int(fd.Fd()), 0, len(f.data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			md.fail("mmap %d bytes: %v", len(f.data), err)
		}
		if string(mm) != string(f.data) {
			unix.Munmap(mm)
			md.fail("the mapping of %s differs from the model at %d", base, spoolFirstDiff(mm, f.data))
		}
		for i := off; i < off+n; i++ {
			b := byte(md.rng.Uint32())
			mm[i] = b
			f.data[i] = b
		}
		if err := unix.Msync(mm, unix.MS_SYNC); err != nil {
			md.fail("msync: %v", err)
		}
		if err := unix.Munmap(mm); err != nil {
			md.fail("munmap: %v", err)
		}
		// What the mapping wrote, pread sees.
		buf := make([]byte, n)
		if got, err := unix.Pread(int(f.fds[1-j].Fd()), buf, int64(off)); err != nil || got != n || string(buf) != string(f.data[off:off+n]) {
			md.fail("pread after the mmap write: n=%d err=%v, differs at %d", got, err, off+spoolFirstDiff(buf[:max(got, 0)], f.data[off:off+n]))
		}
		return "mmap"
	case r < 96: // rollover on demand
		md.logOp("%s rollover (size %d)", base, len(f.data))
		if err := spoolRollover(f.name); err != nil {
			md.fail("setxattr user.tempfs.rollover: %v", err)
		}
		f.onDisk = true
		return "rollover"
	default: // recreate: the new file starts in RAM again
		md.logOp("%s recreate (size %d)", base, len(f.data))
		for k := range f.fds {
			if err := f.fds[k].Close(); err != nil {
				md.fail("close: %v", err)
			}
		}
		if err := os.Remove(f.name); err != nil {
			md.fail("unlink: %v", err)
		}
		md.create(f)
		return "recreate"
	}
}

// checkSizeAndTier compares fstat through both handles, and the tier, with the model.
func (md *spoolModel) checkSizeAndTier(f *spoolModelFile) {
	md.t.Helper()
	for k, fd := range f.fds {
		var st unix.Stat_t
		if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
			md.fail("fstat: %v", err)
		}
		if st.Size != int64(len(f.data)) {
			md.fail("fstat of fd%d of %s: size %d, model %d", k, f.name, st.Size, len(f.data))
		}
	}
	want := "memory"
	if f.onDisk {
		want = "disk"
	}
	buf := make([]byte, 16)
	n, err := unix.Fgetxattr(int(f.fds[0].Fd()), "user.tempfs.spool", buf)
	if err != nil {
		md.fail("fgetxattr user.tempfs.spool: %v", err)
	}
	if got := string(buf[:n]); got != want {
		md.fail("%s says %q, model %q (size %d)", f.name, got, want, len(f.data))
	}
}

// checkAll reads every file whole through one of its handles and through a fresh open.
func (md *spoolModel) checkAll() {
	md.t.Helper()
	for _, f := range md.files {
		buf := make([]byte, len(f.data)+4096)
		fd := f.fds[md.rng.IntN(len(f.fds))]
		n, err := unix.Pread(int(fd.Fd()), buf, 0)
		for err == nil && n < len(buf) {
			var m int
			m, err = unix.Pread(int(fd.Fd()), buf[n:], int64(n))
			if m == 0 {
				break
			}
			n += m
		}
		if err != nil {
			md.fail("pread of %s: %v", f.name, err)
		}
		if string(buf[:n]) != string(f.data) {
			md.fail("content of %s through a handle: %d bytes, model %d, first difference at %d", f.name, n, len(f.data), spoolFirstDiff(buf[:n], f.data))
		}
		got, err := os.ReadFile(f.name)
		if err != nil {
			md.fail("read %s: %v", f.name, err)
		}
		if string(got) != string(f.data) {
			md.fail("content of %s by a fresh open: %d bytes, model %d, first difference at %d", f.name, len(got), len(f.data), spoolFirstDiff(got, f.data))
		}
	}
}

func spoolFirstDiff(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
