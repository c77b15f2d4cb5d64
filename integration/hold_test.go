package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// heldDaemon returns the one daemon a holder runs, after checking that it got the holder's fd store: its
// NOTIFY_SOCKET is an abstract socket, FDSTORE a positive count and TEMPFS_HOLDER_PID the holder's pid.
func heldDaemon(t *testing.T, holder int) int {
	t.Helper()
	kids := childrenOf(holder)
	if len(kids) != 1 {
		t.Fatalf("the holder (pid %d) has children %v, want one daemon", holder, kids)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", kids[0]))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(data), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if n, err := strconv.Atoi(env["FDSTORE"]); err != nil || n <= 0 || !strings.HasPrefix(env["NOTIFY_SOCKET"], "@") ||
		env["TEMPFS_HOLDER_PID"] != strconv.Itoa(holder) {
		t.Fatalf("the daemon (pid %d) runs with FDSTORE=%q NOTIFY_SOCKET=%q TEMPFS_HOLDER_PID=%q; want a count, the holder's abstract socket and pid %d",
			kids[0], env["FDSTORE"], env["NOTIFY_SOCKET"], env["TEMPFS_HOLDER_PID"], holder)
	}
	return kids[0]
}

// gone reports whether process pid has exited (a zombie whose parent has not reaped it yet counts).
func gone(pid int) bool {
	_, state := procStat(pid)
	return syscall.Kill(pid, 0) == syscall.ESRCH || state == 'Z'
}

// TestHoldMountServesAndUnmounts: `tempfs mount --hold` becomes the holder of a daemon it starts with the
// fd store variables, reports ready once that daemon is, the mount serves another process, and `tempfs
// unmount` ends daemon and holder (exit status 0) with no mount, store or process left.
func TestHoldMountServesAndUnmounts(t *testing.T) {
	m := startMount(t, "--hold")
	daemon := heldDaemon(t, m.Pid())
	if out := sh(t, m.Dir, `echo held > f && cat f`); strings.TrimSpace(out) != "held" {
		t.Fatalf("read back %q", out)
	}
	if r := cliRun(t, cliQuickExit(), m.Dir+"/..", "", tempfsBin, "unmount", m.Dir); r.code != 0 {
		t.Fatalf("tempfs unmount: exit %d, %s", r.code, r.stderr)
	}
	m.expectExit(t, 30*time.Second)
	if !gone(daemon) {
		t.Errorf("the daemon (pid %d) is still there after the holder exited", daemon)
	}
}

// TestHoldSignalStopsBoth: SIGTERM to the holder reaches the daemon once, which unmounts; both exit 0.
func TestHoldSignalStopsBoth(t *testing.T) {
	m := startMount(t, "--hold")
	daemon := heldDaemon(t, m.Pid())
	m.stop(t) // SIGTERM to the holder; wants exit 0, no mount, no store
	if !gone(daemon) {
		t.Errorf("the daemon (pid %d) is still there after the holder exited", daemon)
	}
	if !strings.Contains(m.Log(), "forwarding a signal to the daemon") || !strings.Contains(m.Log(), "msg=unmounted") {
		t.Errorf("want the signal forwarded and the daemon unmounting; log:\n%s", m.Log())
	}
}

// checkHoldExample is the check of `tempfs mount --daemon --hold /scratch`: it returns once mounted, with a
// holder in the background whose child daemon serves the mount with the fd store variables; `tempfs unmount`
// ends both. (That a daemon killed while holding its FUSE descriptor is replaced is the daemon's part: its
// recovery's tests check it.)
func checkHoldExample(t *testing.T, e *exampleEnv, ex string) {
	e.unmountAtEnd(t, e.scratch)
	r := e.run(t, ex, "")
	wantExit0(t, ex, r)
	if !isMounted(e.scratch) {
		t.Fatalf("%s: %s not mounted", ex, e.scratch)
	}
	holder := 0
	entries, _ := os.ReadDir("/proc")
	for _, de := range entries {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", de.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if strings.Contains(string(cmdline), "\x00--hold") && len(args) > 1 && args[len(args)-2] == e.scratch {
			holder = pid
		}
	}
	if holder == 0 {
		t.Fatalf("%s: no holder process for %s", ex, e.scratch)
	}
	daemon := heldDaemon(t, holder)
	if err := os.WriteFile(filepath.Join(e.scratch, "f"), []byte("held"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cliRun(t, cliQuickExit(), e.work, "", tempfsBin, "unmount", e.scratch); r.code != 0 {
		t.Fatalf("tempfs unmount: exit %d, %s", r.code, r.stderr)
	}
	eventually(t, 30*time.Second, "holder and daemon gone after tempfs unmount", func() bool { return gone(holder) && gone(daemon) })
}

func init() {
	exampleChecks["tempfs mount --daemon --hold /scratch"] = checkHoldExample
}
