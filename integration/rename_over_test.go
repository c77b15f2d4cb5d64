package integration

// Rename over an existing name is atomic for every other process (POSIX rename(2): no point at which another
// process finds the name missing). The write-then-rename of sed -i, editors, install, package managers and
// pid files relies on it. The kernel looks the old file up before the rename drops its last name; the file
// must stay usable by that lookup (open, truncate, execve) until the kernel forgets it.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// renameOverWorker is one side of the race: "rename" writes fresh copies of a file and renames each over
// the target; "open", "exec" and "truncate" use the target by its name. Each runs for the seconds given and
// prints {"tries": n, "fails": {"ENOENT": k, ...}} (failures by errno name).
const renameOverWorker = `import errno, json, os, sys, time
mode, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
content = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else b""
end = time.monotonic() + seconds
tries, fails = 0, {}
def fail(e):
    name = errno.errorcode.get(e.errno, str(e.errno))
    fails[name] = fails.get(name, 0) + 1
tmp = target + ".new." + str(os.getpid())
while time.monotonic() < end:
    tries += 1
    try:
        if mode == "rename":
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
            os.write(fd, content)
            os.close(fd)
            os.rename(tmp, target)
        elif mode == "open":
            flags = os.O_RDONLY if tries % 2 else os.O_RDWR | os.O_CREAT
            os.close(os.open(target, flags, 0o644))
        elif mode == "truncate":
            os.truncate(target, len(content))  # the same size: only the SETATTR matters
        elif mode == "exec":
            pid = os.posix_spawn(target, [target], {})
            _, status = os.waitpid(pid, 0)
            if status != 0:
                fails["exit"] = fails.get("exit", 0) + 1
    except OSError as e:
        fail(e)
print(json.dumps({"tries": tries, "fails": fails}))
`

type renameOverResult struct {
	Tries int            `json:"tries"`
	Fails map[string]int `json:"fails"`
}

// renameOverRace runs, in dir, one renamer and one user per operation at once, each pair on its own target,
// for the given time, and returns each user's result.
func renameOverRace(t *testing.T, dir string, seconds float64) map[string]renameOverResult {
	t.Helper()
	script := filepath.Join(t.TempDir(), "worker.py")
	if err := os.WriteFile(script, []byte(renameOverWorker), 0o644); err != nil {
		t.Fatal(err)
	}
	// The exec target is a real program, so that execve opens and maps it; the others are small data files.
	prog, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(data, []byte(strings.Repeat("config line\n", 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	type job struct {
		op, target, content string
	}
	jobs := []job{{"open", "target-open", data}, {"truncate", "target-truncate", data}, {"exec", "target-exec", prog}}
	results := map[string]renameOverResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, j := range jobs {
		target := filepath.Join(dir, j.target)
		content, err := os.ReadFile(j.content)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, content, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, op := range []string{"rename", j.op} {
			cmd := exec.Command("python3", script, op, target, strconv.FormatFloat(seconds, 'f', -1, 64), j.content)
			cmd.Stderr = os.Stderr
			out := &strings.Builder{}
			cmd.Stdout = out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := cmd.Wait()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s worker on %s: %v", op, target, err)
					return
				}
				var r renameOverResult
				if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
					t.Errorf("%s worker on %s printed %q: %v", op, target, out.String(), err)
					return
				}
				results[op+" "+j.target] = r
			}()
		}
	}
	wg.Wait()
	return results
}

// TestRenameOverAtomic renames fresh copies over a name in a loop while other processes open, truncate and
// execute it by that name, for 5 s per operation, on a tmpfs and on tempfs: no try may fail on either.
func TestRenameOverAtomic(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t)
	for _, fs := range []struct{ name, dir string }{{"tmpfs", ref}, {"tempfs", m.Dir}} {
		results := renameOverRace(t, fs.dir, 5)
		for key, r := range results {
			t.Logf("%s: %s: %d tries, failures %v", fs.name, key, r.Tries, r.Fails)
			if strings.HasPrefix(key, "rename ") {
				if len(r.Fails) > 0 {
					t.Errorf("%s: %s: the renamer failed: %v", fs.name, key, r.Fails)
				}
				continue
			}
			if r.Tries < 50 {
				t.Errorf("%s: %s: only %d tries in 5 s", fs.name, key, r.Tries)
			}
			failed := 0
			for _, n := range r.Fails {
				failed += n
			}
			if failed > 0 {
				t.Errorf("%s: %s: %d of %d tries failed (%.1f%%): %v", fs.name, key, failed, r.Tries,
					100*float64(failed)/float64(r.Tries), r.Fails)
			}
		}
	}
	coreNoDaemonComplaints(t, m.Log())
}

// TestUnlinkedRAMReturns measures how long after `rm` of 10k small files the status shows their RAM free: a
// removed file's bytes go when the kernel forgets its node (FORGET), which it does as soon as its last
// reference goes, so within the deadline below and in practice milliseconds.
func TestUnlinkedRAMReturns(t *testing.T) {
	m := startMount(t)
	base := daemonStats(t, m.Dir)["ram_bytes"].(float64)
	sh(t, m.Dir, `mkdir d && python3 -c '
import os
for i in range(10000):
    with open("d/f%d" % i, "wb") as f:
        f.write(b"x" * 100)
'`)
	full := daemonStats(t, m.Dir)["ram_bytes"].(float64)
	if full <= base {
		t.Fatalf("ram_bytes %v after writing 10k files, %v before", full, base)
	}
	start := time.Now()
	sh(t, m.Dir, `rm -r d`)
	rmTook := time.Since(start)
	eventually(t, 10*time.Second, "the RAM of 10k removed files returned", func() bool {
		st := daemonStats(t, m.Dir)
		return st["ram_bytes"].(float64) <= base && st["files"].(float64) == 0
	})
	t.Logf("rm -r of 10k files of 100 bytes took %v; ram_bytes back to %v (from %v) %v after rm returned",
		rmTook.Round(time.Millisecond), base, full, (time.Since(start) - rmTook).Round(time.Millisecond))
}
