package integration

// The workload processes of the take-over tests (takeover_test.go): re-execs of this test binary, each in its
// own process, each checking everything it does against its own model of the file system and reporting every
// failed or wrong operation at once, on stdout, as a line "ERR ...". The test talks to them one line at a time:
// a child prints "ready ..." once set up, works until it reads a line ("stop", "step", ...), and answers it.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// toChildEnv makes a re-exec of the test binary run a take-over workload (toChildMain) instead of the tests.
const toChildEnv = "TEMPFS_TAKEOVER_CHILD"

func init() {
	// A re-exec'd child must act before TestMain builds anything or parses test flags.
	if mode := os.Getenv(toChildEnv); mode != "" {
		os.Exit(toChildMain(mode, os.Args[1:]))
	}
}

// toChild is a workload process's side of the line protocol.
type toChild struct {
	mu     sync.Mutex
	out    *bufio.Writer
	errs   atomic.Int64
	cmds   chan string // lines from the test; closed at EOF
	stop   atomic.Bool // set by "stop" (or EOF): a workload's loop ends
	stepCh chan string // the other lines, for workloads that act on them
}

func (c *toChild) say(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, format+"\n", a...)
	c.out.Flush()
}

// fail reports a failed or wrong operation; the workload goes on unless it returns.
func (c *toChild) fail(format string, a ...any) {
	if c.errs.Add(1) > 10 {
		return // enough to see what went wrong
	}
	c.say("ERR "+format, a...)
}

// next waits for the next line from the test ("" at EOF).
func (c *toChild) next() string {
	l, ok := <-c.stepCh
	if !ok {
		return ""
	}
	return l
}

func toChildMain(mode string, args []string) int {
	c := &toChild{out: bufio.NewWriter(os.Stdout), stepCh: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			l := sc.Text()
			if l == "stop" {
				c.stop.Store(true)
			}
			c.stepCh <- l
		}
		c.stop.Store(true)
		close(c.stepCh)
	}()
	unix.Umask(0)
	var err error
	switch mode {
	case "fsx":
		err = toFsx(c, args)
	case "fsstress":
		err = toFsstress(c, args)
	case "template":
		err = toTemplateHolder(c, args)
	case "session":
		err = toSessionWriter(c, args)
	case "readdir":
		err = toReaddir(c, args)
	case "statloop":
		err = toStatLoop(c, args)
	case "bigwrite":
		err = crBigWrite(c, args)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		c.fail("%v", err)
	}
	if c.errs.Load() > 0 {
		return 1
	}
	return 0
}

// toSeed is the seed of a child's random choices, from its arguments, so that a failure can be replayed.
func toSeed(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// toFill writes bytes derived from seed into b (a pattern that differs per block and per write).
func toFill(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
}

// firstDiff is the offset of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// toFsx: args DIR MAXLEN SEED. fsx's idea: random writes, reads, truncates, mapped reads and writes, fsyncs and
// reopens of one file, every read compared with a copy kept in memory. It works in rounds, each on a fresh file
// that grows from nothing past the mount's --max-size (so it rolls over from RAM to disk while the take-overs
// happen), and checks the whole file at the end of each round and at "stop". It prints "ok ops=N rounds=R
// disk=D" (D: rounds whose file was on disk at their end).
func toFsx(c *toChild, args []string) error {
	dir, seed := args[0], toSeed(args[2])
	maxLen, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 1))
	ops, onDisk := 0, 0
	c.say("ready")
	for round := 0; ; round++ {
		path := filepath.Join(dir, fmt.Sprintf("fsx.%d", round))
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("round %d: create %s: %v", round, path, err)
		}
		var shadow []byte
		check := func(what string) bool {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				c.fail("fsx round %d op %d %s: fstat: %v", round, ops, what, err)
				return false
			}
			if st.Size != int64(len(shadow)) {
				c.fail("fsx round %d op %d %s: size %d, want %d", round, ops, what, st.Size, len(shadow))
				return false
			}
			got := make([]byte, len(shadow))
			n, err := unix.Pread(fd, got, 0)
			if err != nil || n != len(shadow) {
				c.fail("fsx round %d op %d %s: read whole file: %d bytes, %v; want %d", round, ops, what, n, err, len(shadow))
				return false
			}
			if d := firstDiff(got, shadow); d >= 0 {
				c.fail("fsx round %d op %d %s: whole file differs at offset %d", round, ops, what, d)
				return false
			}
			return true
		}
		for i := 0; i < 400 && !c.stop.Load(); i++ {
			ops++
			if !toFsxOp(c, r, &fd, path, &shadow, maxLen, round, ops) {
				unix.Close(fd)
				return nil
			}
		}
		if !check("end of round") {
			unix.Close(fd)
			return nil
		}
		if v, err := tlGetxattr(path, "user.tempfs.spool"); err != nil {
			c.fail("fsx round %d: getxattr user.tempfs.spool: %v", round, err)
		} else if v == "disk" {
			onDisk++
		}
		if err := unix.Close(fd); err != nil {
			c.fail("fsx round %d: close: %v", round, err)
		}
		if c.stop.Load() {
			c.say("ok ops=%d rounds=%d disk=%d", ops, round+1, onDisk)
			return nil
		}
		if err := unix.Unlink(path); err != nil {
			return fmt.Errorf("round %d: unlink: %v", round, err)
		}
	}
}

// toFsxOp does one random operation on fd and checks it; false when the file no longer matches the model.
func toFsxOp(c *toChild, r *rand.Rand, fd *int, path string, shadow *[]byte, maxLen, round, op int) bool {
	size := len(*shadow)
	bad := func(format string, a ...any) bool {
		c.fail("fsx round %d op %d (size %d): "+format, append([]any{round, op, size}, a...)...)
		return false
	}
	grow := func(n int) {
		if n > len(*shadow) {
			*shadow = append(*shadow, make([]byte, n-len(*shadow))...)
		}
	}
	page := os.Getpagesize()
	switch k := r.IntN(20); {
	case k < 7: // write
		off := r.IntN(maxLen)
		n := 1 + r.IntN(min(64<<10, maxLen-off))
		buf := make([]byte, n)
		toFill(buf, r.Uint64())
		if w, err := unix.Pwrite(*fd, buf, int64(off)); err != nil || w != n {
			return bad("pwrite %d@%d: %d, %v", n, off, w, err)
		}
		grow(off + n)
		copy((*shadow)[off:], buf)
	case k < 12: // read
		if size == 0 {
			return true
		}
		off := r.IntN(size)
		n := 1 + r.IntN(min(64<<10, size-off))
		buf := make([]byte, n)
		if got, err := unix.Pread(*fd, buf, int64(off)); err != nil || got != n {
			return bad("pread %d@%d: %d, %v", n, off, got, err)
		}
		if d := firstDiff(buf, (*shadow)[off:off+n]); d >= 0 {
			return bad("pread %d@%d: differs at offset %d", n, off, off+d)
		}
	case k < 14: // truncate
		n := r.IntN(maxLen + 1)
		if err := unix.Ftruncate(*fd, int64(n)); err != nil {
			return bad("ftruncate %d: %v", n, err)
		}
		if n < size {
			*shadow = (*shadow)[:n]
		}
		grow(n)
	case k < 16: // mapped read
		if size == 0 {
			return true
		}
		off := r.IntN(size)
		n := 1 + r.IntN(min(64<<10, size-off))
		pgoff := off / page * page
		m, err := unix.Mmap(*fd, int64(pgoff), off+n-pgoff, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return bad("mmap read %d@%d: %v", n, off, err)
		}
		d := firstDiff(m[off-pgoff:], (*shadow)[off:off+n])
		unix.Munmap(m)
		if d >= 0 {
			return bad("mapped read %d@%d: differs at offset %d", n, off, off+d)
		}
	case k < 18: // mapped write: extend first, as fsx does
		off := r.IntN(maxLen)
		n := 1 + r.IntN(min(64<<10, maxLen-off))
		if off+n > size {
			if err := unix.Ftruncate(*fd, int64(off+n)); err != nil {
				return bad("ftruncate for mapped write %d@%d: %v", n, off, err)
			}
			grow(off + n)
		}
		buf := make([]byte, n)
		toFill(buf, r.Uint64())
		pgoff := off / page * page
		m, err := unix.Mmap(*fd, int64(pgoff), off+n-pgoff, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return bad("mmap write %d@%d: %v", n, off, err)
		}
		copy(m[off-pgoff:], buf)
		err = unix.Msync(m, unix.MS_SYNC)
		unix.Munmap(m)
		if err != nil {
			return bad("msync %d@%d: %v", n, off, err)
		}
		copy((*shadow)[off:], buf)
	case k < 19: // fsync
		if err := unix.Fsync(*fd); err != nil {
			return bad("fsync: %v", err)
		}
	default: // close and reopen
		if err := unix.Close(*fd); err != nil {
			return bad("close: %v", err)
		}
		nfd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return bad("reopen: %v", err)
		}
		*fd = nfd
		var st unix.Stat_t
		if err := unix.Fstat(nfd, &st); err != nil || st.Size != int64(size) {
			return bad("fstat after reopen: size %d, %v", st.Size, err)
		}
	}
	return true
}

// fsNode is an inode of toFsstress's model; hard links share it.
type fsNode struct {
	kind   uint32 // S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO
	mode   uint32 // permission bits
	data   []byte
	target string
	xattr  string // user.fsstress, "" when unset
	nlink  int
}

// toFsstress: args DIR SEED. fsstress's idea: random namespace operations (create, mkdir, link, symlink,
// mknod, rename, unlink, rmdir, write, truncate, chmod, setxattr, stat, readdir, read) in a directory of its
// own, each checked against a model of the tree: an operation must succeed or fail exactly as the model says
// (operations meant to fail, such as an exclusive create of an existing name, are part of the mix: a create
// applied twice would show as EEXIST). At "stop" it compares the whole tree with the model and prints
// "ok ops=N entries=M".
func toFsstress(c *toChild, args []string) error {
	root, seed := args[0], toSeed(args[1])
	r := rand.New(rand.NewPCG(seed, 2))
	model := map[string]*fsNode{"": {kind: unix.S_IFDIR, mode: 0o755, nlink: 2}}
	if err := unix.Chmod(root, 0o755); err != nil {
		return err
	}
	serial := 0
	ops := 0
	c.say("ready")
	pick := func(kinds ...uint32) string {
		var keys []string
		for k, n := range model {
			if slices.Contains(kinds, n.kind) {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return "\x00"
		}
		sort.Strings(keys)
		return keys[r.IntN(len(keys))]
	}
	fresh := func() string {
		serial++
		parent := pick(unix.S_IFDIR)
		return filepath.Join(parent, fmt.Sprintf("n%d", serial))
	}
	abs := func(rel string) string { return filepath.Join(root, rel) }
	for !c.stop.Load() {
		ops++
		bad := func(format string, a ...any) {
			c.fail("fsstress op %d: "+format, append([]any{ops}, a...)...)
		}
		expect := func(what string, err, want error) bool {
			if !errors.Is(err, want) && !(err == nil && want == nil) {
				bad("%s: %v, want %v", what, err, want)
				return false
			}
			return true
		}
		crowded := len(model) > 250
		switch k := r.IntN(26); {
		case k < 3 && !crowded: // create a file with data (now and then past --max-size)
			p := fresh()
			n := r.IntN(8 << 10)
			if r.IntN(20) == 0 {
				n = 300 << 10
			}
			data := make([]byte, n)
			toFill(data, r.Uint64())
			fd, err := unix.Open(abs(p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
			if !expect("create "+p, err, nil) {
				continue
			}
			model[p] = &fsNode{kind: unix.S_IFREG, mode: 0o640, nlink: 1}
			if w, err := unix.Write(fd, data); err != nil || w != n {
				bad("write %s: %d, %v", p, w, err)
			} else {
				model[p].data = data
			}
			if err := unix.Close(fd); err != nil {
				bad("close %s: %v", p, err)
			}
		case k < 4 && !crowded:
			p := fresh()
			if expect("mkdir "+p, unix.Mkdir(abs(p), 0o751), nil) {
				model[p] = &fsNode{kind: unix.S_IFDIR, mode: 0o751, nlink: 2}
			}
		case k < 5 && !crowded:
			p := fresh()
			t := fmt.Sprintf("target-%d", r.IntN(1000))
			if expect("symlink "+p, unix.Symlink(t, abs(p)), nil) {
				model[p] = &fsNode{kind: unix.S_IFLNK, mode: 0o777, target: t, nlink: 1}
			}
		case k < 6 && !crowded:
			p := fresh()
			if expect("mkfifo "+p, unix.Mkfifo(abs(p), 0o600), nil) {
				model[p] = &fsNode{kind: unix.S_IFIFO, mode: 0o600, nlink: 1}
			}
		case k < 7 && !crowded: // hard link
			src := pick(unix.S_IFREG)
			if src == "\x00" {
				continue
			}
			p := fresh()
			if expect("link "+src+" "+p, unix.Link(abs(src), abs(p)), nil) {
				model[p] = model[src]
				model[p].nlink++
			}
		case k < 8: // exclusive create of an existing name fails
			p := pick(unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFIFO)
			if p == "" {
				continue
			}
			_, err := unix.Open(abs(p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			expect("exclusive create of existing "+p, err, unix.EEXIST)
		case k < 9: // a name that never existed
			p := filepath.Join(pick(unix.S_IFDIR), "never")
			expect("unlink "+p, unix.Unlink(abs(p)), unix.ENOENT)
		case k < 12: // unlink
			p := pick(unix.S_IFREG, unix.S_IFLNK, unix.S_IFIFO)
			if p == "\x00" {
				continue
			}
			if expect("unlink "+p, unix.Unlink(abs(p)), nil) {
				model[p].nlink--
				delete(model, p)
			}
		case k < 13: // rmdir
			p := pick(unix.S_IFDIR)
			if p == "" {
				continue
			}
			empty := true
			for q := range model {
				if strings.HasPrefix(q, p+"/") {
					empty = false
					break
				}
			}
			want := error(nil)
			if !empty {
				want = unix.ENOTEMPTY
			}
			if expect("rmdir "+p, unix.Rmdir(abs(p)), want) && empty {
				delete(model, p)
			}
		case k < 15: // rename to a fresh name, or over an existing file
			src := pick(unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFIFO)
			if src == "" || src == "\x00" {
				continue
			}
			dst := fresh()
			if strings.HasPrefix(dst, src+"/") {
				continue
			}
			over := model[src].kind != unix.S_IFDIR && r.IntN(3) == 0
			if over {
				if d := pick(unix.S_IFREG); d != "\x00" && d != src && model[d] != model[src] {
					dst = d
				}
			}
			if !expect("rename "+src+" "+dst, unix.Rename(abs(src), abs(dst)), nil) {
				continue
			}
			if old, ok := model[dst]; ok {
				old.nlink--
			}
			for q, n := range model {
				if q == src || strings.HasPrefix(q, src+"/") {
					delete(model, q)
					model[dst+strings.TrimPrefix(q, src)] = n
				}
			}
		case k < 17: // write into a file
			p := pick(unix.S_IFREG)
			if p == "\x00" {
				continue
			}
			n := model[p]
			off := r.IntN(len(n.data) + 4096)
			buf := make([]byte, 1+r.IntN(8192))
			toFill(buf, r.Uint64())
			fd, err := unix.Open(abs(p), unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if !expect("open "+p, err, nil) {
				continue
			}
			if w, err := unix.Pwrite(fd, buf, int64(off)); err != nil || w != len(buf) {
				bad("pwrite %s: %d, %v", p, w, err)
			} else {
				if end := off + len(buf); end > len(n.data) {
					n.data = append(n.data, make([]byte, end-len(n.data))...)
				}
				copy(n.data[off:], buf)
			}
			if err := unix.Close(fd); err != nil {
				bad("close %s: %v", p, err)
			}
		case k < 18: // truncate
			p := pick(unix.S_IFREG)
			if p == "\x00" {
				continue
			}
			n := model[p]
			size := r.IntN(len(n.data) + 4096)
			if expect("truncate "+p, unix.Truncate(abs(p), int64(size)), nil) {
				if size < len(n.data) {
					n.data = n.data[:size]
				} else {
					n.data = append(n.data, make([]byte, size-len(n.data))...)
				}
			}
		case k < 19: // chmod
			p := pick(unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO)
			if p == "\x00" {
				continue
			}
			mode := uint32(0o600 | r.IntN(0o200))
			if model[p].kind == unix.S_IFDIR {
				mode |= 0o700
			}
			if expect("chmod "+p, unix.Chmod(abs(p), mode), nil) {
				model[p].mode = mode
			}
		case k < 20: // setxattr
			p := pick(unix.S_IFREG, unix.S_IFDIR)
			if p == "\x00" {
				continue
			}
			v := fmt.Sprintf("v%d", r.IntN(1<<20))
			if expect("setxattr "+p, unix.Setxattr(abs(p), "user.fsstress", []byte(v), 0), nil) {
				model[p].xattr = v
			}
		case k < 22: // stat
			p := pick(unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFIFO)
			if msg := toFsCompare(abs(p), model[p], model, p); msg != "" {
				bad("%s", msg)
			}
		case k < 24: // readdir
			p := pick(unix.S_IFDIR)
			if msg := toFsListCompare(abs(p), p, model); msg != "" {
				bad("%s", msg)
			}
		default: // read a file
			p := pick(unix.S_IFREG)
			if p == "\x00" {
				continue
			}
			got, err := os.ReadFile(abs(p))
			if err != nil {
				bad("read %s: %v", p, err)
			} else if d := firstDiff(got, model[p].data); d >= 0 {
				bad("read %s: %d bytes, want %d, differs at %d", p, len(got), len(model[p].data), d)
			}
		}
	}
	// The whole tree against the model.
	for p, n := range model {
		if msg := toFsCompare(abs(p), n, model, p); msg != "" {
			c.fail("fsstress final: %s", msg)
		}
		if n.kind == unix.S_IFDIR {
			if msg := toFsListCompare(abs(p), p, model); msg != "" {
				c.fail("fsstress final: %s", msg)
			}
		}
		if n.kind == unix.S_IFREG {
			if got, err := os.ReadFile(abs(p)); err != nil || !bytes.Equal(got, n.data) {
				c.fail("fsstress final: read %s: %d bytes (%v), want %d, differs at %d", p, len(got), err, len(n.data), firstDiff(got, n.data))
			}
		}
	}
	c.say("ok ops=%d entries=%d", ops, len(model))
	return nil
}

// toFsCompare compares what lstat and getxattr say of path with model node n ("" when equal).
func toFsCompare(path string, n *fsNode, model map[string]*fsNode, rel string) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Sprintf("lstat %s: %v", rel, err)
	}
	if st.Mode&unix.S_IFMT != n.kind {
		return fmt.Sprintf("%s: kind %o, want %o", rel, st.Mode&unix.S_IFMT, n.kind)
	}
	if n.kind != unix.S_IFLNK && st.Mode&0o7777 != n.mode {
		return fmt.Sprintf("%s: mode %o, want %o", rel, st.Mode&0o7777, n.mode)
	}
	switch n.kind {
	case unix.S_IFREG:
		if st.Size != int64(len(n.data)) || int(st.Nlink) != n.nlink {
			return fmt.Sprintf("%s: size %d nlink %d, want %d and %d", rel, st.Size, st.Nlink, len(n.data), n.nlink)
		}
	case unix.S_IFLNK:
		if t, err := os.Readlink(path); err != nil || t != n.target {
			return fmt.Sprintf("readlink %s: %q, %v; want %q", rel, t, err, n.target)
		}
	case unix.S_IFDIR:
		subdirs := 0
		for q, m := range model {
			if m.kind == unix.S_IFDIR && q != "" && filepath.Dir(q) == rel || rel == "" && m.kind == unix.S_IFDIR && q != "" && !strings.Contains(q, "/") {
				subdirs++
			}
		}
		if int(st.Nlink) != 2+subdirs {
			return fmt.Sprintf("%s: nlink %d, want %d", rel, st.Nlink, 2+subdirs)
		}
	}
	if n.kind == unix.S_IFREG || n.kind == unix.S_IFDIR && rel != "" {
		v, err := tlGetxattr(path, "user.fsstress")
		if n.xattr == "" && !errors.Is(err, unix.ENODATA) || n.xattr != "" && (err != nil || v != n.xattr) {
			return fmt.Sprintf("getxattr %s user.fsstress: %q, %v; want %q", rel, v, err, n.xattr)
		}
	}
	return ""
}

// toFsListCompare compares the listing of directory path (rel in the model) with the model.
func toFsListCompare(path, rel string, model map[string]*fsNode) string {
	entries, err := os.ReadDir(path)
	if err != nil {
		return fmt.Sprintf("readdir %s: %v", rel, err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for q := range model {
		if q != "" && (rel == "" && !strings.Contains(q, "/") || rel != "" && filepath.Dir(q) == rel) {
			want = append(want, filepath.Base(q))
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		return fmt.Sprintf("readdir %s: %q, want %q", rel, got, want)
	}
	return ""
}

// toTemplateHolder: args TEMPLATE BLOCKS. Opens TEMPLATE (a name with XXXXXX) with O_CREAT and keeps it open,
// writing 4 KiB blocks in turn (BLOCKS of them, more than --max-size: the file rolls over while held), every
// write a new pattern, each read back at once and one earlier block read back too. "ready PATH" names the file.
// At "stop" it checks the whole file and prints "verified writes=N"; at "close" it closes it, prints "closed"
// and exits.
func toTemplateHolder(c *toChild, args []string) error {
	nblocks, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	const bs = 4096
	fd, err := unix.Open(args[0], unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %v", args[0], err)
	}
	path, err := tlFgetxattr(fd, "user.tempfs.path")
	if err != nil {
		return fmt.Errorf("fgetxattr user.tempfs.path: %v", err)
	}
	gen := make([]uint64, nblocks) // 0: never written
	block := func(b int, g uint64) []byte {
		buf := make([]byte, bs)
		toFill(buf, uint64(b)<<32|g)
		return buf
	}
	verify := func(b int, what string) bool {
		buf := make([]byte, bs)
		n, err := unix.Pread(fd, buf, int64(b*bs))
		if err != nil || n != bs {
			c.fail("template %s: pread block %d: %d, %v", what, b, n, err)
			return false
		}
		if d := firstDiff(buf, block(b, gen[b])); d >= 0 {
			c.fail("template %s: block %d (write %d) differs at byte %d", what, b, gen[b], d)
			return false
		}
		return true
	}
	c.say("ready %s", path)
	writes := 0
	r := rand.New(rand.NewPCG(uint64(nblocks), 3))
	for ; !c.stop.Load(); writes++ {
		b := writes % nblocks
		gen[b]++
		if n, err := unix.Pwrite(fd, block(b, gen[b]), int64(b*bs)); err != nil || n != bs {
			c.fail("template: pwrite block %d: %d, %v", b, n, err)
			return nil
		}
		if !verify(b, "read back") || !verify(r.IntN(min(writes+1, nblocks)), "earlier block") {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != int64(min(writes, nblocks)*bs) {
		c.fail("template final: fstat size %d, %v; want %d", st.Size, err, min(writes, nblocks)*bs)
	}
	for b := range min(writes, nblocks) {
		verify(b, "final")
	}
	c.say("verified writes=%d", writes)
	for l := c.next(); l != "close" && l != ""; l = c.next() {
	}
	if err := unix.Close(fd); err != nil {
		c.fail("template: close: %v", err)
	}
	c.say("closed")
	return nil
}

// toSessionWriter: args DIR. Meant to run as the leader of a session of its own on a mount with --owner
// session: makes a directory in DIR and keeps creating files in it and appending records to them (two files held
// open, the others reopened for each append), reading each file back now and then. "ready SUBDIR" names its
// directory. At "check" it stops, checks every file, prints "ok files=N appends=M" and waits to be killed.
func toSessionWriter(c *toChild, args []string) error {
	dir := filepath.Join(args[0], fmt.Sprintf("s%d", os.Getpid()))
	if err := unix.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var names []string
	want := map[string][]byte{}
	held := map[string]int{}
	appends := 0
	newFile := func() bool {
		name := filepath.Join(dir, fmt.Sprintf("w%d", len(names)))
		fd, err := unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			c.fail("session: create %s: %v", name, err)
			return false
		}
		names = append(names, name)
		want[name] = nil
		if len(held) < 2 {
			held[name] = fd
		} else {
			unix.Close(fd)
		}
		return true
	}
	if !newFile() {
		return nil
	}
	c.say("ready %s", dir)
	stopped := make(chan struct{})
	go func() {
		for l := c.next(); l != "check" && l != ""; l = c.next() {
		}
		close(stopped)
	}()
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), 4))
loop:
	for {
		select {
		case <-stopped:
			break loop
		default:
		}
		if appends%25 == 0 && len(names) < 40 && !newFile() {
			return nil
		}
		name := names[r.IntN(len(names))]
		rec := fmt.Appendf(nil, "%s record %d\n", filepath.Base(name), appends)
		fd, ok := held[name]
		if !ok {
			var err error
			if fd, err = unix.Open(name, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0); err != nil {
				c.fail("session: open %s: %v", name, err)
				return nil
			}
		}
		n, err := unix.Write(fd, rec)
		if !ok {
			unix.Close(fd)
		}
		if err != nil || n != len(rec) {
			c.fail("session: append to %s: %d, %v", name, n, err)
			return nil
		}
		want[name] = append(want[name], rec...)
		appends++
		if appends%10 == 0 {
			if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, want[name]) {
				c.fail("session: read back %s: %d bytes (%v), want %d", name, len(got), err, len(want[name]))
				return nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	for _, name := range names {
		if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, want[name]) {
			c.fail("session final: %s: %d bytes (%v), want %d, differs at %d", name, len(got), err, len(want[name]), firstDiff(got, want[name]))
		}
	}
	c.say("ok files=%d appends=%d", len(names), appends)
	for { // killed by the test with the rest of its session
		time.Sleep(time.Minute)
	}
}

// toReaddir: args DIR N. DIR holds exactly the names e000 .. e(N-1). Opens DIR and reads one small getdents64
// buffer ("ready LISTED"); at each "step" it reads one more buffer ("listed LISTED"); at "finish" it reads to the
// end and checks that every name came exactly once, printing "ok listed=N".
func toReaddir(c *toChild, args []string) error {
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	fd, err := unix.Open(args[0], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	seen := map[string]int{}
	var order []string
	buf := make([]byte, 400) // a dozen entries a call
	read := func() (bool, error) {
		got, err := unix.Getdents(fd, buf)
		if err != nil {
			return false, err
		}
		if got == 0 {
			return false, nil
		}
		_, _, names := unix.ParseDirent(buf[:got], -1, nil)
		for _, name := range names {
			seen[name]++
			order = append(order, name)
		}
		return true, nil
	}
	if _, err := read(); err != nil {
		return fmt.Errorf("getdents64: %v", err)
	}
	c.say("ready %d", len(order))
	for {
		switch l := c.next(); l {
		case "step":
			if _, err := read(); err != nil {
				c.fail("readdir: getdents64 after %d names: %v", len(order), err)
				return nil
			}
			c.say("listed %d", len(order))
		case "finish", "":
			for {
				more, err := read()
				if err != nil {
					c.fail("readdir: getdents64 after %d names: %v", len(order), err)
					return nil
				}
				if !more {
					break
				}
			}
			for i := range n {
				name := fmt.Sprintf("e%03d", i)
				if seen[name] != 1 {
					c.fail("readdir: %s listed %d times", name, seen[name])
				}
				delete(seen, name)
			}
			for name, k := range seen {
				c.fail("readdir: unexpected name %q listed %d times", name, k)
			}
			c.say("ok listed=%d", len(order))
			return nil
		}
	}
}

// toStatLoop: args FILE. A tight loop of getxattr (answered by the daemon every time: the kernel caches no
// xattrs) and lstat of FILE, timing each completed operation on CLOCK_MONOTONIC (the same clock in every
// process). At "stop" it prints "gaps START:END ..." (nanoseconds, every interval over 1 ms without a completed
// operation) and "ok ops=N".
func toStatLoop(c *toChild, args []string) error {
	path := args[0]
	buf := make([]byte, 256)
	var gaps []string
	prev := toMono()
	ops := 0
	c.say("ready")
	for !c.stop.Load() {
		var err error
		if ops%2 == 0 {
			_, err = unix.Getxattr(path, "user.k", buf)
		} else {
			var st unix.Stat_t
			err = unix.Lstat(path, &st)
		}
		now := toMono()
		if err != nil {
			c.fail("statloop op %d at %d: %v", ops, now, err)
		}
		if now-prev > int64(time.Millisecond) {
			gaps = append(gaps, fmt.Sprintf("%d:%d", prev, now))
		}
		prev = now
		ops++
	}
	c.say("gaps %s", strings.Join(gaps, " "))
	c.say("ok ops=%d", ops)
	return nil
}

// toMono is CLOCK_MONOTONIC in nanoseconds: one clock for the test and its children.
func toMono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
