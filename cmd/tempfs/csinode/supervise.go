package csinode

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SupervisedEnv is set in the environment of the plugin process that Supervise starts, so that it serves instead of
// supervising again.
const SupervisedEnv = "TEMPFS_CSI_SUPERVISED"

// Restart delays of a plugin that keeps dying: doubled from the first to the last, back to the first once it has
// served for a while.
const (
	firstRestartDelay = time.Second
	lastRestartDelay  = 30 * time.Second
	healthyRun        = time.Minute
	// A first plugin that exits with the usage status this soon refused its input (the state directory or the
	// socket in use): starting it again would not help. Later, status 2 is also a Go panic, which it would.
	usageWindow = 5 * time.Second
)

// Supervise runs the plugin (exe with args) as a child and starts it again whenever it dies, until SIGTERM or
// SIGINT, which it passes on; it returns the last child's exit status. It is what keeps the volumes' daemons
// alive when the plugin process dies inside a container: there the container's first process is its init, and
// the container (with every daemon in it) ends with it. The supervisor is that first process instead: it is
// the volumes' daemons' subreaper (they become its children when the plugin dies, and it reaps them when they
// exit), and the plugin started again adopts them.
func Supervise(ctx context.Context, exe string, args []string, log *slog.Logger) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become the daemons' subreaper; they are reaped by init", "err", err)
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	defer signal.Stop(signals)
	env := append(os.Environ(), SupervisedEnv+"=1")
	delay := firstRestartDelay
	var restart <-chan time.Time
	child, started, err := startPlugin(exe, args, env)
	if err != nil {
		log.Error("starting the plugin", "err", err)
		return 1
	}
	stopping, first := false, true
	for {
		select {
		case <-ctx.Done():
			stopping = true
			_ = child.Signal(syscall.SIGTERM)
		case <-restart:
			restart = nil
			if child, started, err = startPlugin(exe, args, env); err != nil {
				log.Error("starting the plugin again", "err", err)
				return 1
			}
		case sig := <-signals:
			if sig != syscall.SIGCHLD {
				stopping = true
				if restart != nil {
					return 0 // no plugin is running
				}
				_ = child.Signal(sig)
				continue
			}
			status, exited := reapChildren(child.Pid)
			if !exited {
				continue
			}
			if stopping {
				return status.ExitStatus()
			}
			if first && status.Exited() && status.ExitStatus() == exitUsage && time.Since(started) < usageWindow {
				return exitUsage
			}
			first = false
			if time.Since(started) > healthyRun {
				delay = firstRestartDelay
			}
			log.Error("the plugin died: starting it again; the volumes keep serving", "pid", child.Pid, "status", describeStatus(status), "in", delay)
			restart = time.After(delay)
			delay = min(2*delay, lastRestartDelay)
		}
	}
}

func startPlugin(exe string, args, env []string) (*os.Process, time.Time, error) {
	p, err := os.StartProcess(exe, append([]string{exe}, args...), &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	return p, time.Now(), err
}

// reapChildren reaps every child that has exited: the plugin, and daemons that became children of the supervisor
// when an earlier plugin died. It reports whether the plugin (pid) was among them, and its status.
func reapChildren(pid int) (plugin unix.WaitStatus, exited bool) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got <= 0 {
			return plugin, exited
		}
		if got == pid {
			plugin, exited = ws, true
		}
	}
}

func describeStatus(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}
