package csinode

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SupervisedEnv is set in the environment of the plugin process that Supervise starts, so that it serves instead of
// supervising again; its value is the descriptor on which the plugin says "ready" once it serves (SupervisedReady).
const SupervisedEnv = "TEMPFS_CSI_SUPERVISED"

// supervisedReadyFD is the plugin's descriptor for its ready line: the first after stdin, stdout and stderr.
const supervisedReadyFD = 3

// Restart delays of a plugin that keeps dying: doubled from the first to the last, back to the first once it has
// served for a while.
const (
	firstRestartDelay = time.Second
	lastRestartDelay  = 30 * time.Second
	healthyRun        = time.Minute
)

// SupervisedReady is what a supervised plugin calls once it serves: until then, its death is a failure to start
// (bad input, a state directory or socket in use), which ends the supervisor with the plugin's status instead of
// a restart loop. It does nothing in a plugin that is not supervised.
func SupervisedReady() {
	if os.Getenv(SupervisedEnv) == "" {
		return
	}
	f := os.NewFile(supervisedReadyFD, "supervisor")
	if f == nil {
		return
	}
	_, _ = f.WriteString("ready\n")
	f.Close()
}

// Supervise runs the plugin (exe with args) as a child and starts it again whenever it dies after it has served,
// until SIGTERM or SIGINT, which it passes on; it returns the last child's exit status, or the first one's if
// that one never served. It is what keeps the volumes' daemons alive when the plugin process dies inside a
// container: there the container's first process is its init, and the container (with every daemon in it)
// ends with it. The supervisor is that first process instead: it is the volumes' daemons' subreaper (they
// become its children when the plugin dies, and it reaps them when they exit), and the plugin started again
// adopts them.
func Supervise(ctx context.Context, exe string, args []string, log *slog.Logger) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become the daemons' subreaper; they are reaped by init", "err", err)
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	defer signal.Stop(signals)
	delay := firstRestartDelay
	var restart <-chan time.Time
	child, err := startPlugin(exe, args)
	if err != nil {
		log.Error("starting the plugin", "err", err)
		return 1
	}
	stopping, served := false, false
	for {
		select {
		case <-ctx.Done():
			stopping = true
			_ = child.process.Signal(syscall.SIGTERM)
		case <-child.ready:
			served = true
			child.ready = nil
		case <-restart:
			restart = nil
			if child, err = startPlugin(exe, args); err != nil {
				log.Error("starting the plugin again", "err", err)
				return 1
			}
		case sig := <-signals:
			if sig != syscall.SIGCHLD {
				stopping = true
				if restart != nil {
					return 0 // no plugin is running
				}
				_ = child.process.Signal(sig)
				continue
			}
			status, exited := reapChildren(child.process.Pid)
			if !exited {
				continue
			}
			if stopping {
				return status.ExitStatus()
			}
			if !served && !child.readyNow() {
				// The first plugin never served: starting it again would fail the same way.
				if status.Signaled() {
					return 128 + int(status.Signal())
				}
				return status.ExitStatus()
			}
			served = true
			if time.Since(child.started) > healthyRun {
				delay = firstRestartDelay
			}
			log.Error("the plugin died: starting it again; the volumes keep serving", "pid", child.process.Pid, "status", describeStatus(status), "in", delay)
			restart = time.After(delay)
			delay = min(2*delay, lastRestartDelay)
		}
	}
}

// plugin is one run of the supervised plugin.
type plugin struct {
	process *os.Process
	started time.Time
	ready   chan struct{} // closed when the plugin says it serves
}

// readyNow reports whether the plugin said it serves (also when the supervisor has not looked yet).
func (p *plugin) readyNow() bool {
	if p.ready == nil {
		return true
	}
	select {
	case <-p.ready:
		return true
	default:
		return false
	}
}

func startPlugin(exe string, args []string) (*plugin, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	proc, err := os.StartProcess(exe, append([]string{exe}, args...), &os.ProcAttr{
		Env:   append(os.Environ(), SupervisedEnv+"="+strconv.Itoa(supervisedReadyFD)),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, w},
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	p := &plugin{process: proc, started: time.Now(), ready: make(chan struct{})}
	go func() {
		defer r.Close()
		if line, _ := bufio.NewReader(r).ReadString('\n'); strings.TrimSpace(line) == "ready" {
			close(p.ready)
		}
	}()
	return p, nil
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
