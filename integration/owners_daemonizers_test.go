package integration

// The /tmp recipe's daemonizers: real programs that detach (ssh-agent, tmux, start-stop-daemon, a Python
// double fork) started from a "login" that then ends, under --owner cgroup (the README's /tmp unit) and
// --owner session, to show which scope keeps their sockets and pidfiles while they run.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// owLoginScript starts the daemonizers with their files in the mount ($1) and exits, as a login ends.
const owLoginScript = `set -e
m=$1
ssh-agent -a "$m"/agent.sock >/dev/null
tmux -S "$m"/tmux.sock new-session -d sleep 300
start-stop-daemon --start --background --make-pidfile --pidfile "$m"/ssd.pid --exec /bin/sleep -- 300
python3 -c '
import os, sys, time
if os.fork(): os._exit(0)
os.setsid()
if os.fork(): os._exit(0)
open(sys.argv[1] + "/py.pid", "w").write(str(os.getpid()))
time.sleep(300)' "$m" </dev/null >/dev/null 2>&1 &
while [ ! -e "$m"/py.pid ] || [ ! -e "$m"/ssd.pid ]; do sleep 0.01; done
`

func TestOwnerDaemonizersUnderTheTmpRecipe(t *testing.T) {
	for _, tool := range []string{"ssh-agent", "tmux", "start-stop-daemon", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/setup installs it)", tool, err)
		}
	}
	files := []string{"agent.sock", "tmux.sock", "ssd.pid", "py.pid"}
	for _, tc := range []struct {
		scope string
		keeps map[string]bool // what must stay after the login ended, while the daemons run
	}{
		// Every daemonizer stays in the login's cgroup.
		{"cgroup", map[string]bool{"agent.sock": true, "tmux.sock": true, "ssd.pid": true, "py.pid": true}},
		// ssh-agent binds its socket before its own setsid: the login's session owns it, and it goes with the
		// login. A pidfile written after setsid belongs to the daemon's own session.
		{"session", map[string]bool{"agent.sock": false, "py.pid": true}},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			login := owCgroup(t, fmt.Sprintf("tempfs-it-login-%d-%s", os.Getpid(), tc.scope))
			t.Cleanup(func() { _ = os.WriteFile(filepath.Join(login, "cgroup.kill"), []byte("1"), 0) })
			m := startMount(t, "--owner", tc.scope)
			cgfd, err := unix.Open(login, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(cgfd)
			cmd := exec.Command("sh", "-c", owLoginScript, "sh", m.Dir)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: cgfd}
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("the login: %v\n%s", err, out)
			}
			// The login has ended. An owner that ends goes within a second: wait for the daemon to have
			// ended every owner it will (its count stops at the login's), then look.
			want := 0.0
			if tc.scope == "session" {
				want = 1 // the login's session
			}
			eventually(t, tlGoneTimeout, "the login's owner counted", func() bool {
				return daemonStats(t, m.Dir)["owners_gone"].(float64) >= want
			})
			for _, f := range files {
				keep, judged := tc.keeps[f]
				present := !tlGone(t, m.Dir, f)
				switch {
				case !judged:
					t.Logf("--owner %s: %s %s while its daemon runs", tc.scope, f, map[bool]string{true: "stays", false: "goes"}[present])
				case keep:
					tlStaysPresent(t, m.Dir, f, "while its daemon runs, under --owner "+tc.scope)
				default:
					tlWaitGone(t, m.Dir, f, "with the login's session")
				}
			}
			if err := os.WriteFile(filepath.Join(login, "cgroup.kill"), []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
			if tc.scope == "cgroup" {
				for _, f := range files {
					tlWaitGone(t, m.Dir, f, "after every process of the login was killed")
				}
			}
		})
	}
}
