package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var modelSeed = flag.Uint64("spool.seed", 0, "seed for the randomized model tests (0: from the clock, logged)")

type opKind uint8

const (
	opWrite opKind = iota
	opRead
	opTruncate
	opAllocate
	opAllocateKeepSize
	opPunchHole
	opRollover
	opSeek
	opReplace // close the file and put a new empty one in its place
	// opPassthrough plays the kernel writing a disk file's backing fd directly: NoteExternalWrite, then
	// a pwrite of the PassthroughFd. A no-op on a RAM file, which is never handed out.
	opPassthrough
	numOpKinds
)

func (k opKind) String() string {
	return [...]string{"write", "read", "truncate", "allocate", "allocate-keep-size", "punch-hole", "rollover", "seek", "replace", "passthrough"}[k]
}

// fileOp is one operation of a model run. off and n are its offset and length (the new size for
// truncate); fill varies the written data.
type fileOp struct {
	kind opKind
	file int
	off  int64
	n    int64
	fill byte
}

func (op fileOp) String() string {
	return fmt.Sprintf("%v(file %d, off %d, n %d)", op.kind, op.file, op.off, op.n)
}

// modelFile pairs a File with the bytes it must hold.
type modelFile struct {
	f    *File
	want []byte
}

// modelRun applies operations to Files and to plain byte slices side by side, and checks after
// each one that they agree.
type modelRun struct {
	pool  *Pool
	files []*modelFile
	// accounts are charged the files, round robin, so that every move between placements checks that an
	// account follows its files' allocation; they have no limit, which would refuse operations the model
	// does not foresee (TestAccount checks limits).
	accounts [2]*Account
	made     int
	// diskCapped: ErrNoSpace is a legal answer (with nothing changed); without a disk cap the
	// store has room, so the memory budget must never make an operation fail.
	diskCapped bool
	// noSpace counts the operations refused for lack of disk, to show that a run reached the cap.
	noSpace int
}

func newModelRun(t testing.TB, cfg Config) *modelRun {
	r := &modelRun{pool: newTestPool(t, cfg), diskCapped: cfg.DiskCap > 0}
	r.accounts = [2]*Account{r.pool.NewAccount(0), r.pool.NewAccount(0)}
	return r
}

// newFile is a new file of the run's pool, charged to one of its accounts.
func (r *modelRun) newFile() *File {
	f := r.pool.NewFile()
	f.HandTo(r.accounts[r.made%len(r.accounts)])
	r.made++
	return f
}

func (r *modelRun) apply(t testing.TB, op fileOp) {
	t.Helper()
	m := r.files[op.file]
	f := m.f
	var err error
	switch op.kind {
	case opWrite:
		data := pattern(int(op.n), op.fill)
		var n int
		n, err = f.WriteAt(data, op.off)
		if err == nil {
			if n != len(data) {
				t.Fatalf("%v: wrote %d", op, n)
			}
			m.want = modelWrite(m.want, data, op.off)
		}
	case opRead:
		buf := make([]byte, op.n)
		n, rerr := f.ReadAt(buf, op.off)
		if rerr != nil {
			t.Fatalf("%v: %v", op, rerr)
		}
		var want []byte
		if op.off < int64(len(m.want)) {
			want = m.want[op.off:min(int64(len(m.want)), op.off+op.n)]
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("%v: read %d bytes that differ from the model's %d", op, n, len(want))
		}
	case opTruncate:
		err = f.Truncate(op.n)
		if err == nil {
			m.want = modelResize(m.want, op.n)
		}
	case opAllocate:
		err = f.Allocate(op.off, op.n, 0)
		if err == nil && op.off+op.n > int64(len(m.want)) {
			m.want = modelResize(m.want, op.off+op.n)
		}
	case opAllocateKeepSize:
		err = f.Allocate(op.off, op.n, unix.FALLOC_FL_KEEP_SIZE)
	case opPunchHole:
		err = f.Allocate(op.off, op.n, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE)
		if err == nil && op.off < int64(len(m.want)) {
			m.want = bytes.Clone(m.want)
			clear(m.want[op.off:min(int64(len(m.want)), op.off+op.n)])
		}
	case opRollover:
		tier := f.Tier()
		err = f.Rollover()
		if err == nil && f.Tier() != Disk {
			t.Fatalf("%v: tier %v after a successful Rollover (was %v)", op, f.Tier(), tier)
		}
	case opSeek:
		checkSeekAgainstModel(t, f, m.want, op.off)
	case opReplace:
		if err := f.Close(); err != nil {
			t.Fatalf("%v: %v", op, err)
		}
		m.f, m.want = r.newFile(), nil
	case opPassthrough:
		fd, ok := f.PassthroughFd()
		if !ok {
			break
		}
		f.NoteExternalWrite()
		data := pattern(int(op.n), op.fill)
		if _, werr := unix.Pwrite(fd, data, op.off); werr != nil {
			t.Fatalf("%v: pwrite of the passthrough fd: %v", op, werr)
		}
		m.want = modelWrite(m.want, data, op.off)
	}
	if err != nil {
		if !r.diskCapped || !errors.Is(err, ErrNoSpace) {
			t.Fatalf("%v: %v", op, err)
		}
		r.noSpace++
	}
	for i, mf := range r.files {
		if err := compareContent(mf.f, mf.want); err != nil {
			t.Fatalf("after %v: file %d: %v", op, i, err)
		}
	}
	var files []*File
	for _, mf := range r.files {
		files = append(files, mf.f)
	}
	checkAccounting(t, r.pool, files)
}

func modelWrite(b, data []byte, off int64) []byte {
	if end := off + int64(len(data)); end > int64(len(b)) {
		b = modelResize(b, end)
	} else {
		b = bytes.Clone(b)
	}
	copy(b[off:], data)
	return b
}

func modelResize(b []byte, size int64) []byte {
	out := make([]byte, size)
	copy(out, b)
	return out
}

// compareContent is checkContent as an error, usable from any goroutine.
func compareContent(f *File, want []byte) error {
	if size := f.Size(); size != int64(len(want)) {
		return fmt.Errorf("Size = %d, model %d", size, len(want))
	}
	buf := make([]byte, len(want)+10)
	n, err := f.ReadAt(buf, 0)
	if err != nil {
		return fmt.Errorf("ReadAt: %v", err)
	}
	if n != len(want) {
		return fmt.Errorf("read %d bytes, model has %d", n, len(want))
	}
	if !bytes.Equal(buf[:n], want) {
		for i := range want {
			if buf[i] != want[i] {
				return fmt.Errorf("content differs first at %d: %#x, model %#x", i, buf[i], want[i])
			}
		}
	}
	return nil
}

// checkSeekAgainstModel checks what SEEK_DATA and SEEK_HOLE may answer for the model's bytes:
// whatever the granularity, no data is skipped and a hole reads as zeros.
func checkSeekAgainstModel(t testing.TB, f *File, want []byte, off int64) {
	t.Helper()
	size := int64(len(want))
	data, err := f.Seek(off, unix.SEEK_DATA)
	switch {
	case off >= size:
		if !errors.Is(err, syscall.ENXIO) {
			t.Fatalf("SEEK_DATA(%d) at size %d = %d, %v; want ENXIO", off, size, data, err)
		}
	case errors.Is(err, syscall.ENXIO):
		if bytes.ContainsFunc(want[off:], func(r rune) bool { return r != 0 }) {
			t.Fatalf("SEEK_DATA(%d) = ENXIO, but the model has data after it", off)
		}
	case err != nil || data < off || data >= size:
		t.Fatalf("SEEK_DATA(%d) at size %d = %d, %v", off, size, data, err)
	case bytes.ContainsFunc(want[off:data], func(r rune) bool { return r != 0 }):
		t.Fatalf("SEEK_DATA(%d) = %d skips data of the model", off, data)
	}
	hole, err := f.Seek(off, unix.SEEK_HOLE)
	switch {
	case off >= size:
		if !errors.Is(err, syscall.ENXIO) {
			t.Fatalf("SEEK_HOLE(%d) at size %d = %d, %v; want ENXIO", off, size, hole, err)
		}
	case err != nil || hole < off || hole > size:
		t.Fatalf("SEEK_HOLE(%d) at size %d = %d, %v", off, size, hole, err)
	case hole < size && want[hole] != 0:
		t.Fatalf("SEEK_HOLE(%d) = %d, where the model has data", off, hole)
	}
}

// opWeights makes writes common and explicit rollovers rare, so that files spend time in RAM
// (where the budget acts) before something moves them; replacing a file brings a fresh RAM file.
var opWeights = [numOpKinds]int{
	opWrite: 30, opRead: 8, opTruncate: 10, opAllocate: 6, opAllocateKeepSize: 4,
	opPunchHole: 6, opRollover: 1, opSeek: 8, opReplace: 3,
}

// randomOp draws an operation. Offsets are mostly below maxSize/2 and sometimes up to twice
// maxSize, so files cross MaxSize now and then rather than at once.
func randomOp(rng *rand.Rand, nfiles int, maxSize int64) fileOp {
	return randomOpWeighted(rng, &opWeights, nfiles, maxSize)
}

// randomOpWeighted is randomOp with other weights.
func randomOpWeighted(rng *rand.Rand, weights *[numOpKinds]int, nfiles int, maxSize int64) fileOp {
	total := 0
	for _, w := range weights {
		total += w
	}
	pick := rng.IntN(total)
	kind := opKind(0)
	for pick >= weights[kind] {
		pick -= weights[kind]
		kind++
	}
	offset := func() int64 {
		if rng.IntN(10) < 8 {
			return rng.Int64N(maxSize / 2)
		}
		return rng.Int64N(2*maxSize + 4096)
	}
	op := fileOp{kind: kind, file: rng.IntN(nfiles), off: offset(), n: 1 + rng.Int64N(maxSize/4), fill: byte(rng.Uint32())}
	if op.kind == opTruncate {
		op.n = offset()
	}
	return op
}

func seedForTest(t *testing.T) uint64 {
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -spool.seed=%d)", seed, seed)
	return seed
}

// modelRegressionSeeds are seeds TestModel failed with; it runs them besides the seed of the day.
//   - 1795862286788038034 (run 1, operation 399): a fallocate over written data left a disk file with
//     five extents, and the extent tree block ext4 added took DiskBytes past the cap. 9 failures in 10
//     before the disk cap counted data blocks only (TestDiskCapIgnoresStoreMetadata).
//   - 13 (run 1): the same, 1 failure in 10 (it depended on writeback).
var modelRegressionSeeds = []uint64{1795862286788038034, 13}

// TestModel runs random operation sequences over three files of one pool with a small MaxSize and
// a memory cap that fits about two of them, with and without a disk cap: with the seed given by
// -spool.seed, else with one from the clock and with modelRegressionSeeds.
func TestModel(t *testing.T) {
	seeds := []uint64{seedForTest(t)}
	if *modelSeed == 0 {
		seeds = append(seeds, modelRegressionSeeds...)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			for run := range 6 {
				t.Run(fmt.Sprint(run), func(t *testing.T) { runModel(t, seed, run) })
			}
		})
	}
}

// runModel is one run of TestModel: 400 random operations, then a write that is sure to roll a file
// over (without a disk cap) or appends until the disk cap refuses one (with a cap), whatever the
// random part did, then 100 more random operations, near the cap for a capped run.
func runModel(t *testing.T, seed uint64, run int) {
	rng := rand.New(rand.NewPCG(seed, uint64(run)))
	maxSize := 4*kib + rng.Int64N(60*kib)
	cfg := Config{MaxSize: maxSize, MemoryCap: maxSize + rng.Int64N(2*maxSize)}
	if run%2 == 1 {
		cfg.DiskCap = 2*maxSize + rng.Int64N(maxSize)
	}
	t.Logf("config: MaxSize %d, MemoryCap %d, DiskCap %d", cfg.MaxSize, cfg.MemoryCap, cfg.DiskCap)
	r := newModelRun(t, cfg)
	for range 3 {
		r.files = append(r.files, &modelFile{f: r.newFile()})
	}
	for range 400 {
		r.apply(t, randomOp(rng, len(r.files), maxSize))
	}
	randomRefusals := r.noSpace
	if r.diskCapped {
		r.appendUntilRefused(t, 0)
	} else {
		// Past MaxSize: file 0 rolls over unless it is on disk already, which took a rollover too.
		r.apply(t, fileOp{kind: opWrite, file: 0, off: maxSize, n: 1, fill: 1})
	}
	for range 100 {
		r.apply(t, randomOp(rng, len(r.files), maxSize))
	}
	st := r.pool.Stats()
	t.Logf("%d rollovers, %d operations refused for lack of disk (%d of the first 400), peak RAM %d",
		st.Rollovers, r.noSpace, randomRefusals, st.PeakRAMBytes)
	if st.Rollovers == 0 {
		t.Errorf("no rollover, even past MaxSize")
	}
	for _, m := range r.files {
		if err := m.f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkAccounting(t, r.pool, nil)
}

// appendUntilRefused appends 8 KiB at a time to one file until the disk cap refuses a write, so that
// every capped run checks a refusal (that it changes nothing) whatever its random operations did. Each
// append allocates at least a page more, in RAM or on disk, and RAM cannot fail while the disk has
// room, so the refusal comes within (MemoryCap+DiskCap)/page appends.
func (r *modelRun) appendUntilRefused(t *testing.T, file int) {
	t.Helper()
	cfg := r.pool.Config()
	refused := r.noSpace
	for i := int64(0); r.noSpace == refused; i++ {
		if i > (cfg.MemoryCap+cfg.DiskCap)/pageSize+2 {
			t.Fatalf("%d appends of 8 KiB without a refusal under a disk cap of %d", i, cfg.DiskCap)
		}
		r.apply(t, fileOp{kind: opWrite, file: file, off: int64(len(r.files[file].want)), n: 8 * kib, fill: byte(i)})
	}
}

// TestModelConcurrent: goroutines each run their own model over their own files of one shared
// pool, so the memory budget moves files of one goroutine to disk while another uses them.
func TestModelConcurrent(t *testing.T) {
	seed := seedForTest(t)
	const workers, filesEach, steps = 4, 2, 250
	maxSize := 32 * kib
	pool := newTestPool(t, Config{MaxSize: maxSize, MemoryCap: 3 * maxSize})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []*File
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var files []*modelFile
			for range filesEach {
				f := pool.NewFile()
				files = append(files, &modelFile{f: f})
				mu.Lock()
				all = append(all, f)
				mu.Unlock()
			}
			for range steps {
				op := randomOp(rng, filesEach, maxSize)
				if op.kind == opSeek || op.kind == opRead || op.kind == opReplace {
					op.kind = opWrite // the checks below read everything anyway
				}
				m := files[op.file]
				if err := applyUnchecked(m, op); err != nil {
					t.Errorf("worker %d: %v: %v", w, op, err)
					return
				}
				for i, m := range files {
					if err := compareContent(m.f, m.want); err != nil {
						t.Errorf("worker %d after %v: file %d: %v", w, op, i, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	checkAccounting(t, pool, all)
	if st := pool.Stats(); st.Rollovers == 0 {
		t.Errorf("no rollovers in the concurrent run: the test did not exercise the budget")
	}
	for _, f := range all {
		f.Close()
	}
}

// applyUnchecked applies a model operation without touching testing.T, for worker goroutines.
func applyUnchecked(m *modelFile, op fileOp) error {
	f := m.f
	switch op.kind {
	case opWrite:
		data := pattern(int(op.n), op.fill)
		if _, err := f.WriteAt(data, op.off); err != nil {
			return err
		}
		m.want = modelWrite(m.want, data, op.off)
	case opTruncate:
		if err := f.Truncate(op.n); err != nil {
			return err
		}
		m.want = modelResize(m.want, op.n)
	case opAllocate:
		if err := f.Allocate(op.off, op.n, 0); err != nil {
			return err
		}
		if op.off+op.n > int64(len(m.want)) {
			m.want = modelResize(m.want, op.off+op.n)
		}
	case opAllocateKeepSize:
		return f.Allocate(op.off, op.n, allocKeepSize)
	case opPunchHole:
		if err := f.Allocate(op.off, op.n, allocPunchHole); err != nil {
			return err
		}
		if op.off < int64(len(m.want)) {
			m.want = bytes.Clone(m.want)
			clear(m.want[op.off:min(int64(len(m.want)), op.off+op.n)])
		}
	case opRollover:
		return f.Rollover()
	}
	return nil
}

// TestRolloverIsAtomicForReaders: a writer keeps rewriting two growing files, each with one byte
// value at a time, so a file is uniform after every write. Readers must never see two values in
// one read, while the memory budget pushes one file to disk (the two pass the cap together at
// 44 KiB each) and the other crosses MaxSize (at 64 KiB).
func TestRolloverIsAtomicForReaders(t *testing.T) {
	const maxSize = 64 * kib
	pool := newTestPool(t, Config{MaxSize: maxSize, MemoryCap: maxSize + 16*kib})
	files := []*File{pool.NewFile(), pool.NewFile()}
	defer files[0].Close()
	defer files[1].Close()
	done := make(chan struct{})
	var wg, reading sync.WaitGroup
	for r := range 4 {
		reading.Add(1)
		wg.Go(func() {
			buf := make([]byte, 3*maxSize)
			for reads := 0; ; reads++ {
				select {
				case <-done:
					return
				default:
				}
				n, err := files[(r+reads)%2].ReadAt(buf, 0)
				if reads == 0 {
					reading.Done()
				}
				if err != nil {
					t.Errorf("ReadAt: %v", err)
					return
				}
				if n > 0 && bytes.Count(buf[:n], buf[:1]) != n {
					t.Errorf("torn read: %d bytes, not all %#x", n, buf[0])
					return
				}
			}
		})
	}
	// The writes race with readers that are reading: on a loaded machine the writes can be done before a
	// reader goroutine first runs.
	reading.Wait()
	for i := range 24 {
		for j, f := range files {
			mustWrite(t, f, bytes.Repeat([]byte{byte(2*i + j + 1)}, int(4*kib)*(i+1)), 0)
		}
	}
	close(done)
	wg.Wait()
	if files[0].Tier() != Disk || files[1].Tier() != Disk || pool.Stats().Rollovers != 2 {
		t.Errorf("tiers %v, %v with %d rollovers; want both on disk by one rollover each",
			files[0].Tier(), files[1].Tier(), pool.Stats().Rollovers)
	}
	checkAccounting(t, pool, files)
}

// numFuzzOpKinds is the operations FuzzFileOps draws: those before opPassthrough, so that the corpus keeps
// its meaning, and because the kernel's passthrough writes are not held to the disk cap that the fuzz
// runs check.
const numFuzzOpKinds = opPassthrough

// FuzzFileOps decodes the input into a small configuration and operation sequence over two files
// and checks it against the model, like TestModel.
func FuzzFileOps(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0x10, 0x00, 0x20})
	f.Add([]byte{1, 2, 0, 0, 0x00, 0x00, 0xff, 6, 0, 0x00, 0x00, 1, 0, 1, 0x40, 0x00, 0x80})
	f.Add([]byte{3, 1, 1, 2, 0x00, 0x30, 0x10, 2, 0, 0x00, 0x50, 0x00, 5, 1, 0x00, 0x10, 0x40, 7, 1, 0x00, 0x08, 0x00})
	f.Add(bytes.Repeat([]byte{0, 1, 0x7f, 0x13, 0x99}, 20))
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) < 2 {
			return
		}
		maxSize := 4 * kib * int64(1+input[0]%4)
		cfg := Config{MaxSize: maxSize, MemoryCap: maxSize * int64(1+input[1]%3)}
		if input[1]&0x80 != 0 {
			cfg.DiskCap = 3 * maxSize
		}
		r := newModelRun(t, cfg)
		for range 2 {
			r.files = append(r.files, &modelFile{f: r.newFile()})
		}
		ops := input[2:]
		for i := 0; len(ops) >= 5 && i < 64; i++ {
			op := fileOp{
				kind: opKind(ops[0] % uint8(numFuzzOpKinds)),
				file: int(ops[0]/uint8(numFuzzOpKinds)) % 2,
				off:  int64(binary.BigEndian.Uint16(ops[1:3])) % (3 * maxSize),
				n:    1 + int64(ops[3])*int64(ops[4]%16+1)*8,
				fill: ops[4],
			}
			if op.kind == opTruncate {
				op.n--
			}
			ops = ops[5:]
			r.apply(t, op)
		}
		for _, m := range r.files {
			m.f.Close()
		}
	})
}

// TestSharedFilesConcurrentWriters: goroutines write interleaved 4 KiB stripes of the same two
// files (each goroutine owns every fourth block), while others call Size, Stats and Seek, with a
// budget that forces rollovers of files other goroutines are using. Each stripe must hold what
// its owner wrote last.
func TestSharedFilesConcurrentWriters(t *testing.T) {
	seed := seedForTest(t)
	const writers, blocks, block = 4, 40, 4 * kib
	pool := newTestPool(t, Config{MaxSize: 96 * kib, MemoryCap: 100 * kib})
	files := []*File{pool.NewFile(), pool.NewFile(), pool.NewFile()}
	last := make([][][]byte, writers) // last[w][file*blocks+b]
	var wg sync.WaitGroup
	for w := range writers {
		last[w] = make([][]byte, len(files)*blocks)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := range 300 {
				fi := rng.IntN(len(files))
				b := rng.IntN(blocks/writers)*writers + w
				data := pattern(int(block), byte(w*31+i))
				if _, err := files[fi].WriteAt(data, int64(b)*block); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				last[w][fi*blocks+b] = data
			}
		})
	}
	stop := make(chan struct{})
	var observers sync.WaitGroup
	observers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, f := range files {
				f.Size()
				f.Tier()
				f.Seek(0, unix.SEEK_HOLE)
			}
			if st := pool.Stats(); st.RAMBytes > st.RAMCap {
				t.Errorf("RAM %d over the cap %d", st.RAMBytes, st.RAMCap)
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	observers.Wait()
	for fi, f := range files {
		content := readAll(t, f)
		for b := range blocks {
			want := last[b%writers][fi*blocks+b]
			if want == nil {
				want = make([]byte, block)
			}
			start := int64(b) * block
			if start >= int64(len(content)) {
				if bytes.ContainsFunc(want, func(r rune) bool { return r != 0 }) {
					t.Errorf("file %d block %d: past the end (size %d), but was written", fi, b, len(content))
				}
				continue
			}
			if !bytes.Equal(content[start:start+block], want) {
				t.Errorf("file %d block %d: not what its writer wrote last", fi, b)
			}
		}
	}
	checkAccounting(t, pool, files)
	if st := pool.Stats(); st.Rollovers < 2 {
		t.Errorf("only %d rollovers: the budget was not exercised", st.Rollovers)
	}
	for _, f := range files {
		f.Close()
	}
}
