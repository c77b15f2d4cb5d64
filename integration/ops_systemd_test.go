package integration

// A stand-in for systemd running one Type=notify service, for the test of the README's unit: the notify socket
// (with SO_PASSCRED, messages of the main process only, as NotifyAccess=main) and the file descriptor store of
// FileDescriptorStoreMax=, kept as systemd keeps it (src/core/service.c): FDSTORE=1 adds the attached
// descriptors under FDNAME (a descriptor of an open file already stored is dropped as a duplicate; past the
// maximum, the rest are closed with a warning), FDSTOREREMOVE=1 closes every descriptor of that name, and a
// stored descriptor that polls POLLHUP or POLLERR is closed (unless stored with FDPOLL=0). A new main process
// gets them at fd 3 on, the last stored first, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set to its own
// pid after the fork.

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/fdstore"
)

// opsStored is one descriptor in the store.
type opsStored struct {
	name string
	fd   int
	poll bool
}

// opsSystemd is the service manager's side of one service.
type opsSystemd struct {
	l   *fdstore.Listener
	max int // FileDescriptorStoreMax=; 0: no store (FDSTORE is not set)
	// wake ends the receiving goroutine (its read end is polled beside the socket).
	wakeR, wakeW *os.File
	done         chan struct{}

	mu       sync.Mutex
	main     int // the main process; messages of any other process are dropped
	store    []opsStored
	ready    chan struct{} // closed at the main process's READY=1
	stopping bool          // the main process sent STOPPING=1
	warnings []string      // what systemd would log as a warning
}

// newOpsSystemd binds the notify socket and receives on it until the test ends; the cleanup closes every
// descriptor still stored, as systemd does once the service is stopped.
func newOpsSystemd(t *testing.T, max int) *opsSystemd {
	t.Helper()
	l, err := fdstore.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &opsSystemd{l: l, max: max, wakeR: r, wakeW: w, done: make(chan struct{}), ready: make(chan struct{})}
	go s.receive()
	t.Cleanup(func() {
		s.wakeW.Close()
		<-s.done
		s.wakeR.Close()
		s.l.Close()
		s.flush()
	})
	return s
}

// receive handles the notify messages as they come, so that a daemon storing many descriptors never waits
// for the socket's queue.
func (s *opsSystemd) receive() {
	defer close(s.done)
	for {
		fds := []unix.PollFd{{Fd: int32(s.l.FD()), Events: unix.POLLIN}, {Fd: int32(s.wakeR.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		s.mu.Lock()
		s.drainLocked()
		s.mu.Unlock()
	}
}

// drainLocked handles every queued message.
func (s *opsSystemd) drainLocked() {
	for {
		m, err := s.l.Receive()
		if errors.Is(err, fdstore.ErrNoMessage) {
			return
		}
		if err != nil {
			s.warnings = append(s.warnings, err.Error())
			if m == nil {
				return
			}
		}
		s.handleLocked(m)
	}
}

func (s *opsSystemd) handleLocked(m *fdstore.Message) {
	if m.PID != s.main || s.main == 0 {
		s.warnings = append(s.warnings, "a notify message from pid "+strconv.Itoa(m.PID)+", not the main process")
		m.CloseFDs()
		return
	}
	f := m.Fields
	if f["READY"] == "1" {
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
	}
	if f["STOPPING"] == "1" {
		s.stopping = true
	}
	if f["FDSTOREREMOVE"] == "1" {
		kept := s.store[:0]
		for _, st := range s.store {
			if st.name == f["FDNAME"] {
				unix.Close(st.fd)
			} else {
				kept = append(kept, st)
			}
		}
		s.store = kept
	}
	if f["FDSTORE"] != "1" {
		m.CloseFDs()
		return
	}
	if s.max == 0 {
		// systemd refuses FDSTORE=1 from a service without a store.
		s.warnings = append(s.warnings, "FDSTORE=1 without FileDescriptorStoreMax=")
		m.CloseFDs()
		return
	}
	name := f["FDNAME"]
	if name == "" {
		name = "stored"
	}
	for _, fd := range m.FDs {
		if len(s.store) >= s.max {
			s.warnings = append(s.warnings, "Cannot store more fds than FileDescriptorStoreMax="+strconv.Itoa(s.max)+", closing remaining.")
			unix.Close(fd)
			continue
		}
		if s.storedLocked(fd) {
			unix.Close(fd)
			continue
		}
		// systemd prepends: the last stored is passed first.
		s.store = append([]opsStored{{name: name, fd: fd, poll: f["FDPOLL"] != "0"}}, s.store...)
	}
	m.FDs = nil
}

// storedLocked reports whether the open file fd refers to is in the store already (systemd's same_fd).
func (s *opsSystemd) storedLocked(fd int) bool {
	pid := uintptr(os.Getpid())
	for _, st := range s.store {
		const kcmpFile = 0
		r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(st.fd), uintptr(fd), 0)
		if errno == 0 && r == 0 {
			return true
		}
	}
	return false
}

// dropHungUpLocked closes the stored descriptors that poll POLLHUP or POLLERR (a FUSE connection that was
// aborted or unmounted), as systemd's event loop does for each descriptor it can poll.
func (s *opsSystemd) dropHungUpLocked() {
	kept := s.store[:0]
	for _, st := range s.store {
		fds := []unix.PollFd{{Fd: int32(st.fd)}}
		if st.poll {
			if _, err := unix.Poll(fds, 0); err == nil && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				unix.Close(st.fd)
				continue
			}
		}
		kept = append(kept, st)
	}
	s.store = kept
}

// names returns the names in the store, in the order a new main process gets them, after handling what is
// queued and dropping what hung up.
func (s *opsSystemd) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	s.dropHungUpLocked()
	names := make([]string, len(s.store))
	for i, st := range s.store {
		names[i] = st.name
	}
	return names
}

// flush closes every stored descriptor: the service was stopped.
func (s *opsSystemd) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.store {
		unix.Close(st.fd)
	}
	s.store = nil
}

// opsMain is a running main process of the service.
type opsMain struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// wait waits up to d for the process to exit and returns cmd.Wait's error.
func (p *opsMain) wait(t *testing.T, what string, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Fatalf("%s: still running %v later; stderr:\n%s", what, d, p.stderr.String())
		return nil
	}
}

// startMain starts argv as the service's main process with env added, the store's descriptors at fd 3 on, and
// waits for its READY=1. The test's cleanup kills it if it still runs.
func (s *opsSystemd) startMain(t *testing.T, what string, argv, env []string) *opsMain {
	t.Helper()
	s.mu.Lock()
	s.drainLocked()
	s.dropHungUpLocked()
	env = append(append(os.Environ(), env...), "NOTIFY_SOCKET="+s.l.Addr())
	if s.max > 0 {
		env = append(env, "FDSTORE="+strconv.Itoa(s.max))
	}
	var files []*os.File
	var names []string
	for _, st := range s.store {
		fd, err := unix.FcntlInt(uintptr(st.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			s.mu.Unlock()
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), st.name))
		names = append(names, st.name)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if len(files) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		// systemd sets LISTEN_PID in the child after the fork; the shell does the same before it execs.
		cmd = exec.Command("sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`}, argv...)...)
	}
	cmd.Env = env
	cmd.ExtraFiles = files
	p := &opsMain{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	s.ready = make(chan struct{})
	s.stopping = false
	err := cmd.Start()
	if err == nil {
		s.main = cmd.Process.Pid
	}
	ready := s.ready
	s.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("%s: %q exited (%v) before READY=1; stderr:\n%s", what, argv, p.err, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: %q sent no READY=1 within 60s; stderr:\n%s", what, argv, p.stderr.String())
	}
	return p
}

// sentStopping reports whether the main process sent STOPPING=1.
func (s *opsSystemd) sentStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	return s.stopping
}

// warned returns what systemd would have logged as warnings.
func (s *opsSystemd) warned() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.warnings...)
}
