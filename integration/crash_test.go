package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDaemonDeath checks the daemon-death rules (docs/guarantees.md, Lifetimes, last row): after SIGKILL of the
// daemon no byte of file data remains in the store, the dead mount answers ENOTCONN, `tempfs unmount` clears
// it, and the next `tempfs mount` removes the dead daemon's store directory.
func TestDaemonDeath(t *testing.T) {
	m := startMount(t, "--max-size", "64KiB")
	small := bytes.Repeat([]byte("r"), 1000)
	large := bytes.Repeat([]byte("d"), 1<<20)
	if err := os.WriteFile(m.Path("small"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("large"), large, 0o644); err != nil {
		t.Fatal(err)
	}
	stores := storeDirs(t, m.StoreParent)
	if len(stores) != 1 {
		t.Fatalf("store dirs = %v, want one", stores)
	}
	assertNoDataInStore(t, stores[0])
	m.crash(t)

	var st syscall.Stat_t
	if err := syscall.Stat(m.Dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead mount = %v, want ENOTCONN", err)
	}
	assertNoDataInStore(t, stores[0])

	out, err := exec.Command(tempfsBin, "unmount", m.Dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tempfs unmount of a dead mount: %v\n%s", err, out)
	}
	if isMounted(m.Dir) {
		t.Fatal("still mounted after tempfs unmount")
	}

	// The next start with the same store parent removes the dead daemon's store.
	m2 := startMountAt(t, m.Dir, m.StoreParent)
	if _, err := os.Stat(stores[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead daemon's store %s is still there after a new start (err %v)", stores[0], err)
	}
	if names := listDir(t, m2.Dir); len(names) != 0 {
		t.Errorf("a fresh mount lists %q", names)
	}
}

// TestMountOverDeadMount: `tempfs mount` on a mountpoint whose daemon was killed detects the dead mount
// (ENOTCONN), detaches it and mounts afresh.
func TestMountOverDeadMount(t *testing.T) {
	m := startMount(t)
	if err := os.WriteFile(m.Path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.crash(t)
	m2 := startMountAt(t, m.Dir, m.StoreParent)
	if names := listDir(t, m2.Dir); len(names) != 0 {
		t.Errorf("the new mount lists %q, want a fresh empty tree", names)
	}
	if err := os.WriteFile(m2.Path("g"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMountOverUntouchedDeadMount: a dead allow_other mount that nobody touched still answers stat from the
// kernel's cache of its root (default_permissions), yet `tempfs mount` must see that it is dead and mount afresh.
func TestMountOverUntouchedDeadMount(t *testing.T) {
	m := startMount(t, "-o", "allow_other")
	m.crash(t)
	m2 := startMountAt(t, m.Dir, m.StoreParent, "-o", "allow_other")
	if err := os.WriteFile(m2.Path("g"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertNoDataInStore fails if any named file in the store holds data: backing files must be unlinked from the
// moment they exist, so that a killed daemon leaves nothing behind.
func assertNoDataInStore(t *testing.T, store string) {
	t.Helper()
	err := filepath.Walk(store, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() && info.Size() > 0 {
			t.Errorf("store holds a named file with data: %s (%d bytes)", path, info.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
