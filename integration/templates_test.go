package integration

// Names and templates (docs/guarantees.md, Names and templates), through a real mount. Where a rule is about processes, a separate process acts: sh,
// or a re-exec of this test binary (see tlReexec below).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tlAlphabet is the contract's alphabet of generated characters (Python's).
const tlAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"

// tlChildModeEnv makes a re-exec of the test binary act as a helper process (tlChildMain) instead of running tests.
const tlChildModeEnv = "TEMPFS_INTEGRATION_CHILD"

func init() {
	// A re-exec'd child must act before TestMain builds anything or parses test flags.
	if mode := os.Getenv(tlChildModeEnv); mode != "" {
		os.Exit(tlChildMain(mode, os.Args[1:]))
	}
}

// tlChildMain is the body of a helper process. It talks on stdin/stdout, one line at a time.
//
//	create TEMPLATE N   prints "ready", waits for a line, creates N files from TEMPLATE and keeps them open,
//	                    printing "INO PATH" for each (PATH from fgetxattr user.tempfs.path), then "done", and
//	                    exits when stdin closes
//	created DIR         prints what getxattr(DIR, user.tempfs.created) answers this process
//	mkdir TEMPLATE DIR  mkdirs TEMPLATE, prints its answer for DIR, waits for a line, prints it again
func tlChildMain(mode string, args []string) int {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	in := bufio.NewReader(os.Stdin)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(out, "ERR "+format+"\n", a...)
		return 1
	}
	switch mode {
	case "create":
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return fail("%v", err)
		}
		fmt.Fprintln(out, "ready")
		out.Flush()
		if _, err := in.ReadString('\n'); err != nil {
			return fail("waiting for go: %v", err)
		}
		lines := make([]string, 0, n)
		for range n {
			fd, err := unix.Open(args[0], unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o666)
			if err != nil {
				return fail("open: %v", err)
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return fail("fstat: %v", err)
			}
			p, err := tlFgetxattr(fd, "user.tempfs.path")
			if err != nil {
				return fail("fgetxattr: %v", err)
			}
			lines = append(lines, fmt.Sprintf("%d %s", st.Ino, p))
		}
		for _, l := range lines {
			fmt.Fprintln(out, l)
		}
		fmt.Fprintln(out, "done")
		out.Flush()
		_, _ = io.Copy(io.Discard, in)
		return 0
	case "created":
		fmt.Fprintln(out, tlCreated(args[0]))
		return 0
	case "mkdir":
		if err := unix.Mkdir(args[0], 0o777); err != nil {
			return fail("mkdir: %v", err)
		}
		fmt.Fprintln(out, tlCreated(args[1]))
		out.Flush()
		if _, err := in.ReadString('\n'); err != nil {
			return fail("waiting: %v", err)
		}
		fmt.Fprintln(out, tlCreated(args[1]))
		return 0
	}
	return fail("unknown child mode %q", mode)
}

// tlCreated is getxattr(dir, "user.tempfs.created") as a line: the name, or "errno:NAME".
func tlCreated(dir string) string {
	v, err := tlGetxattr(dir, "user.tempfs.created")
	if err != nil {
		return "errno:" + tlErrnoName(err)
	}
	return v
}

func tlErrnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// tlReexec is a command running this test binary as a helper process in the given mode.
func tlReexec(t testing.TB, mode string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), tlChildModeEnv+"="+mode)
	return cmd
}

// tlProc is a running helper process read line by line.
type tlProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// tlStartProc starts cmd with piped stdin and stdout; cleanup kills it if it is still running.
func tlStartProc(t testing.TB, cmd *exec.Cmd) *tlProc {
	t.Helper()
	p := &tlProc{cmd: cmd, lines: make(chan string, 4096), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	var stdout io.ReadCloser
	p.stdin, stdout = startTalking(t, cmd)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// line returns the next line the process printed.
func (p *tlProc) line(t testing.TB) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			t.Fatalf("%v exited (%v) before printing a line; stderr:\n%s", p.cmd.Args, p.err, p.stderr.String())
		}
		if strings.HasPrefix(l, "ERR ") {
			t.Fatalf("%v: %s; stderr:\n%s", p.cmd.Args, l, p.stderr.String())
		}
		return l
	case <-time.After(60 * time.Second):
		t.Fatalf("%v printed nothing for 60s; stderr:\n%s", p.cmd.Args, p.stderr.String())
		return ""
	}
}

// expectLine fails unless the next line is want.
func (p *tlProc) expectLine(t testing.TB, want string) {
	t.Helper()
	if got := p.line(t); got != want {
		t.Fatalf("%v printed %q, want %q; stderr:\n%s", p.cmd.Args, got, want, p.stderr.String())
	}
}

func (p *tlProc) send(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, s+"\n"); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *tlProc) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(60 * time.Second):
		t.Fatalf("%v still running after 60s; stderr:\n%s", p.cmd.Args, p.stderr.String())
		return nil
	}
}

// kill sends the process SIGKILL and waits until it is gone.
func (p *tlProc) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.wait(t)
}

// running reports whether the process has not exited yet.
func (p *tlProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func tlGetxattr(path, attr string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(path, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func tlFgetxattr(fd int, attr string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Fgetxattr(fd, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// tlMustXattr is getxattr(path, attr), failing the test on error.
func tlMustXattr(t testing.TB, path, attr string) string {
	t.Helper()
	v, err := tlGetxattr(path, attr)
	if err != nil {
		t.Fatalf("getxattr(%s, %s): %v", path, attr, err)
	}
	return v
}

// tlListxattr is listxattr(path) as a slice.
func tlListxattr(t testing.TB, path string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr(%s): %v", path, err)
	}
	return strings.FieldsFunc(string(buf[:n]), func(r rune) bool { return r == 0 })
}

// tlStats is the daemon's status (`tempfs status --json`), read from the root's user.tempfs.stats.
type tlStats struct {
	Entries     int64 `json:"entries"`
	Files       int64 `json:"files"`
	OpenHandles int64 `json:"open_handles"`
}

func tlReadStats(t testing.TB, m *mount) tlStats {
	t.Helper()
	var s tlStats
	if err := json.Unmarshal([]byte(tlMustXattr(t, m.Dir, "user.tempfs.stats")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// tlFreshDir makes an empty ordinary directory below the mount for one case.
func tlFreshDir(t testing.TB, m *mount, name string) string {
	t.Helper()
	dir := m.Path(name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tlOnlyEntry returns the single name in dir, failing unless there is exactly one.
func tlOnlyEntry(t testing.TB, dir string) string {
	t.Helper()
	names := listDir(t, dir)
	if len(names) != 1 {
		t.Fatalf("%s lists %q, want exactly one entry", dir, names)
	}
	return names[0]
}

// tlOpenTemplate opens path (a template) with O_CREAT and returns the fd and the generated name, which it finds
// in dir's listing (dir must have been empty).
func tlOpenTemplate(t testing.TB, dir, template string, flags int) (int, string) {
	t.Helper()
	fd, err := unix.Open(filepath.Join(dir, template), unix.O_CREAT|unix.O_CLOEXEC|flags, 0o666)
	if err != nil {
		t.Fatalf("open(%s, O_CREAT): %v", template, err)
	}
	tlCloseAtCleanup(t, fd)
	return fd, tlOnlyEntry(t, dir)
}

// tlCloseAtCleanup closes fd when the test ends if it still refers to the file it refers to now. A test that fails
// before its own close must not leave a handle open: the mount could then not be unmounted.
func tlCloseAtCleanup(t testing.TB, fd int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var now unix.Stat_t
		if unix.Fstat(fd, &now) == nil && now.Dev == st.Dev && now.Ino == st.Ino {
			unix.Close(fd)
		}
	})
}

// tlTemplateRE is the contract's shape of a name generated from prefix + run X + suffix.
func tlTemplateRE(prefix string, run int, suffix string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(prefix) + "[a-z0-9_]{" + strconv.Itoa(run) + "}" + regexp.QuoteMeta(suffix) + "$")
}

func tlInode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// tlThread runs functions on one OS thread, for rules about threads and processes.
type tlThread struct{ req chan func() }

func tlNewThread() *tlThread {
	lt := &tlThread{req: make(chan func())}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for f := range lt.req {
			f()
		}
	}()
	return lt
}

// do runs f on the thread and waits for it.
func (lt *tlThread) do(f func()) {
	done := make(chan struct{})
	lt.req <- func() { f(); close(done) }
	<-done
}

func (lt *tlThread) stop() { close(lt.req) }

// TestTemplateConcurrentCreates: 8 processes × 250 concurrent creates of one template give 2,000 distinct names
// and inodes, all of the generated shape, all listed while open, and none left after the processes exit.
func TestTemplateConcurrentCreates(t *testing.T) {
	m := startMount(t)
	dir := tlFreshDir(t, m, "conc")
	const procs, each = 8, 250
	children := make([]*tlProc, procs)
	for i := range children {
		children[i] = tlStartProc(t, tlReexec(t, "create", filepath.Join(dir, "jobXXXXXX"), strconv.Itoa(each)))
	}
	for _, c := range children {
		c.expectLine(t, "ready")
	}
	for _, c := range children {
		c.send(t, "go")
	}
	re := tlTemplateRE("job", 6, "")
	names := map[string]int{}
	inodes := map[string]string{}
	for i, c := range children {
		for range each {
			ino, p, ok := strings.Cut(c.line(t), " ")
			if !ok {
				t.Fatalf("child %d: bad line", i)
			}
			if filepath.Dir(p) != dir {
				t.Fatalf("child %d: user.tempfs.path %q is not in %s", i, p, dir)
			}
			name := filepath.Base(p)
			if !re.MatchString(name) || strings.Contains(name, "X") {
				t.Errorf("generated name %q does not match %v (or contains X)", name, re)
			}
			if prev, dup := names[name]; dup {
				t.Errorf("name %q given to child %d and child %d", name, prev, i)
			}
			names[name] = i
			if prev, dup := inodes[ino]; dup {
				t.Errorf("inode %s given to %q and %q", ino, prev, name)
			}
			inodes[ino] = name
		}
		c.expectLine(t, "done")
	}
	if len(names) != procs*each || len(inodes) != procs*each {
		t.Fatalf("%d distinct names, %d distinct inodes, want %d", len(names), len(inodes), procs*each)
	}
	listed := listDir(t, dir)
	if len(listed) != procs*each {
		t.Errorf("readdir lists %d entries while %d files are open", len(listed), procs*each)
	}
	for _, n := range listed {
		if _, ok := names[n]; !ok {
			t.Errorf("readdir lists %q, which no child created", n)
		}
	}
	for _, c := range children {
		if err := c.stdin.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range children {
		if err := c.wait(t); err != nil {
			t.Fatalf("child %d: %v; stderr:\n%s", i, err, c.stderr.String())
		}
	}
	// Wait on the daemon's counters (a getxattr on the root), not on readdir: 2,000-entry listings in a
	// tight loop compete with the releases for the directory's lock.
	eventually(t, 60*time.Second, "all 2,000 files released after their processes exited", func() bool {
		st := daemonStats(t, m.Dir)
		return st["open_handles"].(float64) == 0 && st["files"].(float64) == 0
	})
	if left := listDir(t, dir); len(left) != 0 {
		t.Errorf("%d files still listed after every handle was released", len(left))
	}
}

// TestTemplateNames covers the shape of generated names, EINVAL for two runs, O_EXCL, lookups of templates,
// readdir, name length, and the last-component rule, on one mount.
func TestTemplateNames(t *testing.T) {
	m := startMount(t)
	n := 0
	fresh := func(t *testing.T) string {
		n++
		return tlFreshDir(t, m, fmt.Sprintf("case%d", n))
	}

	t.Run("Shapes", func(t *testing.T) {
		cases := []struct {
			template, prefix, suffix string
			run                      int
		}{
			{"jobXXXXXX", "job", "", 6},
			{"XXXXXX", "", "", 6},
			{"aXXXXXX.txt", "a", ".txt", 6},
			{"XXXXXXXXXXXX", "", "", 12},
			{"pre.XXXXXXXX.suf", "pre.", ".suf", 8},
			{"aXXXb_XXXXXX", "aXXXb_", "", 6},      // a run shorter than 6 is part of the prefix
			{"aXXXXXbXXXXXXXc", "aXXXXXb", "c", 7}, // the only run of ≥6 is replaced, whole
		}
		for _, c := range cases {
			for _, kind := range []string{"file", "dir"} {
				dir := fresh(t)
				var name string
				if kind == "file" {
					var fd int
					fd, name = tlOpenTemplate(t, dir, c.template, unix.O_RDWR)
					defer unix.Close(fd)
				} else {
					if err := unix.Mkdir(filepath.Join(dir, c.template), 0o777); err != nil {
						t.Fatalf("mkdir %s: %v", c.template, err)
					}
					name = tlOnlyEntry(t, dir)
				}
				if re := tlTemplateRE(c.prefix, c.run, c.suffix); !re.MatchString(name) {
					t.Errorf("%s from %q is named %q, want %v", kind, c.template, name, re)
				}
				if generated := name[len(c.prefix) : len(name)-len(c.suffix)]; strings.Contains(generated, "X") {
					t.Errorf("%s from %q: generated part %q contains X", kind, c.template, generated)
				}
				if strings.Contains(name, "XXXXXX") {
					t.Errorf("%s from %q: generated name %q is itself a template", kind, c.template, name)
				}
			}
		}
	})

	t.Run("FiveXIsOrdinary", func(t *testing.T) {
		dir := fresh(t)
		p := filepath.Join(dir, "aXXXXX")
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, dir); !slices.Equal(got, []string{"aXXXXX"}) {
			t.Fatalf("a 5-X name is ordinary: readdir %q, want [aXXXXX]", got)
		}
		tlWaitHandles(t, m, 0)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("a 5-X name is kept after close: %v", err)
		}
	})

	t.Run("TwoRunsEINVAL", func(t *testing.T) {
		dir := fresh(t)
		for _, name := range []string{"aXXXXXXbXXXXXX", "XXXXXX.XXXXXX", "XXXXXXX_XXXXXXXXX.txt"} {
			p := filepath.Join(dir, name)
			if fd, err := unix.Open(p, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600); !errors.Is(err, unix.EINVAL) {
				if err == nil {
					unix.Close(fd)
				}
				t.Errorf("open(%q, O_CREAT) = %v, want EINVAL", name, err)
			}
			if err := unix.Mkdir(p, 0o700); !errors.Is(err, unix.EINVAL) {
				t.Errorf("mkdir(%q) = %v, want EINVAL", name, err)
			}
		}
		if got := listDir(t, dir); len(got) != 0 {
			t.Errorf("refused templates left entries: %q", got)
		}
	})

	t.Run("Exclusive", func(t *testing.T) {
		dir := fresh(t)
		p := filepath.Join(dir, "exXXXXXX")
		fd1, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatalf("first open(O_CREAT|O_EXCL): %v", err)
		}
		defer unix.Close(fd1)
		fd2, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatalf("second open(O_CREAT|O_EXCL) of the same template: %v", err)
		}
		defer unix.Close(fd2)
		if tlInode(t, fd1) == tlInode(t, fd2) {
			t.Fatal("two O_EXCL creates of one template returned the same inode")
		}
		if got := listDir(t, dir); len(got) != 2 {
			t.Fatalf("readdir %q, want two generated names", got)
		}
	})

	t.Run("LookupENOENT", func(t *testing.T) {
		dir := fresh(t)
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		defer unix.Close(fd)
		p := filepath.Join(dir, "jobXXXXXX")
		// Even right after a create through it, and while that file is open, the template finds nothing.
		for range 3 {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); !errors.Is(err, unix.ENOENT) {
				t.Errorf("stat(template) = %v, want ENOENT", err)
			}
			if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
				t.Errorf("lstat(template) = %v, want ENOENT", err)
			}
			for _, flags := range []int{unix.O_RDONLY, unix.O_RDWR, unix.O_WRONLY | unix.O_TRUNC} {
				if fd2, err := unix.Open(p, flags|unix.O_CLOEXEC, 0); !errors.Is(err, unix.ENOENT) {
					if err == nil {
						unix.Close(fd2)
					}
					t.Errorf("open(template, %#x) without O_CREAT = %v, want ENOENT", flags, err)
				}
			}
			if err := unix.Access(p, unix.F_OK); !errors.Is(err, unix.ENOENT) {
				t.Errorf("access(template) = %v, want ENOENT", err)
			}
		}
		// A create through the template right after is a new file, never the one bound a moment ago.
		fd2, err := unix.Open(p, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd2)
		if tlInode(t, fd) == tlInode(t, fd2) {
			t.Fatal("open(O_CREAT) of a template returned the file made from it a moment before")
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("the generated name is found by stat: %v", err)
		}
	})

	t.Run("ReaddirHidesTemplates", func(t *testing.T) {
		dir := fresh(t)
		var fds []int
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		for i := range 20 {
			var err error
			if i%4 == 3 {
				err = unix.Mkdir(filepath.Join(dir, "dirXXXXXX"), 0o700)
			} else {
				var fd int
				fd, err = unix.Open(filepath.Join(dir, "jobXXXXXX"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
				fds = append(fds, fd)
			}
			if err != nil {
				t.Fatal(err)
			}
			names := listDir(t, dir)
			if len(names) != i+1 {
				t.Fatalf("after %d creates readdir lists %d entries: %q", i+1, len(names), names)
			}
			for _, name := range names {
				if strings.Contains(name, "XXXXXX") {
					t.Fatalf("readdir right after a create lists the template %q", name)
				}
			}
		}
	})

	t.Run("NameLength", func(t *testing.T) {
		dir := fresh(t)
		long := strings.Repeat("a", 250) + "XXXXXX" // 256 bytes
		if fd, err := unix.Open(filepath.Join(dir, long), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600); !errors.Is(err, unix.ENAMETOOLONG) {
			if err == nil {
				unix.Close(fd)
			}
			t.Errorf("open of a 256-byte template = %v, want ENAMETOOLONG", err)
		}
		if err := unix.Mkdir(filepath.Join(dir, long), 0o700); !errors.Is(err, unix.ENAMETOOLONG) {
			t.Errorf("mkdir of a 256-byte template = %v, want ENAMETOOLONG", err)
		}
		fd, name := tlOpenTemplate(t, dir, long[1:], unix.O_RDWR) // 255 bytes: allowed
		defer unix.Close(fd)
		if len(name) != 255 || !tlTemplateRE(strings.Repeat("a", 249), 6, "").MatchString(name) {
			t.Errorf("255-byte template made %q (%d bytes)", name, len(name))
		}
	})

	t.Run("LastComponentOnly", func(t *testing.T) {
		dir := fresh(t)
		if err := unix.Mkdir(filepath.Join(dir, "aXXXXXX"), 0o777); err != nil {
			t.Fatal(err)
		}
		sub := tlOnlyEntry(t, dir)
		if !tlTemplateRE("a", 6, "").MatchString(sub) {
			t.Fatalf("mkdir aXXXXXX made %q", sub)
		}
		// The parent is an ordinary directory now: an ordinary name inside it is an ordinary file.
		plain := filepath.Join(dir, sub, "plain")
		if err := os.WriteFile(plain, []byte("kept"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A template inside it is a template file, reached through the generated parent.
		fd, err := unix.Open(filepath.Join(dir, sub, "fXXXXXX"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		tlCloseAtCleanup(t, fd)
		if got := listDir(t, filepath.Join(dir, sub)); len(got) != 2 {
			t.Fatalf("%s lists %q, want plain and one generated file", sub, got)
		}
		unix.Close(fd)
		tlWaitHandles(t, m, 0)
		if got := listDir(t, filepath.Join(dir, sub)); !slices.Equal(got, []string{"plain"}) {
			t.Fatalf("after every close %s lists %q, want only [plain]", sub, got)
		}
		if data, err := os.ReadFile(plain); err != nil || string(data) != "kept" {
			t.Fatalf("ordinary file in a generated directory: %q, %v", data, err)
		}
		if v := tlMustXattr(t, plain, "user.tempfs.lifetime"); v != "keep" {
			t.Errorf("lifetime of an ordinary file in a generated directory = %q, want keep", v)
		}
		// A path through the template itself is not the generated directory: the template finds nothing.
		if fd, err := unix.Open(filepath.Join(dir, "aXXXXXX", "file"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600); !errors.Is(err, unix.ENOENT) {
			if err == nil {
				unix.Close(fd)
			}
			t.Errorf("open(aXXXXXX/file, O_CREAT) = %v, want ENOENT", err)
		}
	})
}

// TestTemplateModesAndOwner: entries made from a template are 0600 files and 0700 directories whatever mode was
// asked (umask 0, mode 0666/0777), owned by the caller's uid and gid; ordinary names keep the asked mode.
func TestTemplateModesAndOwner(t *testing.T) {
	m := startMount(t, "-o", "allow_other")
	// The mountpoint's parents must be searchable by the unprivileged user.
	for p := filepath.Dir(m.Dir); p != "/" && strings.HasPrefix(p, os.TempDir()) && p != filepath.Clean(os.TempDir()); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shared := tlFreshDir(t, m, "shared")
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}

	t.Run("AskedModeIgnored", func(t *testing.T) {
		dir := tlFreshDir(t, m, "modes")
		out := sh(t, dir, `umask 0
exec 3<>"$PWD/fXXXXXX"
stat -L -c '%a' /proc/$$/fd/3
mkdir "$PWD/dXXXXXX"
for d in "$PWD"/d*; do stat -c '%a %F' "$d"; done
: > "$PWD/plain"
mkdir "$PWD/plaindir"
stat -c '%a' "$PWD/plain" "$PWD/plaindir"`)
		want := "600\n700 directory\n666\n777\n"
		if out != want {
			t.Fatalf("with umask 0: file/dir from a template, then an ordinary file/dir:\n got %q\nwant %q", out, want)
		}
		// Same from this process, with an explicit mode on the syscalls.
		fd, err := unix.Open(filepath.Join(dir, "gXXXXXX"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o600 {
			t.Errorf("open(template, 0666) made mode %o, want 600", st.Mode&0o7777)
		}
	})

	t.Run("Owner", func(t *testing.T) {
		const nobody = 65534
		cmd := exec.Command("sh", "-ec", `exec 3<>"$D/fXXXXXX"
stat -L -c '%a %u %g' /proc/$$/fd/3
mkdir "$D/dXXXXXX"
for d in "$D"/d*; do stat -c '%a %u %g %F' "$d"; done`)
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), "D="+shared)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("as uid %d: %v\n%s", nobody, err, out)
		}
		want := fmt.Sprintf("600 %d %d\n700 %d %d directory\n", nobody, nobody, nobody, nobody)
		if string(out) != want {
			t.Fatalf("entries made from a template by uid/gid %d:\n got %q\nwant %q", nobody, out, want)
		}
	})
}

// TestTemplateXattrs covers name discovery: user.tempfs.created (per process), user.tempfs.path (via the path,
// the fd and /proc/self/fd/N), and listxattr.
func TestTemplateXattrs(t *testing.T) {
	m := startMount(t)

	t.Run("MkdirFreshEachTime", func(t *testing.T) {
		// One thread: this case is about processes (CreatedAcrossThreads covers threads).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		dir := tlFreshDir(t, m, "mkdirs")
		seen := map[string]bool{}
		for i := range 5 {
			if err := unix.Mkdir(filepath.Join(dir, "tmpXXXXXX"), 0o777); err != nil {
				t.Fatal(err)
			}
			created := tlCreated(dir)
			if !tlTemplateRE("tmp", 6, "").MatchString(created) {
				t.Fatalf("user.tempfs.created after mkdir = %q", created)
			}
			if seen[created] {
				t.Fatalf("mkdir %d of a template reused %q", i, created)
			}
			seen[created] = true
			names := listDir(t, dir)
			if len(names) != i+1 || !slices.Contains(names, created) {
				t.Fatalf("readdir %q after mkdir %d, created says %q", names, i, created)
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(dir, created), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != 0o700 {
				t.Fatalf("%s: mode %o, want a 0700 directory", created, st.Mode)
			}
		}
	})

	t.Run("CreatedIsPerProcess", func(t *testing.T) {
		// One thread: this case is about processes (CreatedAcrossThreads covers threads).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		dir := tlFreshDir(t, m, "perproc")
		if err := unix.Mkdir(filepath.Join(dir, "mineXXXXXX"), 0o700); err != nil {
			t.Fatal(err)
		}
		mine := tlCreated(dir)
		if !tlTemplateRE("mine", 6, "").MatchString(mine) {
			t.Fatalf("created = %q", mine)
		}
		// A process that made nothing here learns nothing.
		out, err := tlReexec(t, "created", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "errno:ENODATA" {
			t.Errorf("another process asking for user.tempfs.created got %q, want ENODATA", got)
		}
		// A process that made its own entry learns its own name; this process still learns its own.
		c := tlStartProc(t, tlReexec(t, "mkdir", filepath.Join(dir, "theirsXXXXXX"), dir))
		theirs := c.line(t)
		if !tlTemplateRE("theirs", 6, "").MatchString(theirs) {
			t.Fatalf("the other process's created = %q", theirs)
		}
		if names := listDir(t, dir); !slices.Contains(names, theirs) || !slices.Contains(names, mine) || len(names) != 2 {
			t.Fatalf("readdir %q, want %q and %q", names, mine, theirs)
		}
		if got := tlCreated(dir); got != mine {
			t.Errorf("after another process's mkdir, this process's created = %q, want its own %q", got, mine)
		}
		c.send(t, "again")
		if got := c.line(t); got != theirs {
			t.Errorf("the other process asked again and got %q, want %q", got, theirs)
		}
		if err := c.wait(t); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("CreatedAcrossThreads", func(t *testing.T) {
		// The rule speaks of processes: the last entry any thread of this process made is the answer on every
		// thread. Two goroutines locked to two OS threads make one directory each.
		dir := tlFreshDir(t, m, "threads")
		a, b := tlNewThread(), tlNewThread()
		defer a.stop()
		defer b.stop()
		var tidA, tidB int
		var errA, errB error
		a.do(func() { tidA, errA = unix.Gettid(), unix.Mkdir(filepath.Join(dir, "aXXXXXX"), 0o700) })
		b.do(func() { tidB, errB = unix.Gettid(), unix.Mkdir(filepath.Join(dir, "bXXXXXX"), 0o700) })
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if tidA == tidB {
			t.Fatal("two locked goroutines ran on one thread")
		}
		var bName string
		for _, n := range listDir(t, dir) {
			if strings.HasPrefix(n, "b") {
				bName = n
			}
		}
		if bName == "" {
			t.Fatalf("readdir %q: no directory made from bXXXXXX", listDir(t, dir))
		}
		for i, th := range []*tlThread{a, b} {
			var got string
			th.do(func() { got = tlCreated(dir) })
			if got != bName {
				t.Errorf("thread %d asked for user.tempfs.created after the process's last mkdir made %q: got %q", i, bName, got)
			}
		}
	})

	t.Run("CreatedAfterThreadExit", func(t *testing.T) {
		// A thread that made an entry and then ended was still this process: the process keeps its answer.
		// A goroutine that ends while locked to its thread ends the thread, except on the main thread, which Go
		// keeps: try until the creating thread is really gone.
		var dir, name string
		for attempt := 0; ; attempt++ {
			dir = tlFreshDir(t, m, fmt.Sprintf("threadexit%d", attempt))
			type made struct {
				tid int
				err error
			}
			ch := make(chan made)
			go func() {
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				ch <- made{unix.Gettid(), unix.Mkdir(filepath.Join(dir, "goneXXXXXX"), 0o700)}
			}()
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			name = tlOnlyEntry(t, dir)
			task := fmt.Sprintf("/proc/self/task/%d", r.tid)
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
				break
			}
			if attempt == 5 {
				t.Skip("could not get a thread that ends")
			}
		}
		if got := tlCreated(dir); got != name {
			t.Fatalf("user.tempfs.created after the creating thread of this process ended = %q, want %q", got, name)
		}
	})

	t.Run("Path", func(t *testing.T) {
		dir := tlFreshDir(t, m, "paths")
		sub := filepath.Join(dir, "nested")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		fd, name := tlOpenTemplate(t, sub, "jobXXXXXX", unix.O_RDWR)
		defer unix.Close(fd)
		want := filepath.Join(sub, name)
		if !filepath.IsAbs(want) {
			t.Fatalf("mount path %q is not absolute", want)
		}
		check := func(what, got string, err error) {
			t.Helper()
			if err != nil || got != want {
				t.Errorf("user.tempfs.path via %s = %q, %v; want %q", what, got, err, want)
			}
		}
		got, err := tlGetxattr(want, "user.tempfs.path")
		check("the path", got, err)
		got, err = tlFgetxattr(fd, "user.tempfs.path")
		check("fgetxattr", got, err)
		got, err = tlGetxattr(fmt.Sprintf("/proc/self/fd/%d", fd), "user.tempfs.path")
		check("/proc/self/fd/N", got, err)

		// Directories answer too, and a rename moves the answer.
		dfd, err := unix.Open(sub, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dfd)
		if got, err := tlFgetxattr(dfd, "user.tempfs.path"); err != nil || got != sub {
			t.Errorf("directory user.tempfs.path = %q, %v; want %q", got, err, sub)
		}
		if err := os.Rename(want, filepath.Join(dir, "moved")); err != nil {
			t.Fatal(err)
		}
		want = filepath.Join(dir, "moved")
		got, err = tlFgetxattr(fd, "user.tempfs.path")
		check("fgetxattr after rename", got, err)
		if got, err := tlGetxattr(m.Dir, "user.tempfs.path"); err != nil || got != m.Dir {
			t.Errorf("root user.tempfs.path = %q, %v; want %q", got, err, m.Dir)
		}
	})

	t.Run("Listxattr", func(t *testing.T) {
		// The user.tempfs.* names are answered but not listed (as CephFS hides its virtual ceph.* names),
		// so that cp -a, rsync -X and tar --xattrs neither copy them out as stale attributes nor fail
		// copying in; stored user.* attributes are listed as usual.
		dir := tlFreshDir(t, m, "list")
		fd, name := tlOpenTemplate(t, dir, "jobXXXXXX", unix.O_RDWR)
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, "user.mine", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			path    string
			virtual []string
			stored  []string
		}{
			{filepath.Join(dir, name), []string{"user.tempfs.path", "user.tempfs.lifetime", "user.tempfs.spool"}, []string{"user.mine"}},
			{fmt.Sprintf("/proc/self/fd/%d", fd), []string{"user.tempfs.path", "user.tempfs.lifetime", "user.tempfs.spool"}, []string{"user.mine"}},
			{dir, []string{"user.tempfs.path", "user.tempfs.lifetime"}, nil},
		} {
			got := tlListxattr(t, c.path)
			if !slices.Equal(got, c.stored) && !(len(got) == 0 && len(c.stored) == 0) {
				t.Errorf("listxattr(%s) = %q, want exactly the stored %q", c.path, got, c.stored)
			}
			for _, v := range c.virtual {
				if _, err := tlGetxattr(c.path, v); err != nil {
					t.Errorf("getxattr(%s, %s): %v", c.path, v, err)
				}
			}
		}
	})
}

// TestTemplateUnguessable: 1,000 consecutive names from one template are distinct, use the whole alphabet
// evenly, and consecutive names share no more leading or trailing characters than chance allows.
func TestTemplateUnguessable(t *testing.T) {
	m := startMount(t)
	dir := tlFreshDir(t, m, "guess")
	const count, run = 1000, 6
	names := make([]string, 0, count)
	// One thread, so that user.tempfs.created is asked by the thread that made the entry.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range count {
		if err := unix.Mkdir(filepath.Join(dir, "XXXXXX"), 0o700); err != nil {
			t.Fatal(err)
		}
		names = append(names, tlCreated(dir))
	}
	listed := listDir(t, dir)
	slices.Sort(listed)
	sorted := slices.Sorted(slices.Values(names))
	if !slices.Equal(listed, sorted) {
		t.Fatalf("user.tempfs.created answers and readdir disagree (%d vs %d names)", len(sorted), len(listed))
	}
	if len(slices.Compact(sorted)) != count {
		t.Fatalf("%d consecutive names from one template are not all distinct", count)
	}
	re := tlTemplateRE("", run, "")
	perPos := make([]map[rune]int, run)
	for i := range perPos {
		perPos[i] = map[rune]int{}
	}
	all := map[rune]int{}
	for _, n := range names {
		if !re.MatchString(n) {
			t.Fatalf("name %q is not %d chars of the alphabet", n, run)
		}
		for i, r := range n {
			perPos[i][r]++
			all[r]++
		}
	}
	// Chi-square against the uniform distribution on the 37 characters (36 degrees of freedom). 100 is
	// exceeded by chance with probability below 1e-7: a fair generator never fails, a biased or
	// counter-like one (a fixed position, a smaller alphabet) fails by far.
	chi2 := func(counts map[rune]int, total int) float64 {
		exp := float64(total) / float64(len(tlAlphabet))
		s := 0.0
		for _, r := range tlAlphabet {
			d := float64(counts[r]) - exp
			s += d * d / exp
		}
		return s
	}
	if len(all) != len(tlAlphabet) {
		t.Errorf("%d characters used in %d names, want all %d of %q", len(all), count, len(tlAlphabet), tlAlphabet)
	}
	if x := chi2(all, count*run); x > 100 {
		t.Errorf("characters are not uniform: chi-square %.1f over all positions", x)
	}
	for i, c := range perPos {
		if x := chi2(c, count); x > 100 {
			t.Errorf("position %d is not uniform: chi-square %.1f", i, x)
		}
	}
	// Consecutive names: sharing the first (or last) 3 characters happens with probability 1/37³ per pair,
	// about 0.02 times in 999 pairs; 4 or more is below 1e-8 by chance. Sharing the first character
	// happens about 27 times in 999 pairs; 80 is far beyond chance.
	var head3, tail3, head1 int
	for i := 1; i < count; i++ {
		a, b := names[i-1], names[i]
		if a[:3] == b[:3] {
			head3++
		}
		if a[run-3:] == b[run-3:] {
			tail3++
		}
		if a[0] == b[0] {
			head1++
		}
	}
	if head3 > 3 || tail3 > 3 || head1 > 80 {
		t.Errorf("consecutive names share structure: first 3 chars %d times, last 3 chars %d times, first char %d times (of %d pairs)", head3, tail3, head1, count-1)
	}
}

// TestTemplateFirstWriteRaces: the first write to a file made from a template waits (briefly) for the kernel to
// drop its dentry for the template name, which needs the directory's lock; a rename or unlink of the file's real
// name at the same moment holds that lock and waits for the writer. Every such pair must finish, the write must
// land, and a renamed file must keep it.
func TestTemplateFirstWriteRaces(t *testing.T) {
	m := startMount(t)
	const rounds = 300
	finished := make(chan error, 1)
	go func() {
		for i := range rounds {
			fd, err := unix.Open(m.Path("jobXXXXXX"), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
			if err != nil {
				finished <- fmt.Errorf("round %d: open: %w", i, err)
				return
			}
			real, err := tlFgetxattr(fd, "user.tempfs.path")
			if err != nil {
				unix.Close(fd)
				finished <- fmt.Errorf("round %d: fgetxattr: %w", i, err)
				return
			}
			kept := m.Path(fmt.Sprintf("kept%d", i))
			var wg sync.WaitGroup
			var werr, rerr error
			wg.Go(func() { _, werr = unix.Write(fd, []byte("written")) })
			wg.Go(func() {
				if i%2 == 0 {
					rerr = unix.Rename(real, kept)
				} else {
					rerr = unix.Unlink(real)
				}
			})
			wg.Wait()
			unix.Close(fd)
			if werr != nil || rerr != nil {
				finished <- fmt.Errorf("round %d: write: %v; rename/unlink: %v", i, werr, rerr)
				return
			}
			if i%2 == 0 {
				if got, err := os.ReadFile(kept); err != nil || string(got) != "written" {
					finished <- fmt.Errorf("round %d: renamed file reads %q, %v; want %q", i, got, err, "written")
					return
				}
			}
		}
		finished <- nil
	}()
	// A liveness bound, not a timing: 300 rounds take well under a second; a deadlock never ends.
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("a first write and a rename or unlink of the same file did not finish: deadlock")
	}
	if got := len(listDir(t, m.Dir)); got != rounds/2 {
		t.Errorf("%d entries after the rounds, want the %d renamed files", got, rounds/2)
	}
}
