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
	if !strings.Contains(m.Log(), "failed to write a file back") {
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
// young entry, even one whose mtime was set 2 h back (tar x, cp -p); an entry idle past --max-age goes, even
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
	// 50 s of the daemon's life pass; then the young entries are made (9 files and a directory).
	setTestClock(t, clockFile, 0, 50*time.Second)
	young := []string{"young/a", "young/b", "young/c", "y1", "y2", "y3", "y4", "y5", "backdated"}
	for _, name := range young {
		write(name)
	}
	back := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(m.Path("backdated"), back, back); err != nil {
		t.Fatal(err)
	}
	// The wall clock steps 2 h forward while 20 more seconds pass.
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
