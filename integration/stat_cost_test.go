package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestStatAsksNoSyscall: answering a file's st_blocks costs the daemon no syscall. A find that stats 2,000
// small files just written (each answered by GETATTR or READDIRPLUS) makes the daemon read /dev/fuse once per
// request and nothing else; before, each answer also read the file's bytes (pread) to tell its st_blocks.
func TestStatAsksNoSyscall(t *testing.T) {
	m := startMount(t)
	const files = 2000
	sh(t, m.Dir, `python3 -c '
for i in range(`+strconv.Itoa(files)+`):
    with open("f%d" % i, "wb") as f:
        f.write(b"x" * 100)
'`)
	requests := func() float64 {
		return daemonStats(t, m.Dir)["requests"].(map[string]any)["total"].(float64)
	}
	readSyscalls := func() int {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(m.Pid()) + "/io")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no syscr in /proc/PID/io")
		return 0
	}
	q0 := requests()
	r0 := readSyscalls()
	out, err := exec.Command("find", m.Dir, "-type", "f", "-printf", "%b\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	r1 := readSyscalls()
	q1 := requests()
	if n := strings.Count(string(out), "\n"); n != files {
		t.Fatalf("find listed %d files, want %d", n, files)
	}
	// Every request is one read of /dev/fuse; what is left are reads of file data.
	extra := (r1 - r0) - int(q1-q0)
	t.Logf("find over %d files: %d requests, %d read syscalls, %d beyond one per request", files, int(q1-q0), r1-r0, extra)
	if extra > files/10 {
		t.Errorf("the daemon made %d read syscalls beyond one per request while %d files were stat'ed", extra, files)
	}
}
