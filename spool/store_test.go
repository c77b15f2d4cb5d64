package spool

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// dirNames lists a directory's entries, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenStoreMakesPrivateDir(t *testing.T) {
	parent := t.TempDir()
	s, err := OpenStore(parent)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(s.Path()) != parent || !regexp.MustCompile(`^tempfs-store-[a-z0-9]{10}$`).MatchString(filepath.Base(s.Path())) {
		t.Errorf("store path %q is not %s/tempfs-store-XXXXXXXXXX", s.Path(), parent)
	}
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Errorf("store dir: mode %v uid %d, want a 0700 directory of ours", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	if got := dirNames(t, s.Path()); !slices.Equal(got, []string{".lock"}) {
		t.Errorf("new store holds %v, want only .lock", got)
	}
	if free, err := s.FreeBytes(); err != nil || free <= 0 {
		t.Errorf("FreeBytes = %d, %v", free, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store dir after Close: %v, want it gone", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := s.CreateBacking(); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateBacking after Close: %v, want ErrClosed", err)
	}
}

// TestCreateBackingHasNoName checks both ways of making a backing file: with data in them, the
// store directory still holds only its lock.
func TestCreateBackingHasNoName(t *testing.T) {
	for _, tmpfile := range []bool{true, false} {
		name := map[bool]string{true: "O_TMPFILE", false: "named then unlinked"}[tmpfile]
		t.Run(name, func(t *testing.T) {
			s, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.tmpfileUnsupported.Store(!tmpfile)
			var files []*os.File
			for range 3 {
				f, err := s.CreateBacking()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte("data"), 0); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			if got := dirNames(t, s.Path()); !slices.Equal(got, []string{".lock"}) {
				t.Errorf("store holds %v with backing files open, want only .lock", got)
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(files[0].Fd()), &st); err != nil || st.Nlink != 0 || st.Mode&0o777 != 0o600 {
				t.Errorf("backing file: nlink %d mode %#o (%v), want 0 links and 0600", st.Nlink, st.Mode&0o777, err)
			}
		})
	}
}

// TestStoreCloseWithOpenFiles: unmount removes the store while files still hold backing fds;
// they keep working until closed.
func TestStoreCloseWithOpenFiles(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool, err := NewPool(Config{MemoryCap: mib, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	f := pool.NewFile()
	mustWrite(t, f, []byte("still here"), 0)
	if err := f.Rollover(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store dir after Close: %v", err)
	}
	checkContent(t, f, []byte("still here"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := pool.NewFile()
	defer g.Close()
	if err := g.Rollover(); !errors.Is(err, ErrClosed) {
		t.Errorf("rollover into a closed store: %v, want ErrClosed", err)
	}
}

func TestOpenStoreRemovesStaleStores(t *testing.T) {
	parent := t.TempDir()
	mkdir := func(name string) string {
		t.Helper()
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	touch := func(path string) {
		t.Helper()
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A dead daemon's store: its lock file is there, unlocked, with a leftover named file.
	dead := mkdir("tempfs-store-deaddaemon")
	touch(filepath.Join(dead, ".lock"))
	touch(filepath.Join(dead, "backing-leftover"))
	// Died between mkdir and creating its lock.
	noLock := mkdir("tempfs-store-nolock0000")
	// A live daemon's store (flock locks belong to open file descriptions, so this counts).
	live, err := OpenStore(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// A store with something odd in it: the files go, the odd entry and so the dir stay.
	odd := mkdir("tempfs-store-oddentry00")
	touch(filepath.Join(odd, ".lock"))
	mkdir("tempfs-store-oddentry00/subdir")
	touch(filepath.Join(odd, "subdir", "inner"))
	// A symlink named like a store, pointing at a directory that must stay untouched.
	target := mkdir("target")
	touch(filepath.Join(target, ".lock"))
	touch(filepath.Join(target, "precious"))
	if err := os.Symlink(target, filepath.Join(parent, "tempfs-store-symlink000")); err != nil {
		t.Fatal(err)
	}
	// Not named like a store.
	other := mkdir("something-else")
	touch(filepath.Join(other, ".lock"))
	// Owned by someone else (only root can make one).
	var foreign string
	if os.Geteuid() == 0 {
		foreign = mkdir("tempfs-store-foreign000")
		touch(filepath.Join(foreign, ".lock"))
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}

	s, err := OpenStore(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for _, gone := range []string{dead, noLock} {
		if _, err := os.Lstat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale store %s: %v, want it removed", filepath.Base(gone), err)
		}
	}
	for _, kept := range []string{live.Path(), filepath.Join(odd, "subdir", "inner"), filepath.Join(target, "precious"), filepath.Join(target, ".lock"), filepath.Join(other, ".lock"), filepath.Join(parent, "tempfs-store-symlink000")} {
		if _, err := os.Lstat(kept); err != nil {
			t.Errorf("%s: %v, want it kept", kept, err)
		}
	}
	if got := dirNames(t, live.Path()); !slices.Equal(got, []string{".lock"}) {
		t.Errorf("live store holds %v, want its .lock", got)
	}
	if got := dirNames(t, odd); !slices.Equal(got, []string{"subdir"}) {
		t.Errorf("odd store holds %v, want only the subdir it could not judge", got)
	}
	if foreign != "" {
		if _, err := os.Lstat(filepath.Join(foreign, ".lock")); err != nil {
			t.Errorf("another user's store was touched: %v", err)
		}
	}
}

// TestOpenStoreConcurrent starts many stores on one parent at once, repeatedly: each cleans up
// after the dead while the others are being created, and no live store may be removed.
func TestOpenStoreConcurrent(t *testing.T) {
	parent := t.TempDir()
	for round := range 10 {
		const n = 8
		stores := make([]*Store, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { stores[i], errs[i] = openStore(parent, slog.New(failOnWarn{t})) })
		}
		wg.Wait()
		for i, s := range stores {
			if errs[i] != nil {
				t.Fatalf("round %d: OpenStore: %v", round, errs[i])
			}
			if got := dirNames(t, s.Path()); !slices.Equal(got, []string{".lock"}) {
				t.Errorf("round %d: live store %s holds %v, want its .lock", round, s.Path(), got)
			}
		}
		for _, s := range stores {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if got := dirNames(t, parent); len(got) != 0 {
			t.Fatalf("round %d: parent holds %v after every store closed", round, got)
		}
	}
}

func TestOpenStoreRefusesUnsafeParent(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the parent to try
		ok    bool
	}{
		{"private dir", func(t *testing.T, dir string) string { return chmod(t, dir, 0o700) }, true},
		{"world-readable dir", func(t *testing.T, dir string) string { return chmod(t, dir, 0o755) }, true},
		{"world-writable with sticky bit, like /tmp", func(t *testing.T, dir string) string { return chmod(t, dir, 0o1777) }, true},
		{"world-writable without sticky bit", func(t *testing.T, dir string) string { return chmod(t, dir, 0o777) }, false},
		{"group-writable without sticky bit", func(t *testing.T, dir string) string { return chmod(t, dir, 0o770) }, false},
		{"a regular file", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "file")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}, false},
		{"missing", func(t *testing.T, dir string) string { return filepath.Join(dir, "missing") }, false},
		{"owned by another user", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return dir
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "parent")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			parent := tt.setup(t, dir)
			s, err := OpenStore(parent)
			if (err == nil) != tt.ok {
				t.Fatalf("OpenStore(%s) error = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if s != nil {
				s.Close()
			}
			if !tt.ok {
				if entries, _ := os.ReadDir(dir); len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "file") {
					t.Errorf("a refused parent got entries %v", entries)
				}
			}
		})
	}
}

func chmod(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	// os.Chmod maps the sticky bit from os.ModeSticky; take raw bits through unix.
	if err := unix.Chmod(dir, uint32(mode)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRandomName(t *testing.T) {
	seen := map[string]bool{}
	valid := regexp.MustCompile(`^[a-z0-9]{10}$`)
	for range 1000 {
		name := randomName(10)
		if !valid.MatchString(name) || seen[name] {
			t.Fatalf("randomName = %q (seen before: %v)", name, seen[name])
		}
		seen[name] = true
	}
}
