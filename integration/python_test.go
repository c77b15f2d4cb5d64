package integration

// Python's tempfile works on a tempfs mount (docs/guarantees.md, From Python's tempfile to tempfs). Each case runs a small python3 script in a child
// process that asserts what Python promises and prints OK; the test checks that output and what the script left
// in the directory.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tlPython runs `python3 -c script args...` with extra environment and returns its stdout; it fails the test
// with the script's output if the script fails.
func tlPython(t testing.TB, py, script string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 script failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	return string(out)
}

// tlOKLine checks that out is one line "OK" or "OK VALUE" and returns VALUE.
func tlOKLine(t testing.TB, out string) string {
	t.Helper()
	line := strings.TrimSuffix(out, "\n")
	if line != "OK" && !strings.HasPrefix(line, "OK ") || strings.Contains(line, "\n") {
		t.Fatalf("python3 script printed %q, want one OK line", out)
	}
	return strings.TrimPrefix(strings.TrimPrefix(line, "OK"), " ")
}

const pyNamedDelete = `
import os, stat, sys, tempfile
d = sys.argv[1]
with tempfile.NamedTemporaryFile(dir=d, prefix="ntf", suffix=".dat") as f:
    name = f.name
    base = os.path.basename(name)
    assert os.path.dirname(name) == d, name
    assert os.listdir(d) == [base], os.listdir(d)
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, oct(os.stat(name).st_mode)
    f.write(b"hello named")
    f.flush()
    with open(name, "rb") as g:  # reopenable by its name while open
        assert g.read() == b"hello named"
    f.seek(0)
    assert f.read() == b"hello named"
assert not os.path.exists(name), "still exists after close"
assert os.listdir(d) == [], os.listdir(d)
print("OK", base)
`

const pyNamedKeep = `
import os, stat, sys, tempfile
d = sys.argv[1]
f = tempfile.NamedTemporaryFile(dir=d, prefix="keep", suffix=".txt", delete=False)
f.write(b"persisted by python")
f.close()
assert os.path.exists(f.name)
with open(f.name, "rb") as g:
    assert g.read() == b"persisted by python"
print("OK", os.path.basename(f.name))
`

// pyTemporaryFile checks that TemporaryFile(dir=MOUNT) really takes the O_TMPFILE path: the only os.open it
// makes is open(dir, O_TMPFILE), which succeeded (a fallback would make a second, named open).
const pyTemporaryFile = `
import os, sys, tempfile
d = sys.argv[1]
calls = []
real_open = os.open
def spy(path, flags, *args, **kwargs):
    calls.append((path, flags))
    return real_open(path, flags, *args, **kwargs)
os.open = spy
try:
    f = tempfile.TemporaryFile(dir=d)
finally:
    os.open = real_open
assert len(calls) == 1 and calls[0][0] == d and calls[0][1] & os.O_TMPFILE == os.O_TMPFILE, calls
st = os.fstat(f.fileno())
assert st.st_dev == os.stat(d).st_dev, "not on the mount"
assert st.st_nlink == 0, st
assert os.listdir(d) == [], os.listdir(d)
data = os.urandom(300000)
f.write(data)
f.seek(0)
assert f.read() == data, "data does not round-trip"
assert os.listdir(d) == [], os.listdir(d)
f.close()
assert os.listdir(d) == [], os.listdir(d)
print("OK")
`

// pySpooled checks SpooledTemporaryFile: in memory below max_size, rolled over (a TemporaryFile in dir, on the
// mount) when a write passes it, by fileno(), and by rollover(); data round-trips across the rollover.
const pySpooled = `
import os, sys, tempfile
d = sys.argv[1]
dev = os.stat(d).st_dev

f = tempfile.SpooledTemporaryFile(max_size=1000, dir=d)
f.write(b"a" * 600)
assert not f._rolled
f.write(b"b" * 600)
assert f._rolled, "not rolled over past max_size"
assert os.fstat(f.fileno()).st_dev == dev, "rolled over off the mount"
assert os.listdir(d) == [], os.listdir(d)
f.seek(0)
assert f.read() == b"a" * 600 + b"b" * 600
f.close()

g = tempfile.SpooledTemporaryFile(max_size=10**6, dir=d)
g.write(b"small")
assert not g._rolled
g.rollover()
assert g._rolled
assert os.fstat(g.fileno()).st_dev == dev
g.write(b" and more")
g.seek(0)
assert g.read() == b"small and more"
g.close()

h = tempfile.SpooledTemporaryFile(max_size=10**6, dir=d)
h.write(b"x")
h.fileno()  # asking for a descriptor rolls over
assert h._rolled and os.fstat(h.fileno()).st_dev == dev
h.close()
assert os.listdir(d) == [], os.listdir(d)
print("OK")
`

const pyMkstemp = `
import os, stat, sys, tempfile
d = sys.argv[1]
fd, path = tempfile.mkstemp(dir=d, prefix="ms", suffix=".bin")
assert os.path.dirname(path) == d, path
assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
os.write(fd, b"from mkstemp")
os.close(fd)
assert os.path.exists(path)
print("OK", os.path.basename(path))
`

const pyMkdtemp = `
import os, stat, sys, tempfile
d = sys.argv[1]
path = tempfile.mkdtemp(dir=d, prefix="md", suffix=".d")
assert os.path.dirname(path) == d, path
st = os.stat(path)
assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
with open(os.path.join(path, "inside"), "w") as f:
    f.write("in mkdtemp")
print("OK", os.path.basename(path))
`

const pyTemporaryDirectory = `
import os, sys, tempfile
d = sys.argv[1]
with tempfile.TemporaryDirectory(dir=d) as t:
    assert os.path.dirname(t) == d
    os.makedirs(os.path.join(t, "a", "b"))
    with open(os.path.join(t, "a", "b", "f"), "w") as f:
        f.write("x")
    assert os.listdir(d) == [os.path.basename(t)]
assert not os.path.exists(t)
assert os.listdir(d) == [], os.listdir(d)
print("OK")
`

// pyGettempdir runs with TMPDIR pointing at the mount: gettempdir() (which checks the directory by creating and
// removing a file in it) must choose it, and calls without dir= must use it.
const pyGettempdir = `
import os, sys, tempfile
d = sys.argv[1]
assert tempfile.gettempdir() == d, tempfile.gettempdir()
fd, path = tempfile.mkstemp()
os.write(fd, b"default dir")
os.close(fd)
assert os.path.dirname(path) == d, path
with tempfile.TemporaryFile() as f:
    f.write(b"anonymous")
print("OK", os.path.basename(path))
`

// TestPythonTempfile runs Python's tempfile functions with dir= the mount.
func TestPythonTempfile(t *testing.T) {
	py := requirePython(t)
	m := startMount(t)
	n := 0
	// fresh waits until every earlier handle is released, so that the file count is a stable baseline.
	fresh := func(t *testing.T) (string, int64) {
		tlWaitHandles(t, m, 0)
		n++
		dir := tlFreshDir(t, m, fmt.Sprintf("py%d", n))
		return dir, tlReadStats(t, m).Files
	}
	// filesBack waits until the daemon counts as many files as before: anonymous files were freed.
	filesBack := func(t *testing.T, before int64, what string) {
		t.Helper()
		eventually(t, 10*time.Second, what+": files freed", func() bool { return tlReadStats(t, m).Files == before })
	}
	fileIs := func(t *testing.T, path, content string, mode uint32) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil || string(data) != content {
			t.Fatalf("%s: %q, %v; want %q", path, data, err, content)
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil || st.Mode&0o7777 != mode {
			t.Fatalf("%s: mode %o, %v; want %o", path, st.Mode&0o7777, err, mode)
		}
	}

	// leavesNothing runs a script that makes something that goes with it: it prints its name, and the
	// directory is empty afterwards, with as many files as before.
	leavesNothing := func(t *testing.T, script, what string) string {
		t.Helper()
		dir, before := fresh(t)
		base := tlOKLine(t, tlPython(t, py, script, nil, dir))
		if got := listDir(t, dir); len(got) != 0 {
			t.Fatalf("left %q", got)
		}
		filesBack(t, before, what)
		return base
	}
	// keepsOne runs a script that makes something that stays (with TMPDIR set to the directory when asked):
	// once its handles are closed, it is all the directory holds.
	keepsOne := func(t *testing.T, script string, asTMPDIR bool) (dir, base string) {
		t.Helper()
		dir, _ = fresh(t)
		var env []string
		if asTMPDIR {
			env = []string{"TMPDIR=" + dir}
		}
		base = tlOKLine(t, tlPython(t, py, script, env, dir))
		tlWaitHandles(t, m, 0)
		if got := listDir(t, dir); !slices.Equal(got, []string{base}) {
			t.Fatalf("readdir %q, want [%s]", got, base)
		}
		return dir, base
	}

	t.Run("NamedTemporaryFile/delete=True", func(t *testing.T) {
		if base := leavesNothing(t, pyNamedDelete, "NamedTemporaryFile"); !strings.HasPrefix(base, "ntf") || !strings.HasSuffix(base, ".dat") {
			t.Errorf("name %q", base)
		}
	})

	t.Run("NamedTemporaryFile/delete=False", func(t *testing.T) {
		dir, base := keepsOne(t, pyNamedKeep, false)
		fileIs(t, filepath.Join(dir, base), "persisted by python", 0o600)
	})

	t.Run("TemporaryFile", func(t *testing.T) { leavesNothing(t, pyTemporaryFile, "TemporaryFile") })

	t.Run("SpooledTemporaryFile", func(t *testing.T) { leavesNothing(t, pySpooled, "SpooledTemporaryFile") })

	t.Run("mkstemp", func(t *testing.T) {
		dir, base := keepsOne(t, pyMkstemp, false)
		fileIs(t, filepath.Join(dir, base), "from mkstemp", 0o600)
	})

	t.Run("mkdtemp", func(t *testing.T) {
		dir, base := keepsOne(t, pyMkdtemp, false)
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, base), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != 0o700 {
			t.Fatalf("%s: mode %o, %v; want a 0700 directory", base, st.Mode, err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, base, "inside")); err != nil || string(data) != "in mkdtemp" {
			t.Fatalf("file in the mkdtemp directory: %q, %v", data, err)
		}
	})

	t.Run("TemporaryDirectory", func(t *testing.T) { leavesNothing(t, pyTemporaryDirectory, "TemporaryDirectory") })

	t.Run("TMPDIR", func(t *testing.T) {
		dir, base := keepsOne(t, pyGettempdir, true)
		fileIs(t, filepath.Join(dir, base), "default dir", 0o600)
	})
}
