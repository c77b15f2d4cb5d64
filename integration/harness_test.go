// Package integration runs the built tempfs binary against real mounts and checks its guarantees
// (docs/guarantees.md) from separate processes. It never imports the project's packages.
package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tempfsBin is the binary under test, built once by TestMain.
var tempfsBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tempfs-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tempfsBin = filepath.Join(dir, "tempfs")
	args := []string{"build", "-o", tempfsBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/tempfs/tempfs/cmd/tempfs")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tempfs:", err)
		return 1
	}
	return m.Run()
}

// requireFUSE skips a test that needs a real mount when the machine cannot mount; in CI (CI=true) that is a
// failure instead, so that integration tests can never be skipped silently there.
func requireFUSE(t testing.TB) {
	t.Helper()
	reason := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "no /dev/fuse"
	} else if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			reason = "not root and no fusermount3"
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot mount (%s), and CI=true forbids skipping integration tests", reason)
	}
	t.Skipf("cannot mount: %s", reason)
}

// syncBuffer collects a daemon's stderr while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mount is a running `tempfs mount` serving Dir, with its disk store under StoreParent.
type mount struct {
	Dir         string
	StoreParent string
	cmd         *exec.Cmd
	log         *syncBuffer
	exited      chan struct{}
	exitErr     error
	stopped     bool
}

// startMount runs `tempfs mount --ready-fd=3 --store STORE [args] DIR` and returns once the daemon wrote
// "ready" on fd 3 (no sleeps). Cleanup unmounts with SIGTERM and fails the test if the daemon does not exit
// cleanly, a mount is left, or the store directory is left behind.
func startMount(t testing.TB, args ...string) *mount {
	t.Helper()
	requireFUSE(t)
	return startMountAt(t, t.TempDir(), t.TempDir(), args...)
}

// startMountAt is startMount on a given mountpoint and store parent (to remount after a crash).
func startMountAt(t testing.TB, dir, storeParent string, args ...string) *mount {
	t.Helper()
	return startMountEnv(t, dir, storeParent, nil, args...)
}

// startMountEnv is startMountAt with extra environment variables for the daemon.
func startMountEnv(t testing.TB, dir, storeParent string, env []string, args ...string) *mount {
	t.Helper()
	return launchMount(t, dir, storeParent, env, nil, args...)
}

// startMountAs is startMount with the daemon started under attr (another uid or gid, say).
func startMountAs(t testing.TB, attr *syscall.SysProcAttr, args ...string) *mount {
	t.Helper()
	requireFUSE(t)
	return launchMount(t, t.TempDir(), t.TempDir(), nil, attr, args...)
}

func launchMount(t testing.TB, dir, storeParent string, env []string, attr *syscall.SysProcAttr, args ...string) *mount {
	t.Helper()
	return launchMountVia(t, nil, dir, storeParent, env, attr, args...)
}

// launchMountVia is launchMount with the daemon started through a wrapper command that execs it in its own
// process (unshare without --fork, say), so that the wrapper's pid is the daemon's.
func launchMountVia(t testing.TB, wrapper []string, dir, storeParent string, env []string, attr *syscall.SysProcAttr, args ...string) *mount {
	t.Helper()
	requireFUSE(t)
	m := &mount{Dir: dir, StoreParent: storeParent, log: &syncBuffer{}, exited: make(chan struct{})}
	full := append([]string{"mount", "--store", m.StoreParent}, args...)
	full = append(full, m.Dir)
	full = append([]string{tempfsBin}, full...)
	if wrapper != nil {
		full = append(slices.Clone(wrapper), full...)
	}
	if env != nil {
		env = append(os.Environ(), env...)
	}
	switch l, ok := m.startReady(t, full, env, attr); {
	case !ok:
		_ = m.cmd.Process.Kill()
		t.Fatalf("tempfs mount: no ready signal after 60s; log:\n%s", m.log.String())
	case l != "ready":
		<-m.exited
		t.Fatalf("tempfs mount did not become ready: %q; exit: %v; log:\n%s", l, m.exitErr, m.log.String())
	}
	t.Cleanup(func() { m.stop(t) })
	return m
}

// startReady starts argv (a tempfs mount command, possibly after a wrapper's words; --ready-fd=3 is added after
// "mount") as m's daemon, with env
// (nil: this process's) and attr, and returns the first line it writes to its ready descriptor: "ready", or
// an error; ok is false when none came within 60 s.
func (m *mount) startReady(t testing.TB, argv, env []string, attr *syscall.SysProcAttr) (line string, ok bool) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(argv, tempfsBin) // after a wrapper's words, if any
	if i < 0 || i+1 >= len(argv) || argv[i+1] != "mount" {
		t.Fatalf("not a tempfs mount command: %q", argv)
	}
	argv = slices.Insert(slices.Clone(argv), i+2, "--ready-fd=3")
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.Env = env
	m.cmd.SysProcAttr = attr
	m.cmd.ExtraFiles = []*os.File{w}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		m.exitErr = m.cmd.Wait()
		close(m.exited)
	}()
	lines := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		r.Close()
		lines <- strings.TrimSpace(s)
	}()
	select {
	case l := <-lines:
		return l, true
	case <-time.After(60 * time.Second):
		return "", false
	}
}

// Path joins names below the mountpoint.
func (m *mount) Path(elem ...string) string {
	return filepath.Join(append([]string{m.Dir}, elem...)...)
}

// Pid is the daemon's process id.
func (m *mount) Pid() int { return m.cmd.Process.Pid }

// Log is what the daemon wrote on stderr so far.
func (m *mount) Log() string { return m.log.String() }

// LogWith waits until the daemon's log holds text (its stderr reaches Log through a pipe this process copies
// from, so a line written before the ready signal or before a request's answer may arrive a moment later) and
// returns the log; after 10 s it returns the log as it is.
func (m *mount) LogWith(text string) string {
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.Log(), text) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return m.Log()
}

// crash kills the daemon with SIGKILL and waits for it to die, leaving a dead FUSE mount at Dir and the
// daemon's store directory behind; cleanup then only detaches the dead mount.
func (m *mount) crash(t testing.TB) {
	t.Helper()
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		abortConnection(m.Dir)
		<-m.exited
	}
	m.stopped = true
	t.Cleanup(func() {
		if isMounted(m.Dir) {
			_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
		}
	})
}

// stop unmounts with SIGTERM and checks that everything is gone.
func (m *mount) stop(t testing.TB) {
	t.Helper()
	if m.stopped {
		return
	}
	m.stopped = true
	select {
	case <-m.exited:
	default:
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		abortConnection(m.Dir)
		_ = m.cmd.Process.Kill()
		<-m.exited
		_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
		t.Errorf("tempfs mount did not exit 30s after SIGTERM; log:\n%s", m.log.String())
		return
	}
	if m.exitErr != nil {
		t.Errorf("tempfs mount exited with %v; log:\n%s", m.exitErr, m.log.String())
	}
	if isMounted(m.Dir) {
		_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
		t.Errorf("%s is still mounted after the daemon exited", m.Dir)
	}
	if left := storeDirs(t, m.StoreParent); len(left) > 0 {
		t.Errorf("store directories left behind: %v", left)
	}
}

// wait waits for the daemon to exit on its own (after an external unmount) and returns its exit error.
func (m *mount) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-m.exited:
		return m.exitErr
	case <-time.After(d):
		t.Fatalf("daemon still running after %v; log:\n%s", d, m.log.String())
		return nil
	}
}

// expectExit waits for the daemon to exit on its own (after `tempfs unmount`, or a signal the test sent) and
// then checks what stop checks: exit status 0, no mount and no store directory left.
func (m *mount) expectExit(t testing.TB, within time.Duration) {
	t.Helper()
	_ = m.wait(t, within)
	m.stop(t)
}

// storeDirs lists tempfs store directories under parent.
func storeDirs(t testing.TB, parent string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(parent, "tempfs-store-*"))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

// isMounted reports whether dir is a mountpoint in /proc/self/mountinfo.
func isMounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// abortConnection aborts the FUSE connection of dir, for a daemon that hangs: one killed with a request to its
// own mount in flight can hang at exit until then (docs/kernel.md, Hangs).
func abortConnection(dir string) {
	if entries, err := os.ReadDir("/sys/fs/fuse/connections"); err != nil || len(entries) == 0 {
		_ = syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "") // not mounted everywhere
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			if _, minor, ok := strings.Cut(f[2], ":"); ok {
				_ = os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0)
			}
		}
	}
}

// eventually polls cond until it holds or the deadline passes: the kernel releases handles asynchronously, so a
// name made from a template goes within milliseconds after the last close, not necessarily before close returns.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	// Back off from 1 ms to 20 ms: a condition that reads a large directory must not keep the daemon busy
	// serving the polls while it has releases to process.
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// startReading starts cmd with one of its outputs piped back for the test to read (pipe is cmd.StdoutPipe or
// cmd.StderrPipe); the test fails if it cannot.
func startReading(t testing.TB, cmd *exec.Cmd, pipe func() (io.ReadCloser, error)) io.ReadCloser {
	t.Helper()
	out, err := pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return out
}

// startTalking starts cmd with its stdin piped from the test and its stdout back to it.
func startTalking(t testing.TB, cmd *exec.Cmd) (stdin io.WriteCloser, stdout io.ReadCloser) {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	return in, startReading(t, cmd, cmd.StdoutPipe)
}

// sh runs a shell command line in dir from a separate process and returns its combined output.
func sh(t testing.TB, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v\n%s", script, err, out)
	}
	return string(out)
}

// shFails runs a shell command that must fail, and returns its output.
func shFails(t testing.TB, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("sh -c %q should have failed, got err=%v\n%s", script, err, out)
	}
	return string(out)
}

// listDir returns the names in dir (readdir through the mount).
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}

// daemonStats reads a mount's status from the root's user.tempfs.stats (the fields of `tempfs status --json`).
func daemonStats(t testing.TB, dir string) map[string]any {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := syscall.Getxattr(dir, "user.tempfs.stats", buf)
	if err != nil {
		t.Fatalf("getxattr %s user.tempfs.stats: %v", dir, err)
	}
	var st map[string]any
	if err := json.Unmarshal(buf[:n], &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// deletedStoreFds counts the daemon's descriptors of unlinked files under store: its backing files (unlinked
// from the start, so /proc shows them as "STORE/... (deleted)", unlike the store directory and its lock
// file). It is how a test sees from outside that a disk-resident file's data is still held or freed.
func deletedStoreFds(t testing.TB, m *mount, store string) int {
	t.Helper()
	return deletedStoreFdsOf(t, m.Pid(), store)
}

// deletedStoreFdsOf is deletedStoreFds of any process: a held daemon, or the holder keeping its descriptors.
func deletedStoreFdsOf(t testing.TB, pid int, store string) int {
	t.Helper()
	n := 0
	for _, target := range pidFdTargets(t, pid) {
		if strings.HasPrefix(target, store+"/") && strings.HasSuffix(target, " (deleted)") {
			n++
		}
	}
	return n
}

// daemonFdTargets lists what the daemon's open descriptors point to, as /proc/PID/fd shows it.
func daemonFdTargets(t testing.TB, m *mount) []string {
	t.Helper()
	return pidFdTargets(t, m.Pid())
}

// pidFdTargets lists what process pid's open descriptors point to (a held daemon's, its holder's).
func pidFdTargets(t testing.TB, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			targets = append(targets, target)
		}
	}
	return targets
}
