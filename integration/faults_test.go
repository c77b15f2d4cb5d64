package integration

// Faults an operator's machine meets, where tempfs must not lose data silently: a store whose disk fails
// writeback (fsync answers the error), a wall clock that steps (--max-age counts idle time as the daemon lived
// it), and a memory cgroup limit below --memory (the RAM tier stays under it instead of being OOM-killed).

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireRootTools fails (under CI=true) or skips a test that needs root and the named programs.
func requireRootTools(t testing.TB, tools ...string) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "not root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && reason == "" {
			reason = "no " + tool
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run (%s), and CI=true forbids skipping", reason)
	}
	t.Skipf("cannot run: %s", reason)
}

// run runs a command and fails the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// failingStore makes a store parent whose writeback fails: ext4 on a loop device whose backing file lives on
// a tmpfs of tmpfsSize that is smaller than the ext4 (thin provisioning that runs out). mkfs writes all of
// the metadata up front, so that only new data blocks fail. Everything is undone in t.Cleanup.
func failingStore(t *testing.T, tmpfsSize string, ext4Size int64) string {
	t.Helper()
	requireRootTools(t, "mkfs.ext4", "losetup", "mount", "umount")
	base := t.TempDir()
	backing, store := filepath.Join(base, "backing"), filepath.Join(base, "store")
	for _, d := range []string{backing, store} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size="+tmpfsSize, "tempfs-test-backing", backing)
	t.Cleanup(func() {
		if err := syscall.Unmount(backing, 0); err != nil {
			t.Errorf("unmount the backing tmpfs: %v", err)
		}
	})
	img := filepath.Join(backing, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(ext4Size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-N", "1024", "-J", "size=4", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", img)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	run(t, "mount", "-t", "ext4", dev, store)
	t.Cleanup(func() {
		if err := syscall.Unmount(store, 0); err != nil {
			t.Errorf("unmount the ext4 store: %v", err)
		}
	})
	return store
}

// TestFsyncReportsStoreWritebackError: a file spilled to a store whose disk fails writeback answers fsync with
// the store's error (EIO or ENOSPC), to each open file once, as a disk filesystem does; a RAM file's fsync
// succeeds. (It answered 0, and the file read back with zeros once the page cache was dropped.)
func TestFsyncReportsStoreWritebackError(t *testing.T) {
	requireFUSE(t)
	store := failingStore(t, "24m", 256<<20)
	m := startMountAt(t, t.TempDir(), store, "--max-size", "1MiB")

	small, err := os.Create(m.Path("ram"))
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := small.Write([]byte("stays in RAM")); err != nil {
		t.Fatal(err)
	}

	big, err := os.Create(m.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	// Another open file of the same file, opened before the loss: it is told too.
	other, err := os.Open(m.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for i := 0; i < 60; i++ {
		if _, err := big.Write(chunk); err != nil {
			t.Fatalf("write %d MiB: %v", i, err)
		}
	}
	if tier := getxattrString(t, m.Path("big"), "user.tempfs.spool"); tier != "disk" {
		t.Fatalf("60 MiB file is in %q, want disk", tier)
	}
	err = big.Sync()
	if !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fsync of a file whose writeback to the store failed: %v, want EIO or ENOSPC", err)
	} else {
		t.Logf("fsync: %v", err)
	}
	if err := big.Sync(); err != nil {
		t.Errorf("second fsync of the same open file: %v, want nil (an error is told once)", err)
	}
	if err := other.Sync(); !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fsync of another open file of it, opened before the loss: %v, want EIO or ENOSPC", err)
	}
	later, err := os.Open(m.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	if err := later.Sync(); err != nil {
		t.Errorf("fsync of a file opened after the error was told: %v, want nil", err)
	}
	if err := small.Sync(); err != nil {
		t.Errorf("fsync of a RAM file while the store fails: %v", err)
	}
	// A handle opened alone on the disk file is served by passthrough (the kernel writes the backing file
	// itself); its fsync still reaches the daemon and answers a new loss.
	for _, f := range []*os.File{big, other, later} {
		f.Close()
	}
	pt, err := os.OpenFile(m.Path("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	for i := 0; i < 16; i++ {
		if _, err := pt.Write(chunk); err != nil {
			t.Fatalf("appending %d MiB: %v", i, err)
		}
	}
	if st := daemonStats(t, m.Dir); st["passthrough_opens"] != float64(1) {
		t.Logf("passthrough_opens %v: the handle is served by the daemon on this kernel", st["passthrough_opens"])
	}
	if err := pt.Sync(); !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fsync after 16 MiB more were lost, through a handle opened alone on the disk file: %v, want EIO or ENOSPC", err)
	}
	if !strings.Contains(m.LogWith("failed to write a file back"), "failed to write a file back") {
		t.Errorf("the daemon's log does not name the store's writeback failure:\n%s", m.Log())
	}
}

// within polls cond until it holds (true) or d passes (false), for a test that goes on to say more.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// getxattrString reads an xattr as a string.
func getxattrString(t testing.TB, path, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(path, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return string(buf[:n])
}

// setTestClock moves the daemon's clock (TEMPFS_TEST_CLOCK, a test-only hook): wall and mono are offsets from
// the system's clock, which no test may step. The file is replaced by rename, so the daemon never reads half.
func setTestClock(t testing.TB, path string, wall, mono time.Duration) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%s %s\n", wall, mono)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestMaxAgeCountsElapsedTime: --max-age counts the time an entry went unused as the daemon lived it. With the
// daemon's clock injected (the system clock is never stepped): a wall-clock step of 2 h forward removes no
// young entry, even one whose times were set 2 h back (tar x, cp -p); an entry idle past --max-age goes, even
// one whose mtime was set 2 h ahead; after a step 2 h back, entries idle past --max-age still go. stat keeps
// showing the wall clock. (On the old code a wall-clock step of 2 h removed every entry within a second.)
func TestMaxAgeCountsElapsedTime(t *testing.T) {
	requireFUSE(t)
	clockFile := filepath.Join(t.TempDir(), "clock")
	setTestClock(t, clockFile, 0, 0)
	m := startMountEnv(t, t.TempDir(), t.TempDir(), []string{"TEMPFS_TEST_CLOCK=" + clockFile}, "--max-age", "1m")

	write := func(name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(m.Path(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m.Path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A file's last use includes its last RELEASE, which the kernel sends after close returns, in the
	// background: the daemon must have seen every one before its clock moves, or a late RELEASE makes its file
	// young at the new time.
	released := func() {
		t.Helper()
		eventually(t, 10*time.Second, "every handle released", func() bool { return spoolGetStats(t, m).OpenHandles == 0 })
	}
	gone := func(name string) bool {
		_, err := os.Lstat(m.Path(name))
		return errors.Is(err, os.ErrNotExist)
	}
	// Made at the daemon's time 0: idle past --max-age once its clock reads 70 s.
	write("old")
	write("olddir/file")
	write("future")
	ahead := time.Now().Add(2 * time.Hour)
	if err := os.Chtimes(m.Path("future"), ahead, ahead); err != nil {
		t.Fatal(err)
	}
	// 50 s of the daemon's life pass; then the young entries are made (9 files and 2 directories).
	released()
	setTestClock(t, clockFile, 0, 50*time.Second)
	young := []string{"young/a", "young/b", "young/c", "y1", "y2", "y3", "y4", "y5", "backdated"}
	for _, name := range young {
		write(name)
	}
	// A file and a directory whose times are set 2 h back, as tar x and cp -p set them.
	if err := os.Mkdir(m.Path("extracted"), 0o755); err != nil {
		t.Fatal(err)
	}
	young = append(young, "extracted")
	back := time.Now().Add(-2 * time.Hour)
	for _, name := range []string{"backdated", "extracted"} {
		if err := os.Chtimes(m.Path(name), back, back); err != nil {
			t.Fatal(err)
		}
	}
	// The wall clock steps 2 h forward while 20 more seconds pass.
	released()
	setTestClock(t, clockFile, 2*time.Hour, 70*time.Second)
	if !within(15*time.Second, func() bool { return gone("old") && gone("olddir") && gone("future") }) {
		t.Errorf("after 15s: entries idle for 70 s of the daemon's life not reaped under --max-age 1m (gone: old %v, olddir %v, future %v)",
			gone("old"), gone("olddir"), gone("future"))
	}
	for _, name := range young {
		if gone(name) {
			t.Errorf("%s, used 20 s ago by the daemon's clock, was reaped after a wall-clock step of 2 h", name)
		}
	}
	// stat shows the wall clock, stepped.
	write("stamped")
	st, err := os.Stat(m.Path("stamped"))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(st.ModTime()); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Errorf("mtime of a file made after the step is %v from the system's clock, want 2h (stat shows the daemon's wall clock)", d)
	}
	// The wall clock steps back 4 h (2 h behind the system's) while the young entries go idle past --max-age.
	released()
	setTestClock(t, clockFile, -2*time.Hour, 140*time.Second)
	eventually(t, 15*time.Second, "entries idle for 90 s of the daemon's life reaped after a wall-clock step back", func() bool {
		for _, name := range append(young, "young", "stamped") {
			if !gone(name) {
				return false
			}
		}
		return true
	})
}

// memoryCgroup makes a memory cgroup limited to limit bytes, found through /proc/self/mountinfo: under the
// cgroup v1 memory hierarchy, or else under the cgroup v2 root when it delegates the memory controller. It
// returns the cgroup's directory and its limit file; t.Cleanup removes it (after the daemon in it is gone).
func memoryCgroup(t *testing.T, limit int64) (dir, limitFile string) {
	t.Helper()
	requireRootTools(t)
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var v1, v2 string
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			if f != "-" || i+3 >= len(fields) || fields[3] != "/" {
				continue
			}
			switch {
			case fields[i+1] == "cgroup" && strings.Contains(","+fields[i+3]+",", ",memory,"):
				v1 = fields[4]
			case fields[i+1] == "cgroup2":
				v2 = fields[4]
			}
		}
	}
	name := fmt.Sprintf("tempfs-faults-%d", os.Getpid())
	switch {
	case v1 != "":
		dir, limitFile = filepath.Join(v1, name), "memory.limit_in_bytes"
	case v2 != "":
		if ctl, _ := os.ReadFile(filepath.Join(v2, "cgroup.subtree_control")); !strings.Contains(" "+string(ctl)+" ", " memory ") {
			v2 = ""
			break
		}
		dir, limitFile = filepath.Join(v2, name), "memory.max"
	}
	if dir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cgroup v1 memory hierarchy and no cgroup v2 memory controller, and CI=true forbids skipping")
		}
		t.Skip("no memory cgroup controller to limit a daemon with")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("making a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		eventually(t, 10*time.Second, "the test cgroup can be removed", func() bool { return syscall.Rmdir(dir) == nil })
	})
	limitFile = filepath.Join(dir, limitFile)
	if err := os.WriteFile(limitFile, []byte(fmt.Sprint(limit)), 0); err != nil {
		t.Fatalf("limiting the test cgroup: %v", err)
	}
	return dir, limitFile
}

// startMountInCgroup is startMount with the daemon in cgroup dir from its first instruction: a shell joins the
// cgroup and execs `tempfs mount` (the same process), so the daemon reads its limit at start.
func startMountInCgroup(t *testing.T, cgroup string, args ...string) *mount {
	t.Helper()
	return launchMountVia(t, inCgroup(cgroup), t.TempDir(), t.TempDir(), nil, nil, args...)
}

// inCgroup is a wrapper command that joins a cgroup (v1 or v2) and execs the rest of its arguments.
func inCgroup(cgroup string) []string {
	return []string{"sh", "-ec", `echo $$ > "$0"/cgroup.procs; exec "$@"`, cgroup}
}

// cgroupUnreclaimable is what the cgroup holds that the kernel can neither reclaim nor swap out here: anonymous
// memory and shmem (the daemon's heap and its memfds).
func cgroupUnreclaimable(t testing.TB, cgroup string) int64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cgroup, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	stat := map[string]int64{}
	for _, line := range strings.Split(string(raw), "\n") {
		var key string
		var v int64
		if _, err := fmt.Sscan(line, &key, &v); err == nil {
			stat[key] = v
		}
	}
	if _, v1 := stat["total_rss"]; v1 {
		return stat["total_rss"] + stat["total_shmem"]
	}
	return stat["anon"] + stat["shmem"]
}

// writeFiles writes n files of size bytes, each with its own pattern, and stops at the first error.
func writeFiles(m *mount, prefix string, n, size int) error {
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		for j := range buf {
			buf[j] = byte(i + j*31)
		}
		if err := os.WriteFile(m.Path(fmt.Sprintf("%s%03d", prefix, i)), buf, 0o644); err != nil {
			return fmt.Errorf("file %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

// checkFiles reads back what writeFiles wrote.
func checkFiles(t testing.TB, m *mount, prefix string, n, size int) {
	t.Helper()
	want := make([]byte, size)
	for i := 0; i < n; i++ {
		for j := range want {
			want[j] = byte(i + j*31)
		}
		got, err := os.ReadFile(m.Path(fmt.Sprintf("%s%03d", prefix, i)))
		if err != nil || string(got) != string(want) {
			t.Fatalf("file %s%03d read back wrong (%d bytes, %v)", prefix, i, len(got), err)
		}
	}
}

// TestMemoryCapUnderCgroupLimit: --memory 1GiB given to a daemon whose memory cgroup allows 384 MiB keeps its
// RAM files under three quarters of the limit, says so in one warning line and in status, and writing more
// than the limit spills to disk instead of an OOM kill (which lost every file). When the limit is lowered
// while mounted, RAM files spill down under the new ceiling and the mount goes on.
func TestMemoryCapUnderCgroupLimit(t *testing.T) {
	requireFUSE(t)
	const MiB = 1 << 20
	cg, limitFile := memoryCgroup(t, 384*MiB)
	m := startMountInCgroup(t, cg, "--memory", "1GiB", "--max-size", "4MiB")

	st := spoolGetStats(t, m)
	if st.RAMCap != 288*MiB || !strings.Contains(st.RAMCapSource, "cgroup") {
		t.Errorf("ram_cap %d from %q under a 384 MiB limit with --memory 1GiB; want 288 MiB from the cgroup limit", st.RAMCap, st.RAMCapSource)
	}
	if log := m.LogWith("--memory 1 GiB does not fit"); !strings.Contains(log, "--memory 1 GiB does not fit") || !strings.Contains(log, "limit 384 MiB") || !strings.Contains(log, "under 288 MiB") {
		t.Errorf("no warning naming --memory 1 GiB, the 384 MiB limit and the 288 MiB kept; log:\n%s", log)
	}
	// 400 files of 1 MiB, each small enough for RAM by --max-size: more than the whole limit.
	if err := writeFiles(m, "a", 400, MiB); err != nil {
		t.Fatalf("writing 400 MiB of RAM-sized files under a 384 MiB memory limit: %v; log:\n%s", err, m.Log())
	}
	checkFiles(t, m, "a", 400, MiB)
	st = spoolGetStats(t, m)
	if st.RAMBytes > 288*MiB || st.Rollovers == 0 {
		t.Errorf("after 400 MiB: ram_bytes %d, rollovers %d; want at most 288 MiB in RAM and the rest spilled", st.RAMBytes, st.Rollovers)
	}

	// Lower the limit while mounted, above what the cgroup cannot give back (so that the kernel takes it) but
	// with a ceiling below what the RAM files hold now: they must spill down.
	// cgroup v1 refuses (EBUSY) a limit it cannot reclaim down to in time: a little more then.
	hard := cgroupUnreclaimable(t, cg)
	lowered := (hard + 24*MiB + MiB - 1) / MiB * MiB
	for {
		if lowered/4*3 >= st.RAMBytes {
			t.Fatalf("cannot lower the limit to below what RAM files hold: unreclaimable %d, ram_bytes %d, tried %d", hard, st.RAMBytes, lowered)
		}
		err := os.WriteFile(limitFile, []byte(fmt.Sprint(lowered)), 0)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) {
			t.Fatalf("lowering the limit to %d (unreclaimable %d): %v", lowered, hard, err)
		}
		lowered += 4 * MiB
	}
	ceiling := lowered / 4 * 3
	t.Logf("limit lowered from 384 MiB to %d MiB (unreclaimable %d MiB, RAM files %d MiB)", lowered/MiB, hard/MiB, st.RAMBytes/MiB)
	if !within(10*time.Second, func() bool {
		st = spoolGetStats(t, m)
		return st.RAMCap == ceiling && st.RAMBytes <= ceiling
	}) {
		t.Fatalf("10s after the limit was lowered to %d: ram_cap %d, ram_bytes %d; want both at most %d", lowered, st.RAMCap, st.RAMBytes, ceiling)
	}
	if err := writeFiles(m, "b", 64, MiB); err != nil {
		t.Fatalf("writing 64 MiB more under the lowered limit: %v; log:\n%s", err, m.Log())
	}
	checkFiles(t, m, "a", 400, MiB)
	checkFiles(t, m, "b", 64, MiB)
	if st = spoolGetStats(t, m); st.RAMBytes > ceiling {
		t.Errorf("ram_bytes %d over the lowered ceiling %d", st.RAMBytes, ceiling)
	}
}
