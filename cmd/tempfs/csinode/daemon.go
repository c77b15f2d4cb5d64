package csinode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemon is a volume's `tempfs mount` process, held through a pidfd: a pid alone could be reused by another
// process once the daemon is gone, a pidfd always means the process it was opened on.
type daemon struct {
	pid   int
	pidfd int
}

// exitUsage is `tempfs mount`'s exit status for bad input (a bad flag, an unusable target path).
const exitUsage = 2

// startError is a daemon that did not come up: the line it gave on its ready fd, and its exit status.
type startError struct {
	msg    string
	status int
}

func (e *startError) Error() string { return e.msg }

// badInput reports whether the daemon refused its input (exit status 2), as opposed to failing while working.
func (e *startError) badInput() bool { return e.status == exitUsage }

// startDaemon runs `EXE mount --ready-fd=3 ARGS...` in a session of its own, so that neither a signal to the
// plugin's process group nor the plugin's end reaches it, and returns once the daemon said the mount is ready.
// On failure or when ctx ends first, nothing of the daemon is left running.
func startDaemon(ctx context.Context, exe string, args []string, stderr *os.File) (*daemon, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	defer devnull.Close()
	// --ready-fd comes first: the daemon reports even an error in the flags after it through the fd.
	cmd := exec.Command(exe, append([]string{"mount", "--ready-fd=3"}, args...)...)
	cmd.Stdin, cmd.Stdout = devnull, devnull
	// The daemon's log goes where the plugin's goes (the container's log); a file, not a pipe the plugin reads,
	// so that the daemon keeps logging after the plugin is gone.
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	// The pidfd is opened before anything reaps the child, so it cannot name another process.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		r.Close()
		return nil, fmt.Errorf("pidfd_open of the daemon: %w", err)
	}
	exited := make(chan int, 1)
	go func() {
		// Reap the child whenever it ends, so that it never stays a zombie of a long-running plugin.
		_ = cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	line := make(chan string, 1)
	go func() {
		defer r.Close()
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	d := &daemon{pid: cmd.Process.Pid, pidfd: pidfd}
	select {
	case l := <-line:
		if l == "ready" {
			return d, nil
		}
		status := <-exited
		d.close()
		msg, found := strings.CutPrefix(l, "error: ")
		if !found || msg == "" {
			msg = fmt.Sprintf("the volume's daemon exited with status %d before its mount was ready", status)
		}
		return nil, &startError{msg: msg, status: status}
	case <-ctx.Done():
		d.kill()
		<-exited
		d.close()
		return nil, fmt.Errorf("the volume's daemon was not ready in time: %w", ctx.Err())
	}
}

// findDaemon finds the running daemon whose disk store is under store (its command line has --store=STORE),
// after a plugin restart. It returns nil when there is none.
func findDaemon(store string) *daemon {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !servesStore(pid, store) || servesStore(parentPID(pid), store) {
			continue // not it, or the daemon a holder runs (the holder is the volume's process)
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// Checked again through the open pidfd's pid: the process found may have ended and its pid been reused.
		if !servesStore(pid, store) {
			unix.Close(pidfd)
			continue
		}
		return &daemon{pid: pid, pidfd: pidfd}
	}
	return nil
}

// parentPID is the parent of process pid, 0 when unknown.
func parentPID(pid int) int {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// servesStore reports whether process pid is `tempfs mount --store=STORE ...`.
func servesStore(pid int, store string) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimSuffix(data, []byte{0}), []byte{0})
	if len(args) < 2 || string(args[1]) != "mount" {
		return false
	}
	want := "--store=" + store
	for _, a := range args[2:] {
		if string(a) == want {
			return true
		}
	}
	return false
}

// running reports whether the daemon has not exited yet.
func (d *daemon) running() bool {
	return !d.waitExit(0)
}

// waitExit waits up to timeout for the daemon to exit and reports whether it did.
func (d *daemon) waitExit(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		fds := []unix.PollFd{{Fd: int32(d.pidfd), Events: unix.POLLIN}}
		ms := int(time.Until(deadline).Milliseconds())
		n, err := unix.Poll(fds, max(ms, 0))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

// signal sends sig through the pidfd (never to a pid that another process may have taken).
func (d *daemon) signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(d.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	return err
}

func (d *daemon) kill() { _ = d.signal(unix.SIGKILL) }

func (d *daemon) close() {
	if d.pidfd >= 0 {
		unix.Close(d.pidfd)
		d.pidfd = -1
	}
}
