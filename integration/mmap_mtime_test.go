package integration

import (
	"strings"
	"testing"
)

// TestMappedWriteMovesMtime: a write through a shared mapping of a file served by passthrough (past
// --max-size, so in the disk store) moves its mtime for a stat at once, while the file is mapped, after munmap
// and after close, as on tmpfs; and an mtime set with utimens before stays what stat shows until then. The
// kernel writes such a file without the daemon and, for a mapping, does not ask for attributes again by itself.
func TestMappedWriteMovesMtime(t *testing.T) {
	ref := coreTmpfs(t)
	m := startMount(t, "--max-size", "64KiB")
	const script = `
import mmap, os, time
old = 10**18
p = "big"
with open(p, "wb") as f:
    f.write(b"x" * (1 << 20))
# Not synchronization: file times are taken from a clock that moves once per jiffy (up to 10 ms), so the
# first write's mtime must be well before the mapped write's for the two to be told apart below.
time.sleep(0.05)
os.utime(p, ns=(old, old))
fd = os.open(p, os.O_RDWR)
print("open, stat: mtime as set", os.stat(p).st_mtime_ns == old)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED)
print("mmap, stat: mtime as set", os.stat(p).st_mtime_ns == old)
before = time.time_ns() - 20 * 10**6
m[0:5] = b"hello"
print("write through the mapping, stat: mtime at the write", os.stat(p).st_mtime_ns >= before)
m.close()
print("munmap, stat: mtime at the write", os.stat(p).st_mtime_ns >= before)
os.close(fd)
print("close, stat: mtime at the write", os.stat(p).st_mtime_ns >= before)
print("data", open(p, "rb").read(5))
`
	run := func(dir string) string {
		out, code := coreRunScript(t, dir, "python3 -c '"+strings.ReplaceAll(script, "'", `'"'"'`)+"'")
		if code != 0 {
			t.Fatalf("in %s: exit %d:\n%s", dir, code, out)
		}
		return out
	}
	want, got := run(ref), run(m.Dir)
	t.Logf("tmpfs:\n%s", want)
	if got != want {
		t.Errorf("tempfs differs from tmpfs:\ntempfs:\n%s\ntmpfs:\n%s", got, want)
	}
	if spool := sh(t, m.Dir, "getfattr --only-values -n user.tempfs.spool big"); spool != "disk" {
		t.Errorf("the file is in %q, not on disk", spool)
	}
	if st := daemonStats(t, m.Dir); st["passthrough_opens"] != float64(2) {
		t.Errorf("passthrough_opens %v, want 2 (the mapped handle and the last read): not served by passthrough", st["passthrough_opens"])
	}
	coreNoDaemonComplaints(t, m.Log())
}
