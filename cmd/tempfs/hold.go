package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/limits"
	"github.com/tempfs/tempfs/fs/fdstore"
	"github.com/tempfs/tempfs/naming"
)

// The holder (`tempfs mount --hold`) plays the part systemd's file descriptor store plays for a unit with
// FileDescriptorStoreMax= and Restart=on-failure, with the same protocol (package fdstore), so that the
// daemon has one code path with or without systemd. It runs the daemon as its child with NOTIFY_SOCKET
// naming a private socket of its own and FDSTORE=<max>; it keeps every descriptor the daemon stores there,
// and when the daemon dies (a signal, a non-zero status) while a descriptor named "fuse" is stored, it
// starts a new daemon with the stored descriptors as fd 3 on, LISTEN_FDS and LISTEN_FDNAMES, and its own
// pid in TEMPFS_HOLDER_PID where systemd would set LISTEN_PID (which the holder cannot know before the
// child runs). While it holds the FUSE descriptor the mount survives the daemon's death: the kernel keeps
// the requests until the new daemon reads them.
//
// No locks: one goroutine polls the notify socket, the daemon's pidfd, the first daemon's ready pipe and
// a pipe that another goroutine writes the signals received to.

// holdFuseName is the name of the stored FUSE connection descriptor: without it there is nothing a new
// daemon could take up, and the holder does not restart one.
const holdFuseName = "fuse"

// holdStartBurst daemons started within holdStartInterval are the most the holder starts (systemd's
// StartLimitBurst= and StartLimitIntervalSec=, with a longer interval since a tempfs daemon that dies at
// once after every start dies of the state it is given, which a later start does not change).
// A daemon that served for holdHealthy before it died was no crash loop: its death clears the count, so
// that an operator's occasional kill -9 (an upgrade, a test) never exhausts it.
const (
	holdStartBurst    = 5
	holdStartInterval = 30 * time.Second
	holdHealthy       = time.Second
)

// holdFDMargin is how many descriptors under its limit the holder keeps free: a few for itself (its
// standard streams, the notify socket, the pidfd, its pipes, its log and the Go runtime's own), and the
// rest for the new daemon, which starts with every stored descriptor open and needs room for its log,
// sockets and mount helper before it can reuse or close any.
const holdFDMargin = 256

// storeEnv are the variables the holder sets for its daemon; the ones inherited are dropped first.
var storeEnv = []string{"NOTIFY_SOCKET", "FDSTORE", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", fdstore.HolderPIDEnv}

// storedFD is one descriptor the daemon stored; a name stored twice is kept twice, as systemd does.
type storedFD struct {
	name string
	f    *os.File
}

// holder runs and restarts the daemon and keeps what it stores.
type holder struct {
	path string
	// args is the daemon's command line (without path); readyFD, when not 0, is the descriptor it is to
	// report readiness or its error on (the first daemon only).
	args func(readyFD int) []string
	// env is the daemon's environment without the store's variables.
	env            []string
	stdout, stderr *os.File
	log            *slog.Logger
	ln             *fdstore.Listener
	max            int
	burst          int
	interval       time.Duration
	ready          *readyNotifier

	stored []storedFD
	child  *exec.Cmd
	pidfd  int
	starts []time.Time
	// childReadyAt is when the daemon running now said READY=1 (zero: not yet).
	childReadyAt time.Time
	// readyR is the first daemon's ready pipe (-1 once read to its end); readyLine what came through it.
	readyR    int
	readyLine []byte
	readyDone bool
	// stopping: a signal was forwarded; the daemon's death then ends the holder, whatever its status.
	stopping bool
}

// runHold is `tempfs mount --hold MOUNTPOINT`: this process becomes the holder, and runs the daemon with
// the same flags but --hold (and --ready-fd, which the holder honours itself: --daemon started it).
func runHold(ctx context.Context, o *mountOptions, flags *pflag.FlagSet, arg string, ready *readyNotifier) (err error) {
	defer func() {
		if err != nil {
			ready.fail(err) // once: a no-op when the daemon's own error went there already
		}
	}()
	if o.takeover {
		return usageErrorf("--hold starts a daemon and keeps its descriptors; a take-over's new daemon is started by whoever runs --takeover: leave out one of them")
	}
	mp, err := resolveMountpoint(arg)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return failure(err)
	}
	if o.readyFD > 0 {
		// The holder's own: no daemon may keep it open (its reader waits for the holder's line, or the end).
		unix.CloseOnExec(o.readyFD)
	}
	storeParent := o.store
	if storeParent == "" {
		// Only a log file of last resort goes there (openMountLog): the daemon finds and checks the store.
		if storeParent, err = naming.GetStoreDir(mp); err != nil {
			storeParent = os.TempDir()
		}
	}
	log, err := o.openMountLog(storeParent, mp)
	if err != nil {
		return err
	}
	defer log.Close()
	_, nofile, err := limits.RaiseDescriptors()
	if err != nil {
		log.Warn("could not raise the descriptor limit", "err", err)
	}
	ln, err := fdstore.Listen("")
	if err != nil {
		return failure(err)
	}
	args := childMountArgs(flags, "hold", "daemon", "ready-fd")
	h := newHolder(self, func(readyFD int) []string {
		a := []string{"mount"}
		if readyFD > 0 {
			// First, as daemonize puts it, so that an error in a later flag still reaches the holder.
			a = append(a, "--ready-fd="+strconv.Itoa(readyFD))
		}
		return append(append(a, args...), "--", arg)
	}, ln, holdMax(nofile.Cur), log.Logger, ready)
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)
	log.Info("holding the descriptors of the daemon serving the mount", "mountpoint", mp, "notify_socket", ln.Addr(), "fdstore", h.max)
	return h.run(ctx, signals)
}

// holdMax is FDSTORE for a holder whose descriptor limit is nofile.
func holdMax(nofile uint64) int {
	if nofile > 2*holdFDMargin {
		return int(min(nofile-holdFDMargin, 1<<30))
	}
	return int(nofile / 2)
}

func newHolder(path string, args func(int) []string, ln *fdstore.Listener, max int, log *slog.Logger, ready *readyNotifier) *holder {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(storeEnv, k)
	})
	return &holder{path: path, args: args, env: env, stdout: os.Stdout, stderr: os.Stderr, log: log, ln: ln,
		max: max, burst: holdStartBurst, interval: holdStartInterval, ready: ready, pidfd: -1, readyR: -1}
}

// childMountArgs are the flags as parsed, but skip, as `--name=value` arguments.
func childMountArgs(flags *pflag.FlagSet, skip ...string) []string {
	var args []string
	flags.Visit(func(f *pflag.Flag) {
		if slices.Contains(skip, f.Name) {
			return
		}
		if v, ok := f.Value.(pflag.SliceValue); ok {
			for _, item := range v.GetSlice() {
				args = append(args, "--"+f.Name+"="+item)
			}
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	})
	return args
}

// run starts the first daemon and holds until the last one is done; it closes every descriptor it holds
// before it returns (the mount is aborted then, unless a daemon unmounted it).
func (h *holder) run(ctx context.Context, signals <-chan os.Signal) error {
	defer h.closeAll()
	var sigPipe [2]int
	if err := unix.Pipe2(sigPipe[:], unix.O_CLOEXEC); err != nil {
		return failure(err)
	}
	defer unix.Close(sigPipe[0])
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer unix.Close(sigPipe[1])
		for {
			var sig syscall.Signal
			select {
			case <-done:
				return
			case <-ctx.Done():
				sig = syscall.SIGTERM
				ctx = context.Background()
			case s := <-signals:
				sig, _ = s.(syscall.Signal)
			}
			if sig > 0 && sig < 256 {
				_, _ = unix.Write(sigPipe[1], []byte{byte(sig)})
			}
		}
	}()
	if err := h.start(true); err != nil {
		h.ready.fail(err)
		return err
	}
	for {
		pfds := []unix.PollFd{
			{Fd: int32(h.ln.FD()), Events: unix.POLLIN},
			{Fd: int32(h.pidfd), Events: unix.POLLIN},
			{Fd: int32(sigPipe[0]), Events: unix.POLLIN},
			{Fd: int32(h.readyR), Events: unix.POLLIN}, // ignored by poll once -1
		}
		if _, err := unix.Poll(pfds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return failure(fmt.Errorf("holder: poll: %w", err))
		}
		if pfds[3].Revents != 0 {
			h.readReady()
		}
		if pfds[2].Revents != 0 {
			var b [16]byte
			n, _ := unix.Read(sigPipe[0], b[:])
			for _, sig := range b[:max(n, 0)] {
				h.stop(syscall.Signal(sig))
			}
		}
		switch {
		case pfds[1].Revents != 0:
			// It reads the messages still queued first.
			if finished, err := h.childExited(); finished {
				return err
			}
		case pfds[0].Revents != 0:
			h.drain()
		}
	}
}

// start runs a daemon with the stored descriptors; the first one also gets a ready pipe.
func (h *holder) start(first bool) error {
	files := make([]*os.File, 0, len(h.stored)+1)
	names := make([]string, 0, len(h.stored))
	for _, s := range h.stored {
		files = append(files, s.f)
		names = append(names, s.name)
	}
	env := append(slices.Clone(h.env), "NOTIFY_SOCKET="+h.ln.Addr(), "FDSTORE="+strconv.Itoa(h.max),
		fdstore.HolderPIDEnv+"="+strconv.Itoa(os.Getpid()))
	if len(files) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	readyFD := 0
	var readyW *os.File
	if first {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return failure(err)
		}
		// Only the holder's end is non-blocking (the flag is the open file's, and each end is one).
		_ = unix.SetNonblock(p[0], true)
		h.readyR = p[0]
		readyW = os.NewFile(uintptr(p[1]), "ready")
		defer readyW.Close()
		files = append(files, readyW)
		readyFD = 3 + len(files) - 1
	}
	cmd := exec.Command(h.path, h.args(readyFD)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = h.stdout, h.stderr
	// ExtraFiles leaves each descriptor in blocking mode (os.File.Fd): a daemon that wants a socket
	// non-blocking sets it so itself, as net.FileListener does.
	cmd.ExtraFiles = files
	// A process group of its own: a terminal's ^C reaches the holder alone, which forwards it once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return failure(fmt.Errorf("starting the daemon: %w", err))
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		// Not reaped yet, so the pid is still the child's.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return failure(fmt.Errorf("watching the daemon (pid %d): %w", cmd.Process.Pid, err))
	}
	h.child, h.pidfd = cmd, pidfd
	h.childReadyAt = time.Time{}
	h.starts = append(h.starts, time.Now())
	return nil
}

// drain handles every message queued on the notify socket, without waiting for more.
func (h *holder) drain() {
	for {
		m, err := h.ln.Receive()
		if errors.Is(err, fdstore.ErrNoMessage) {
			return
		}
		if err != nil {
			h.log.Warn("notify socket", "err", err)
			if m == nil {
				return
			}
		}
		h.handle(m)
	}
}

// handle applies one message of the daemon's: it takes the descriptors it keeps and closes the others.
func (h *holder) handle(m *fdstore.Message) {
	defer m.CloseFDs()
	if h.child == nil || m.PID != h.child.Process.Pid {
		// Only the daemon knows the socket's name, but a process it started might not: ignore theirs.
		h.log.Warn("notify message from a process other than the daemon ignored", "pid", m.PID, "daemon", h.childPID())
		return
	}
	if m.Truncated {
		h.log.Warn("notify message truncated: descriptors may be lost", "fields", len(m.Fields), "fds", len(m.FDs))
	}
	name := m.Fields["FDNAME"]
	switch {
	case m.Fields["FDSTORE"] == "1":
		if err := fdstore.ValidName(name); err != nil {
			h.log.Warn("descriptor not stored", "err", err)
			return
		}
		for _, fd := range m.FDs {
			if len(h.stored) >= h.max {
				h.log.Warn("descriptor not stored: the store is full", "name", name, "max", h.max)
				return
			}
			h.stored = append(h.stored, storedFD{name: name, f: os.NewFile(uintptr(fd), name)})
		}
		m.FDs = nil
		h.log.Debug("stored", "name", name, "stored", len(h.stored))
	case m.Fields["FDSTOREREMOVE"] == "1":
		h.stored = slices.DeleteFunc(h.stored, func(s storedFD) bool {
			if s.name == name {
				s.f.Close()
				return true
			}
			return false
		})
		h.log.Debug("removed", "name", name, "stored", len(h.stored))
	}
	if m.Fields["READY"] == "1" {
		h.childReadyAt = time.Now()
		h.markReady()
	}
}

func (h *holder) childPID() int {
	if h.child == nil {
		return 0
	}
	return h.child.Process.Pid
}

// readReady reads what the first daemon wrote on its ready pipe: "ready", or "error: WHY" before it exits.
func (h *holder) readReady() {
	for h.readyR >= 0 {
		var b [512]byte
		n, err := unix.Read(h.readyR, b[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if n <= 0 {
			unix.Close(h.readyR)
			h.readyR = -1
			break
		}
		h.readyLine = append(h.readyLine, b[:n]...)
	}
	if strings.TrimSpace(string(h.readyLine)) == "ready" {
		h.markReady()
	}
}

// markReady reports the mount ready to whoever started the holder, once: the first daemon is up.
func (h *holder) markReady() {
	if h.readyDone {
		return
	}
	h.readyDone = true
	h.ready.ready()
	h.log.Info("the daemon is ready", "pid", h.childPID())
}

// stop forwards a stop signal to the daemon; from now on its death ends the holder. SIGHUP goes on as
// SIGTERM: the daemon unmounts on SIGINT and SIGTERM, and SIGHUP would kill it without unmounting.
func (h *holder) stop(sig syscall.Signal) {
	if sig == syscall.SIGHUP {
		sig = syscall.SIGTERM
	}
	if !h.stopping {
		h.stopping = true
		notifyStopping()
	}
	h.log.Info("forwarding a signal to the daemon", "signal", sig, "pid", h.childPID())
	if err := unix.PidfdSendSignal(h.pidfd, sig, nil, 0); err != nil && err != unix.ESRCH {
		h.log.Warn("forwarding a signal to the daemon", "signal", sig, "err", err)
	}
}

// childExited reaps the daemon and decides: the holder is done (finished, with the status to exit with),
// or a new daemon runs.
func (h *holder) childExited() (finished bool, err error) {
	pid := h.childPID()
	_ = h.child.Wait() // the status is in ProcessState
	state := h.child.ProcessState
	unix.Close(h.pidfd)
	h.pidfd = -1
	// A message sent just before the death is queued still: a descriptor stored then counts.
	h.drain()
	h.readReady()
	how := exitDescription(state)
	code := state.ExitCode()
	if code <= 0 {
		code = exitFailure
	}
	switch {
	case !h.readyDone:
		line := strings.TrimSpace(string(h.readyLine))
		if msg, ok := strings.CutPrefix(line, "error: "); ok && msg != "" {
			// The daemon said why on the stderr it shares with the holder: tell only a --daemon parent.
			h.ready.fail(errors.New(msg))
			return true, &exitError{code: code}
		}
		err := &exitError{code: code, err: fmt.Errorf("the daemon (pid %d) ended with %s before the mount was ready", pid, how)}
		h.ready.fail(err)
		return true, err
	case state.Success():
		h.log.Info("the daemon exited", "pid", pid)
		return true, nil
	case h.stopping:
		return true, &exitError{code: code, err: fmt.Errorf("the daemon (pid %d) ended with %s while stopping", pid, how)}
	}
	if !h.childReadyAt.IsZero() && time.Since(h.childReadyAt) >= holdHealthy {
		h.starts = nil
	}
	switch {
	case !h.has(holdFuseName):
		return true, &exitError{code: code, err: fmt.Errorf("the daemon (pid %d) ended with %s and had stored no FUSE descriptor: nothing to keep", pid, how)}
	case h.recentStarts() >= h.burst:
		return true, failure(fmt.Errorf("the daemon (pid %d) ended with %s after %d starts within %s: giving up; the mount is aborted (tempfs unmount clears it)",
			pid, how, h.recentStarts(), h.interval))
	}
	h.log.Warn(fmt.Sprintf("daemon pid %d died (%s); starting a new one with %d descriptors", pid, how, len(h.stored)))
	if err := h.start(false); err != nil {
		return true, err
	}
	h.log.Info("started a new daemon", "pid", h.childPID(), "descriptors", len(h.stored))
	return false, nil
}

// recentStarts counts the daemons started within the last interval.
func (h *holder) recentStarts() int {
	since := time.Now().Add(-h.interval)
	n := 0
	for _, t := range h.starts {
		if t.After(since) {
			n++
		}
	}
	return n
}

func (h *holder) has(name string) bool {
	return slices.ContainsFunc(h.stored, func(s storedFD) bool { return s.name == name })
}

// closeAll closes every descriptor held: with the last reference to the FUSE connection gone, a mount no
// daemon serves is aborted.
func (h *holder) closeAll() {
	for _, s := range h.stored {
		s.f.Close()
	}
	h.stored = nil
	if h.readyR >= 0 {
		unix.Close(h.readyR)
		h.readyR = -1
	}
	if h.pidfd >= 0 {
		unix.Close(h.pidfd)
		h.pidfd = -1
	}
	h.ln.Close()
}

// exitDescription says how a process ended: "signal 9" or "exit status 3".
func exitDescription(state *os.ProcessState) string {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("signal %d", int(ws.Signal()))
	}
	return fmt.Sprintf("exit status %d", state.ExitCode())
}
