package integration

// Owners (docs/guarantees.md, Owners) at scale: many short-lived owners are all cleaned up, and the daemon holds a descriptor
// per live owner only while it lives.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// owDaemonPidfds counts the daemon's pidfds (one per live process that made entries).
func owDaemonPidfds(t testing.TB, m *mount) int {
	t.Helper()
	n := 0
	for _, target := range daemonFdTargets(t, m) {
		if target == "anon_inode:[pidfd]" {
			n++
		}
	}
	return n
}

// owDaemonRSS is the daemon's resident memory in KiB (VmRSS).
func owDaemonRSS(t testing.TB, m *mount) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// owForkScript forks N children that each make one file and then exit, or, with "hold", live until the
// parent dies (they wait for the end of a pipe the parent holds). It prints "ready" once every child has made
// its file.
const owForkScript = `
import os, sys, time
m, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
r, w = os.pipe()
kids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        with open("%s/f%d" % (m, i), "w") as f: f.write("x")
        if hold: os.read(r, 1)
        os._exit(0)
    kids.append(pid)
    if not hold: os.waitpid(pid, 0)
os.close(r)
if hold:
    # Each child has made its file once the directory lists them all.
    while len(os.listdir(m)) < n: pass
print("ready", flush=True)
time.sleep(300)
`

// TestOwnerManyShortLivedOwners: 10,000 processes each make a file and exit; every file goes, and the
// daemon's descriptors come back to where they were.
func TestOwnerManyShortLivedOwners(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 processes")
	}
	python := requirePython(t)
	m := startMount(t, "--owner", "process")
	baseline := len(daemonFdTargets(t, m))
	const n = 10000
	start := time.Now()
	owStart(t, nil, python, "-c", owForkScript, m.Dir, strconv.Itoa(n), "exit")
	made := time.Since(start)
	eventually(t, time.Minute, "every short-lived owner's file removed", func() bool {
		return daemonStats(t, m.Dir)["files"].(float64) == 0
	})
	cleaned := time.Since(start)
	eventually(t, tlGoneTimeout, "the daemon's descriptors back to their baseline", func() bool { return len(daemonFdTargets(t, m)) <= baseline })
	st := daemonStats(t, m.Dir)
	if st["entries_removed_with_owner"].(float64) != n || st["owners_live"].(float64) > 1 {
		t.Errorf("removed %v entries with their owners (want %d), %v owners live", st["entries_removed_with_owner"], n, st["owners_live"])
	}
	t.Logf("%d owners: made in %v, all removed %v after the start; daemon descriptors %d before, %d after",
		n, made.Round(time.Millisecond), cleaned.Round(time.Millisecond), baseline, len(daemonFdTargets(t, m)))
}

// TestOwnerMemoryPerLiveOwner measures what a live owner costs the daemon: one descriptor (its pidfd), and
// memory: the daemon's RSS growth for 1,000 processes holding one file each, with --owner process and, as the
// reference, with --owner none (logged, not judged: RSS is noisy). The owners' ends then release every
// descriptor.
func TestOwnerMemoryPerLiveOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 processes")
	}
	python := requirePython(t)
	const n = 1000
	growth := map[string]int{}
	for _, scope := range []string{"none", "process"} {
		m := startMount(t, "--owner", scope)
		// One entry first, so that first-use costs (maps, goroutines, buffers) are not counted per owner.
		warm, _ := owStart(t, nil, "sh", "-c", `echo > "$1"/warm && echo ready && exec sleep 300`, "sh", m.Dir)
		baseFds, basePidfds, baseRSS := len(daemonFdTargets(t, m)), owDaemonPidfds(t, m), owDaemonRSS(t, m)
		holder, _ := owStart(t, nil, python, "-c", owForkScript, m.Path(), strconv.Itoa(n), "hold")
		pidfds := owDaemonPidfds(t, m)
		growth[scope] = owDaemonRSS(t, m) - baseRSS
		want := 0
		if scope == "process" {
			want = n
		}
		if pidfds-basePidfds != want {
			t.Errorf("--owner %s: %d live processes with a file each hold %d more pidfds, want %d", scope, n, pidfds-basePidfds, want)
		}
		owKill(t, holder) // its children read the end of the pipe and exit
		if scope == "process" {
			eventually(t, time.Minute, "every owner's file removed", func() bool { return daemonStats(t, m.Dir)["files"].(float64) == 1 })
			eventually(t, tlGoneTimeout, "descriptors released", func() bool { return len(daemonFdTargets(t, m)) <= baseFds })
		}
		owKill(t, warm)
		m.stop(t)
	}
	t.Logf("%d live processes with one file each: daemon RSS %+d KiB with --owner none, %+d KiB with --owner process: "+
		"%.2f KiB per live owner, besides its pidfd", n, growth["none"], growth["process"],
		float64(growth["process"]-growth["none"])/n)
}
