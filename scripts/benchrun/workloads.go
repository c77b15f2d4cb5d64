package main

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// bench runs the workloads and collects their results.
type bench struct {
	cfg     config
	targets []*target
	pid     int // the tempfs daemon
	res     *results
	seed    uint64
	block   []byte // 4 KiB of small-cycle data
	trace   bool   // print the time of every workload run on stderr
	// requests: FUSE requests per operation of each workload on tempfs (requests.go)
	requests requestTally
	// micro: run the syscall workloads of this file (-only micro or all); real: run the real programs (real.go).
	micro, realWanted bool
	// parallel: run workload 8, the parallel clients (parallel.go): with -only micro, parallel or all.
	parallel     bool
	work, repo   string // real programs: the private work directory, and this repository
	real         []*realWorkload
	realSkipped  map[string]string // workload id -> why it did not run ("no gcc")
	realFailures int               // real-program runs whose program failed (runOnce)
}

func (b *bench) tempfsTarget() *target {
	for _, t := range b.targets {
		if t.tempfs {
			return t
		}
	}
	panic("no tempfs target")
}

// run runs every workload. The daemon's memory per entry comes first, on a daemon that has served nothing yet;
// every other workload runs on the targets in turn, repetition by repetition; the real programs come last.
func (b *bench) run() {
	if b.micro {
		b.runMicro()
	}
	if b.parallel {
		b.runParallel()
	}
	if b.realWanted {
		b.runReal()
	}
	endNote()
	b.printTempfsStats("tempfs at end")
}

// runMicro runs the syscall workloads of this file.
func (b *bench) runMicro() {
	b.block = make([]byte, blockSize)
	for i := range b.block {
		b.block[i] = byte(i)
	}
	b.memoryPerEntry()
	b.interleave("small cycle, template", b.smallTemplate)
	b.interleave("small cycle, ordinary names", b.smallOrdinary)
	b.interleave("sequential file", b.sequential)
	b.interleave("RAM-sized files", b.ramFiles)
	b.interleave("empty files", func(t *target, rep int) { b.emptyFiles(t, rep, b.cfg.emptyN, "") })
	if b.cfg.emptyBigN > 0 {
		for _, t := range b.targets {
			note("empty files x10")
			b.timed(t, 1, func(t *target, rep int) { b.emptyFiles(t, rep, b.cfg.emptyBigN, "-10x") })
		}
	}
}

func (b *bench) interleave(what string, fn func(t *target, rep int)) {
	for rep := 1; rep <= b.cfg.reps; rep++ {
		for _, t := range rotated(b.targets, rep-1) {
			note(what)
			b.countRequests(t, what, func() { b.timed(t, rep, fn) })
		}
	}
}

// rotated is the targets in turn starting at the k-th (modulo their number): each repetition starts one target
// later, so that no target always runs right after the same one. A target's run pays for what the one before
// left to the kernel (writeback, FORGETs and RELEASEs of a FUSE mount, freed pages); with a fixed order the same
// pair always met, and two mounts of one build differed by up to 7% in the template cycle.
func rotated(targets []*target, k int) []*target {
	if len(targets) == 0 {
		return nil
	}
	k %= len(targets)
	return append(slices.Clone(targets[k:]), targets[:k]...)
}

// timed runs one workload on one target, and with -trace notes how long it took.
func (b *bench) timed(t *target, rep int, fn func(t *target, rep int)) {
	start := time.Now()
	fn(t, rep)
	if b.trace {
		fmt.Fprintf(stderr, "\n  %s rep %d: %.2fs", t.name, rep, time.Since(start).Seconds())
	}
}

// smallTemplate is workload 1: open(jobXXXXXX, O_CREAT|O_RDWR), write 4 KiB, close, N times. On tempfs every
// file removes itself after its last close; the time runs until the directory is empty again. Elsewhere templates
// do not exist, and the same work is the ordinary small cycle of smallOrdinary.
func (b *bench) smallTemplate(t *target, rep int) {
	if !t.templates {
		b.res.add("small-template", t.name, b.ordinaryCycle(t, fmt.Sprintf("w1-r%d", rep)))
		return
	}
	n := b.cfg.smallN
	path, dfd := freshDir(t, fmt.Sprintf("w1-r%d", rep))
	start := time.Now()
	for range n {
		fd, err := unix.Openat(dfd, "jobXXXXXX", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			broken("%s: open template: %v", t.name, err)
		}
		writeAll(t, fd, b.block)
		closeFd(t, fd)
	}
	closed := time.Now()
	waitEmpty(t, path, 10*time.Second)
	elapsed := time.Since(start)
	removeDir(t, path, dfd)
	b.res.add("small-template", t.name, float64(n)/elapsed.Seconds())
	b.res.add("small-template-drain-ms", t.name, float64(time.Since(closed).Microseconds())/1000)
}

// smallOrdinary is workload 2: the ordinary small cycle on every target.
func (b *bench) smallOrdinary(t *target, rep int) {
	b.res.add("small-ordinary", t.name, b.ordinaryCycle(t, fmt.Sprintf("w2-r%d", rep)))
}

// ordinaryCycle creates a unique name with O_EXCL, writes 4 KiB, closes and unlinks it, N times; ops/s.
func (b *bench) ordinaryCycle(t *target, dirName string) float64 {
	n := b.cfg.smallN
	names := makeNames("f", n)
	path, dfd := freshDir(t, dirName)
	start := time.Now()
	for _, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			broken("%s: create %s: %v", t.name, name, err)
		}
		writeAll(t, fd, b.block)
		closeFd(t, fd)
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			broken("%s: unlink %s: %v", t.name, name, err)
		}
	}
	elapsed := time.Since(start)
	removeDir(t, path, dfd)
	return float64(n) / elapsed.Seconds()
}

func makeNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%07d", prefix, i)
	}
	return names
}

// sequential is workloads 3 and 4: a new file written with 1 MiB writes and closed without fsync, then read back
// after dropping the page cache (cold) and again (warm), checking the pattern in every 4 KiB block.
func (b *bench) sequential(t *target, rep int) {
	size := b.cfg.bigSize
	path, dfd := freshDir(t, fmt.Sprintf("w3-r%d", rep))
	seed := b.seed + uint64(rep)<<40
	buf := make([]byte, mib)
	for i := range buf {
		buf[i] = 0x5a
	}

	start := time.Now()
	fd, err := unix.Openat(dfd, "big", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		broken("%s: create big: %v", t.name, err)
	}
	for off := int64(0); off < size; off += mib {
		stamp(buf, seed, uint64(off/blockSize))
		writeAll(t, fd, buf)
	}
	closeFd(t, fd)
	b.res.add("seq-write", t.name, float64(size)/mib/time.Since(start).Seconds())

	var st unix.Stat_t
	if err := unix.Fstatat(dfd, "big", &st, 0); err != nil {
		broken("%s: stat big: %v", t.name, err)
	}
	if st.Size != size {
		broken("%s: big has %d bytes after writing %d", t.name, st.Size, size)
	}

	syncStart := time.Now()
	dropCaches()
	if b.trace {
		fmt.Fprintf(stderr, "\n  %s: sync and drop caches %.2fs", t.name, time.Since(syncStart).Seconds())
	}
	b.res.add("read-cold", t.name, b.readBack(t, dfd, "big", buf, seed, size))
	b.res.add("read-warm", t.name, b.readBack(t, dfd, "big", buf, seed, size))

	if err := unix.Unlinkat(dfd, "big", 0); err != nil {
		broken("%s: unlink big: %v", t.name, err)
	}
	removeDir(t, path, dfd)
}

// readBack reads a file written by sequential with 1 MiB reads and checks it; MiB/s.
func (b *bench) readBack(t *target, dfd int, name string, buf []byte, seed uint64, size int64) float64 {
	start := time.Now()
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		broken("%s: open %s: %v", t.name, name, err)
	}
	var off int64
	for {
		n := readFull(t, fd, buf)
		if n == 0 {
			break
		}
		if n%blockSize != 0 {
			broken("%s: %s: short read of %d bytes at %d", t.name, name, n, off)
		}
		if bad := verify(buf[:n], seed, uint64(off/blockSize)); bad >= 0 {
			broken("%s: %s: wrong data in the 4 KiB block at offset %d", t.name, name, off+int64(bad)*blockSize)
		}
		off += int64(n)
	}
	closeFd(t, fd)
	elapsed := time.Since(start)
	if off != size {
		broken("%s: %s: read %d bytes, wrote %d", t.name, name, off, size)
	}
	return float64(size) / mib / elapsed.Seconds()
}

// ramFiles is workload 5: 200 files of 512 KiB (below --max-size, so RAM-resident in tempfs) written one after the
// other, then all read back and checked. On tempfs the daemon's memory is taken while the files exist (workload 7).
func (b *bench) ramFiles(t *target, rep int) {
	n, size := b.cfg.ramFiles, b.cfg.ramSize
	names := makeNames("r", n)
	path, dfd := freshDir(t, fmt.Sprintf("w5-r%d", rep))
	seed := b.seed + uint64(rep)<<40
	buf := make([]byte, size+blockSize) // room to see a file that is too long
	for i := range buf {
		buf[i] = 0xa5
	}
	total := float64(n*size) / mib

	start := time.Now()
	for i, name := range names {
		stamp(buf[:size], seed, uint64(i)<<32)
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			broken("%s: create %s: %v", t.name, name, err)
		}
		writeAll(t, fd, buf[:size])
		closeFd(t, fd)
	}
	b.res.add("ram-write", t.name, total/time.Since(start).Seconds())

	start = time.Now()
	for i, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			broken("%s: open %s: %v", t.name, name, err)
		}
		got := readFull(t, fd, buf)
		closeFd(t, fd)
		if got != size {
			broken("%s: %s: read %d bytes, wrote %d", t.name, name, got, size)
		}
		if bad := verify(buf[:size], seed, uint64(i)<<32); bad >= 0 {
			broken("%s: %s: wrong data in the 4 KiB block at offset %d", t.name, name, bad*blockSize)
		}
	}
	b.res.add("ram-read", t.name, total/time.Since(start).Seconds())

	if t.tempfs {
		m := readMem(b.pid)
		data := int64(n * size)
		b.res.add("mem-rss-ramfiles", t.name, float64(m.rss)/mib)
		b.res.add("mem-over-data", t.name, float64(m.rss-data)/mib)
		b.res.add("mem-anon-ramfiles", t.name, float64(m.anon)/mib)
		b.res.add("mem-shmem-ramfiles", t.name, float64(m.shmem)/mib)
		if s, err := readTempfsStats(t.dir); err == nil {
			b.res.add("mem-ram-bytes", t.name, float64(s.RAMBytes)/mib)
		}
	}
	for _, name := range names {
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			broken("%s: unlink %s: %v", t.name, name, err)
		}
	}
	removeDir(t, path, dfd)
}

// emptyFiles is workload 6: N empty files in one directory: create all, list them (the count must match), stat
// each, unlink all; ops/s per phase and the time per entry of all four phases.
func (b *bench) emptyFiles(t *target, rep, n int, suffix string) {
	names := makeNames("e", n)
	path, dfd := freshDir(t, fmt.Sprintf("w6%s-r%d", suffix, rep))
	phase := func(id string, start time.Time) time.Duration {
		d := time.Since(start)
		b.res.add(id+suffix, t.name, float64(n)/d.Seconds())
		return d
	}

	start := time.Now()
	for _, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			broken("%s: create %s: %v", t.name, name, err)
		}
		closeFd(t, fd)
	}
	all := phase("empty-create", start)

	dents := make([]byte, 64<<10)
	start = time.Now()
	count := readdirCount(t, path, dents)
	all += phase("empty-readdir", start)
	if count != n {
		broken("%s: readdir of %s found %d entries, created %d", t.name, path, count, n)
	}

	var st unix.Stat_t
	start = time.Now()
	for _, name := range names {
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			broken("%s: stat %s: %v", t.name, name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
			broken("%s: %s: mode %o size %d, want an empty regular file", t.name, name, st.Mode, st.Size)
		}
	}
	all += phase("empty-stat", start)

	start = time.Now()
	for _, name := range names {
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			broken("%s: unlink %s: %v", t.name, name, err)
		}
	}
	all += phase("empty-unlink", start)
	b.res.add("empty-entry-us"+suffix, t.name, all.Seconds()*1e6/float64(n))
	removeDir(t, path, dfd)
}

// memoryPerEntry is workload 7's second half, on tempfs only: the daemon's RSS before and after creating many
// empty files, on a daemon that has served nothing else yet. The baseline tempfs (a tempfs target other than
// the one measured) makes and removes as many files unmeasured, so that both daemons carry the same history
// into the timed workloads: a daemon that once held many entries keeps the larger maps that held them, which
// measured up to 10% slower in the small cycles than a fresh one.
func (b *bench) memoryPerEntry() {
	n := b.cfg.memEntries
	note("daemon memory")
	names := makeNames("m", n)
	for _, t := range b.targets {
		if !t.templates {
			continue // not a tempfs
		}
		path, dfd := freshDir(t, "w7")
		var before memStatus
		if t.tempfs {
			before = readMem(b.pid) // b.pid is the measured daemon's
		}
		for _, name := range names {
			fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			if err != nil {
				broken("%s: create %s: %v", t.name, name, err)
			}
			closeFd(t, fd)
		}
		if t.tempfs {
			b.recordMemory(t, n, before, readMem(b.pid))
		}
		for _, name := range names {
			if err := unix.Unlinkat(dfd, name, 0); err != nil {
				broken("%s: unlink %s: %v", t.name, name, err)
			}
		}
		removeDir(t, path, dfd)
	}
}

// recordMemory keeps workload 7's figures: the daemon's memory before and after n empty files were made.
func (b *bench) recordMemory(t *target, n int, before, after memStatus) {
	var ram int64
	if s, err := readTempfsStats(t.dir); err == nil {
		ram = s.RAMBytes
		if s.Entries < int64(n) {
			broken("tempfs: user.tempfs.stats counts %d entries with %d empty files present", s.Entries, n)
		}
	} else if !errors.Is(err, unix.ENODATA) {
		fmt.Fprintf(stderr, "\nuser.tempfs.stats: %v\n", err)
	}
	b.res.memEntries = n
	b.res.memBefore, b.res.memAfter, b.res.memRAM = before, after, ram
}

// printTempfsStats shows what the daemon says about itself (passthrough on or off explains the data path).
func (b *bench) printTempfsStats(when string) {
	t := b.tempfsTarget()
	s, err := readTempfsStats(t.dir)
	if err != nil {
		fmt.Printf("%s: user.tempfs.stats: %v\n", when, err)
		return
	}
	m := readMem(b.pid)
	fmt.Printf("%s: passthrough=%v max_size=%d entries=%d ram_bytes=%d disk_bytes=%d; daemon VmRSS %.1f MiB\n",
		when, s.Passthrough, s.MaxSize, s.Entries, s.RAMBytes, s.DiskBytes, float64(m.rss)/mib)
}
