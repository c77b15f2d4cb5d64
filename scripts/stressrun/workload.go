package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// keptFile is a file the workload persisted: it must stay, with its data, until the workload removes it.
type keptFile struct {
	rel  string // path below the mountpoint
	seed uint64 // its content is fill(seed, size)
	size int64
	disk bool // it grew past --max-size or was rolled over: it must say user.tempfs.spool=disk
	how  string
}

// wlStats counts what the workload did.
type wlStats struct {
	creates, tmpfiles, bytes          atomic.Int64
	rolledByXattr, truncatedPastMax   atomic.Int64
	overMaxSize, diskChecks           atomic.Int64
	keptXattr, keptRename, keptLinkat atomic.Int64
	reopened, removed, verified       atomic.Int64
	errors                            atomic.Int64
}

type workload struct {
	o     options
	mnt   string
	dirs  []string // directories (below the mount) where files are made
	stats *wlStats
	wg    sync.WaitGroup

	mu   sync.Mutex
	kept map[string]*keptFile // what the workers left kept when they stopped
}

// errorf records a workload failure; after the first 20 it only counts them.
func (w *workload) errorf(format string, args ...any) {
	if w.stats.errors.Add(1) <= 20 {
		fail("workload: "+format, args...)
	} else {
		failMu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		failMu.Unlock()
	}
}

// startWorkload makes a few template directories under workDir and starts o.workers goroutines that make
// template files in them and in the mount's root until o.duration has passed.
func startWorkload(o options, workDir string) *workload {
	w := &workload{o: o, mnt: o.mnt, stats: &wlStats{}, kept: map[string]*keptFile{}}
	w.dirs = []string{"", rel(o.mnt, workDir)}
	for range 3 {
		if err := unix.Mkdir(filepath.Join(workDir, "dXXXXXX"), 0o755); err != nil {
			w.errorf("mkdir %s/dXXXXXX: %v", workDir, err)
			continue
		}
		name, err := getxattr(workDir, "user.tempfs.created")
		if err != nil {
			w.errorf("getxattr %s user.tempfs.created after mkdir dXXXXXX: %v", workDir, err)
			continue
		}
		w.dirs = append(w.dirs, path.Join(rel(o.mnt, workDir), name))
	}
	deadline := time.Now().Add(o.duration)
	for i := range o.workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.worker(i, deadline)
		}()
	}
	return w
}

// wait waits for the workers and returns the counters.
func (w *workload) wait() *wlStats {
	w.wg.Wait()
	return w.stats
}

// worker is one loop of template files: create, write, maybe roll over or truncate past --max-size, check the
// spool tier and the data, maybe persist (xattr or rename) or reopen, close. Kept files beyond o.keptPerWork are
// verified and removed again. Every 16th round also makes an O_TMPFILE file, a quarter of them linked in.
func (w *worker0) dummy() {}

type worker0 struct{}

func (w *workload) worker(id int, deadline time.Time) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	mine := map[string]*keptFile{}
	var order []string
	buf := make([]byte, 0, 4*w.o.maxSize+1)
	rbuf := make([]byte, 4*w.o.maxSize+1)
	for round := 0; time.Now().Before(deadline) && w.stats.errors.Load() < 1000; round++ {
		dir := w.dirs[rng.IntN(len(w.dirs))]
		var k *keptFile
		if round%16 == 15 {
			k = w.tmpfile(id, round, dir, rng, buf, rbuf)
		} else {
			k = w.template(id, round, dir, rng, buf, rbuf)
		}
		if k != nil {
			mine[k.rel] = k
			order = append(order, k.rel)
		}
		if len(order) > w.o.keptPerWork {
			i := rng.IntN(len(order))
			victim := mine[order[i]]
			order[i] = order[len(order)-1]
			order = order[:len(order)-1]
			delete(mine, victim.rel)
			if w.verify(victim, rbuf) {
				if err := unix.Unlink(filepath.Join(w.mnt, victim.rel)); err != nil {
					w.errorf("unlink kept file %s: %v", victim.rel, err)
				}
				w.stats.removed.Add(1)
			}
		}
	}
	w.mu.Lock()
	for r, k := range mine {
		w.kept[r] = k
	}
	w.mu.Unlock()
}

// pickSize draws a file size around --max-size: some tiny, most a little below it (RAM), many above it (rolled
// over while written), a few well above.
func (w *workload) pickSize(rng *rand.Rand) int64 {
	m := w.o.maxSize
	switch r := rng.IntN(100); {
	case r < 10:
		return rng.Int64N(8 << 10)
	case r < 65:
		return m/4 + rng.Int64N(m-m/4+1)
	case r < 95:
		return m + 1 + rng.Int64N(m)
	default:
		return 2*m + 1 + rng.Int64N(2*m)
	}
}

// fill makes the content of a file: size bytes drawn from seed.
func fill(buf []byte, seed uint64, size int64) []byte {
	buf = buf[:size]
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < len(buf); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(buf); j++ {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	return buf
}

// writeAll writes data at the handle's offset in chunks of random sizes.
func (w *workload) writeAll(fd int, what string, data []byte, rng *rand.Rand) bool {
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+rng.IntN(96<<10))
		m, err := unix.Write(fd, data[off:off+n])
		if err != nil {
			w.errorf("write %s at %d: %v", what, off, err)
			return false
		}
		if m != n {
			w.errorf("write %s at %d: wrote %d of %d bytes", what, off, m, n)
			return false
		}
		off += n
	}
	w.stats.bytes.Add(int64(len(data)))
	return true
}

// checkData reads the whole file back through fd and compares it with want.
func (w *workload) checkData(fd int, what string, want, rbuf []byte) bool {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		w.errorf("fstat %s: %v", what, err)
		return false
	}
	if st.Size != int64(len(want)) {
		w.errorf("%s: size %d, wrote %d bytes", what, st.Size, len(want))
		return false
	}
	got := rbuf[:len(want)]
	for off := 0; off < len(got); {
		n, err := unix.Pread(fd, got[off:], int64(off))
		if err != nil {
			w.errorf("pread %s at %d: %v", what, off, err)
			return false
		}
		if n == 0 {
			w.errorf("pread %s: end of file at %d of %d bytes", what, off, len(got))
			return false
		}
		off += n
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		j, zeros := i, 0
		for j < len(got) && got[j] != want[j] {
			if got[j] == 0 {
				zeros++
			}
			j++
		}
		w.errorf("%s: data read back differs from what was written: bytes %d to %d of %d (%d of them read as 0)",
			what, i, j, len(want), zeros)
		return false
	}
	return true
}

// checkTier checks user.tempfs.spool: a file that grew past --max-size or was rolled over says "disk" (rolled-over
// files stay on disk); any other says "memory" or "disk" (the RAM cap may have moved it).
func (w *workload) checkTier(fd int, what string, mustDisk bool) bool {
	tier, err := fgetxattr(fd, "user.tempfs.spool")
	if err != nil {
		w.errorf("fgetxattr %s user.tempfs.spool: %v", what, err)
		return false
	}
	if tier != "disk" && (mustDisk || tier != "memory") {
		w.errorf("%s: user.tempfs.spool=%q, want disk (it grew past --max-size %d or was rolled over)", what, tier, w.o.maxSize)
		return false
	}
	if mustDisk {
		w.stats.diskChecks.Add(1)
	}
	return true
}

// template makes one file from dir/jobXXXXXX and returns it if it was persisted.
func (w *workload) template(id, round int, dir string, rng *rand.Rand, buf, rbuf []byte) *keptFile {
	tmpl := filepath.Join(w.mnt, dir, "jobXXXXXX")
	if rng.IntN(4) == 0 {
		tmpl += ".dat"
	}
	fd, err := unix.Open(tmpl, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		w.errorf("open %s O_CREAT: %v", tmpl, err)
		return nil
	}
	w.stats.creates.Add(1)
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
	}()
	p, err := fgetxattr(fd, "user.tempfs.path")
	if err != nil {
		w.errorf("fgetxattr %s user.tempfs.path: %v", tmpl, err)
		return nil
	}
	// The path is absolute, the mountpoint included (what mkstemp would return).
	if !strings.HasPrefix(p, w.mnt+"/") {
		w.errorf("open %s: user.tempfs.path=%q is not a path under the mount", tmpl, p)
		return nil
	}
	k := &keptFile{rel: rel(w.mnt, p), seed: rng.Uint64(), size: w.pickSize(rng)}
	wantDir := dir
	if wantDir == "" {
		wantDir = "."
	}
	if path.Dir(k.rel) != wantDir || !strings.HasPrefix(path.Base(k.rel), "job") || isTemplate(path.Base(k.rel)) {
		w.errorf("open %s made %q (user.tempfs.path), not a fresh name in %q", tmpl, p, dir)
		return nil
	}
	what := k.rel
	data := fill(buf, k.seed, k.size)
	if !w.writeAll(fd, what, data, rng) {
		return nil
	}
	k.disk = k.size > w.o.maxSize
	if k.disk {
		w.stats.overMaxSize.Add(1)
	}
	switch r := rng.IntN(100); {
	case r < 8:
		if err := unix.Fsetxattr(fd, "user.tempfs.rollover", nil, 0); err != nil {
			w.errorf("fsetxattr %s user.tempfs.rollover: %v", what, err)
			return nil
		}
		k.disk = true
		w.stats.rolledByXattr.Add(1)
	case r < 14:
		// truncate past --max-size and the end (rolls over), then back: the data must be intact.
		if err := unix.Ftruncate(fd, max(k.size, w.o.maxSize)+1+rng.Int64N(w.o.maxSize)); err != nil {
			w.errorf("ftruncate %s past --max-size: %v", what, err)
			return nil
		}
		if err := unix.Ftruncate(fd, k.size); err != nil {
			w.errorf("ftruncate %s back to %d: %v", what, k.size, err)
			return nil
		}
		k.disk = true
		w.stats.truncatedPastMax.Add(1)
	}
	if !w.checkTier(fd, what, k.disk) || !w.checkData(fd, what, data, rbuf) {
		return nil
	}
	if lt, err := fgetxattr(fd, "user.tempfs.lifetime"); err != nil || lt != "close" {
		w.errorf("%s: user.tempfs.lifetime=%q (%v), want close for a file made from a template", what, lt, err)
		return nil
	}
	var kept *keptFile
	switch r := rng.IntN(100); {
	case r < 15:
		if err := unix.Fsetxattr(fd, "user.tempfs.lifetime", []byte("keep"), 0); err != nil {
			w.errorf("fsetxattr %s user.tempfs.lifetime=keep: %v", what, err)
			return nil
		}
		k.how = "xattr"
		kept = k
		w.stats.keptXattr.Add(1)
	case r < 20:
		to := path.Join(path.Dir(k.rel), fmt.Sprintf("kept-%d-%d", id, round))
		if err := unix.Rename(filepath.Join(w.mnt, k.rel), filepath.Join(w.mnt, to)); err != nil {
			w.errorf("rename %s to %s: %v", k.rel, to, err)
			return nil
		}
		k.rel, k.how = to, "rename"
		kept = k
		w.stats.keptRename.Add(1)
	case r < 25:
		// A second handle on the real name keeps the file after the first closes (last handle wins).
		fd2, err := unix.Open(filepath.Join(w.mnt, k.rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			w.errorf("reopen %s by its name: %v", k.rel, err)
			return nil
		}
		unix.Close(fd)
		closed = true
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(w.mnt, k.rel), &st); err != nil {
			w.errorf("stat %s after closing one of its two handles: %v (it must stay until the last closes)", k.rel, err)
		} else {
			w.checkData(fd2, what+" (second handle)", data, rbuf)
		}
		unix.Close(fd2)
		w.stats.reopened.Add(1)
	}
	if kept != nil {
		if lt, err := fgetxattr(fd, "user.tempfs.lifetime"); err != nil || lt != "keep" {
			w.errorf("%s persisted by %s: user.tempfs.lifetime=%q (%v), want keep", what, kept.how, lt, err)
		}
	}
	return kept
}

// tmpfile makes an O_TMPFILE file in dir and gives a quarter of them a name with linkat.
func (w *workload) tmpfile(id, round int, dir string, rng *rand.Rand, buf, rbuf []byte) *keptFile {
	d := filepath.Join(w.mnt, dir)
	fd, err := unix.Open(d, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		w.errorf("open %s O_TMPFILE: %v", d, err)
		return nil
	}
	defer unix.Close(fd)
	w.stats.tmpfiles.Add(1)
	k := &keptFile{seed: rng.Uint64(), size: w.pickSize(rng)}
	what := "O_TMPFILE in " + d
	data := fill(buf, k.seed, k.size)
	if !w.writeAll(fd, what, data, rng) {
		return nil
	}
	k.disk = k.size > w.o.maxSize
	if !w.checkTier(fd, what, k.disk) || !w.checkData(fd, what, data, rbuf) {
		return nil
	}
	if rng.IntN(4) != 0 {
		return nil
	}
	k.rel, k.how = path.Join(dir, fmt.Sprintf("linked-%d-%d", id, round)), "linkat"
	proc := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, filepath.Join(w.mnt, k.rel), unix.AT_SYMLINK_FOLLOW); err != nil {
		w.errorf("linkat %s (O_TMPFILE) to %s: %v", proc, k.rel, err)
		return nil
	}
	w.stats.keptLinkat.Add(1)
	return k
}

// verify reopens a kept file by its name and checks its size, data and spool tier.
func (w *workload) verify(k *keptFile, rbuf []byte) bool {
	p := filepath.Join(w.mnt, k.rel)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.errorf("open kept file %s (persisted by %s): %v", k.rel, k.how, err)
		return false
	}
	defer unix.Close(fd)
	want := fill(make([]byte, k.size), k.seed, k.size)
	what := fmt.Sprintf("kept file %s (persisted by %s)", k.rel, k.how)
	ok := w.checkData(fd, what, want, rbuf) && w.checkTier(fd, what, k.disk)
	if lt, err := fgetxattr(fd, "user.tempfs.lifetime"); err != nil || lt != "keep" {
		w.errorf("%s: user.tempfs.lifetime=%q (%v), want keep", what, lt, err)
		ok = false
	}
	if ok {
		w.stats.verified.Add(1)
	}
	return ok
}

func rel(mnt, p string) string {
	r, err := filepath.Rel(mnt, p)
	if err != nil {
		panic(err)
	}
	return r
}

// isTemplate says whether a name component has a run of at least six X, as a template has.
func isTemplate(name string) bool { return strings.Contains(name, "XXXXXX") }

func getxattr(p, attr string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(p, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func fgetxattr(fd int, attr string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Fgetxattr(fd, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
