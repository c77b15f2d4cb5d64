package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/fdstore"
)

// The holder's tests run this test binary as the daemon (TestHoldFakeDaemon, HOLD_FAKE naming what it
// does): it speaks the fd store protocol as the real daemon does, without mounting anything.

// fakeHolder is a holder of fake daemons doing mode, with its ready line readable from readyR.
func fakeHolder(t *testing.T, mode string) (h *holder, readyR *os.File, result string) {
	t.Helper()
	result = filepath.Join(t.TempDir(), "result")
	t.Setenv("HOLD_FAKE", mode)
	t.Setenv("HOLD_RESULT", result)
	t.Setenv("NOTIFY_SOCKET", "") // the holder's own: not a test's systemd
	ln, err := fdstore.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fd, err := unix.FcntlInt(w.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	args := func(readyFD int) []string {
		return []string{"-test.run=^TestHoldFakeDaemon$", "--", strconv.Itoa(readyFD)}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h = newHolder(os.Args[0], args, ln, 64, log, newReadyNotifier(fd))
	h.burst, h.interval = 3, time.Minute
	return h, r, result
}

// runFake runs the holder until it is done, with signals the test sends on the channel returned.
func runFake(h *holder) (chan<- os.Signal, <-chan error) {
	signals := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- h.run(context.Background(), signals) }()
	return signals, done
}

func waitHolder(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the holder did not finish within 60 s")
		return nil
	}
}

func readyLine(t *testing.T, r *os.File) string {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(60 * time.Second))
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the holder's ready line: %v (read %q)", err, b)
	}
	return strings.TrimSpace(string(b))
}

func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return -1
}

// TestHoldRestartsWithStoredDescriptors: a daemon stores descriptors (one name twice then removed), says
// READY=1 and is killed at once; the holder reads what was queued before the death, starts a new daemon with
// the stored descriptors, which finds them by name and reads the same files, and exits 0: the holder exits
// 0 and holds nothing.
func TestHoldRestartsWithStoredDescriptors(t *testing.T) {
	h, readyR, result := fakeHolder(t, "crash-once")
	_, done := runFake(h)
	if err := waitHolder(t, done); err != nil {
		t.Fatalf("holder: %v", err)
	}
	if l := readyLine(t, readyR); l != "ready" {
		t.Fatalf("ready line %q", l)
	}
	got, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("the second daemon left no result: %v", err)
	}
	if want := "data=stored bytes fuse=connection"; string(got) != want {
		t.Fatalf("the second daemon found %q, want %q", got, want)
	}
	if len(h.starts) != 2 || len(h.stored) != 0 {
		t.Fatalf("%d starts, %d descriptors held at the end; want 2 and 0", len(h.starts), len(h.stored))
	}
}

// TestHoldDrainsAtDeath: a descriptor stored just before the daemon's death counts even when the holder
// sees the message and the death at once (it was stopped in between): the new daemon gets it.
func TestHoldDrainsAtDeath(t *testing.T) {
	h, _, result := fakeHolder(t, "crash-late")
	_, done := runFake(h)
	if err := waitHolder(t, done); err != nil {
		t.Fatalf("holder: %v", err)
	}
	got, err := os.ReadFile(result)
	if want := "data=stored bytes fuse=connection late=stored last"; err != nil || string(got) != want {
		t.Fatalf("the second daemon found %q (%v), want %q", got, err, want)
	}
}

// TestHoldStartLimit: a daemon that dies after every start is started burst times, then the holder gives up.
func TestHoldStartLimit(t *testing.T) {
	h, _, _ := fakeHolder(t, "crash-always")
	_, done := runFake(h)
	err := waitHolder(t, done)
	if exitCode(err) != exitFailure || !strings.Contains(err.Error(), "giving up") || len(h.starts) != h.burst {
		t.Fatalf("holder: %v after %d starts; want status 1, giving up after %d", err, len(h.starts), h.burst)
	}
}

// TestHoldEnds: the cases where the daemon's end is the holder's.
func TestHoldEnds(t *testing.T) {
	for _, tc := range []struct {
		mode, ready string
		code        int    // 0: no error
		msg         string // in the error
	}{
		{"fail-before-ready", "error: bad thing", 2, ""},
		{"killed-before-ready", "error: the daemon", 1, "before the mount was ready"},
		{"no-fuse", "ready", 3, "no FUSE descriptor"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			h, readyR, _ := fakeHolder(t, tc.mode)
			_, done := runFake(h)
			err := waitHolder(t, done)
			if exitCode(err) != tc.code || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
				t.Fatalf("holder: %v (status %d); want status %d, %q", err, exitCode(err), tc.code, tc.msg)
			}
			if l := readyLine(t, readyR); !strings.HasPrefix(l, tc.ready) {
				t.Fatalf("ready line %q, want %q...", l, tc.ready)
			}
			if len(h.starts) != 1 {
				t.Fatalf("%d starts", len(h.starts))
			}
		})
	}
}

// TestHoldStop: a signal to the holder goes to the daemon; its exit 0 ends the holder with 0, and a crash
// after a stop is not restarted.
func TestHoldStop(t *testing.T) {
	for _, tc := range []struct {
		mode string
		sig  syscall.Signal
		code int
	}{
		{"serve", syscall.SIGTERM, 0},
		{"serve", syscall.SIGHUP, 0}, // goes on as SIGTERM, which the daemon unmounts on
		{"serve-crash-on-term", syscall.SIGINT, 1},
	} {
		t.Run(fmt.Sprintf("%s,%v", tc.mode, tc.sig), func(t *testing.T) {
			h, readyR, _ := fakeHolder(t, tc.mode)
			signals, done := runFake(h)
			if l := readyLine(t, readyR); l != "ready" {
				t.Fatalf("ready line %q", l)
			}
			signals <- tc.sig
			err := waitHolder(t, done)
			if code := exitCode(err); (tc.code == 0 && err != nil) || (tc.code != 0 && code != tc.code) {
				t.Fatalf("holder: %v; want status %d", err, tc.code)
			}
			if len(h.starts) != 1 {
				t.Fatalf("%d starts, want 1", len(h.starts))
			}
		})
	}
}

// TestHoldMessages: what the holder keeps of the messages it gets: a name stored twice is kept twice, a
// removal drops every descriptor of its name, the store keeps at most max, and a message from any process
// but the daemon is ignored (its descriptors closed).
func TestHoldMessages(t *testing.T) {
	ln, err := fdstore.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	h := &holder{ln: ln, max: 4, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ready: newReadyNotifier(0), pidfd: -1, readyR: -1}
	defer h.closeAll()
	me, _ := os.FindProcess(os.Getpid())
	h.child = &exec.Cmd{Process: me}
	s, err := fdstore.New(ln.Addr(), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names := func() string {
		var n []string
		for _, f := range h.stored {
			n = append(n, f.name)
		}
		return strings.Join(n, ",")
	}
	for _, name := range []string{"a", "a", "fuse", "b", "c", "d"} {
		if err := s.Add(name, 0); err != nil {
			t.Fatal(err)
		}
	}
	h.drain()
	if got := names(); got != "a,a,fuse,b" {
		t.Fatalf("stored %q, want the first 4 (max), a twice", got)
	}
	_ = s.Remove("a")
	_ = s.Notify("READY=1")
	h.drain()
	if got := names(); got != "fuse,b" || !h.readyDone {
		t.Fatalf("stored %q, ready %v after removing a and READY=1", got, h.readyDone)
	}
	other, _ := os.FindProcess(1)
	h.child = &exec.Cmd{Process: other}
	_ = s.Add("c", 0)
	h.drain()
	if got := names(); got != "fuse,b" {
		t.Fatalf("stored %q after a message from another process", got)
	}
	h.child = &exec.Cmd{Process: me}
	if !h.has("fuse") || h.has("a") {
		t.Fatal("has")
	}
}

func TestHoldMax(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{{1024, 768}, {1 << 20, 1<<20 - 256}, {300, 150}, {0, 0}} {
		if got := holdMax(tc.nofile); got != tc.want {
			t.Errorf("holdMax(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

// TestHoldFakeDaemon is the fake daemon when HOLD_FAKE is set (nothing otherwise).
func TestHoldFakeDaemon(t *testing.T) {
	mode := os.Getenv("HOLD_FAKE")
	if mode == "" {
		return
	}
	readyFD, _ := strconv.Atoi(flag.Arg(0))
	if err := fakeDaemon(mode, readyFD); err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		os.Exit(9)
	}
	os.Exit(0)
}

// contAfterDeath is the helper of "crash-late": it tells the daemon (through fd 3) that it watches it, waits
// for its death and sends SIGCONT to the holder it stopped (after 30 s in any case).
func contAfterDeath() error {
	var daemon, holder int
	if _, err := fmt.Sscanf(os.Getenv("HOLD_CONT"), "%d:%d", &daemon, &holder); err != nil {
		return err
	}
	defer syscall.Kill(holder, syscall.SIGCONT)
	pidfd, err := unix.PidfdOpen(daemon, 0)
	if err != nil {
		return err
	}
	watching := os.NewFile(3, "watching")
	_, _ = watching.Write([]byte{1})
	watching.Close()
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 30000)
	return err
}

func fakeDaemon(mode string, readyFD int) error {
	if mode == "cont" {
		return contAfterDeath()
	}
	passed, err := fdstore.Passed()
	if err != nil {
		return err
	}
	store, err := fdstore.FromEnv()
	if err != nil || store == nil {
		return fmt.Errorf("no store: %v", err)
	}
	kill := func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	if (mode == "crash-once" || mode == "crash-late") && len(passed) > 0 {
		var parts []string
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for n := range passed {
				if !yield(n) {
					return
				}
			}
		}) {
			b := make([]byte, 64)
			n, _ := unix.Pread(passed[name], b, 0)
			parts = append(parts, name+"="+string(b[:n]))
		}
		return os.WriteFile(os.Getenv("HOLD_RESULT"), []byte(strings.Join(parts, " ")), 0o644)
	}
	switch mode {
	case "crash-always":
		if len(passed) > 0 {
			kill() // what it was given is stored already
		}
	case "fail-before-ready":
		ready := newReadyNotifier(readyFD)
		ready.fail(errors.New("bad thing"))
		os.Exit(2)
	case "killed-before-ready":
		kill()
	}
	file := func(name, content string) int {
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
		if err != nil {
			panic(err)
		}
		_, _ = unix.Write(fd, []byte(content))
		return fd
	}
	if mode != "no-fuse" {
		if err := store.Add("fuse", file("fuse", "connection")); err != nil {
			return err
		}
	}
	for _, name := range []string{"gone", "gone"} {
		if err := store.Add(name, file(name, "removed")); err != nil {
			return err
		}
	}
	if err := store.Remove("gone"); err != nil {
		return err
	}
	if err := store.Add("data", file("data", "stored bytes")); err != nil {
		return err
	}
	if err := store.Notify("READY=1"); err != nil {
		return err
	}
	switch mode {
	case "crash-once", "crash-always":
		kill() // at once: the holder must read what was queued before the death
	case "crash-late":
		// The holder sees the death and the last message at the same time: stopped until this process is
		// dead, by a helper that then lets it go on.
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		helper := exec.Command(os.Args[0], "-test.run=^TestHoldFakeDaemon$")
		helper.Env = append(os.Environ(), "HOLD_FAKE=cont", fmt.Sprintf("HOLD_CONT=%d:%d", os.Getpid(), os.Getppid()))
		helper.ExtraFiles = []*os.File{w}
		helper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := helper.Start(); err != nil {
			return err
		}
		w.Close()
		if _, err := r.Read(make([]byte, 1)); err != nil {
			return fmt.Errorf("helper: %w", err)
		}
		if err := syscall.Kill(os.Getppid(), syscall.SIGSTOP); err != nil {
			return err
		}
		if err := store.Add("late", file("late", "stored last")); err != nil {
			return err
		}
		kill()
	case "no-fuse":
		os.Exit(3)
	case "serve", "serve-crash-on-term":
		sigs := make(chan os.Signal, 1)
		signalNotify(sigs)
		<-sigs
		if mode == "serve-crash-on-term" {
			kill()
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}
