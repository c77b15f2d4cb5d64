package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHostileInput: nothing a client does crashes the daemon or corrupts another file (docs/guarantees.md,
// Multi-user safety).
// Each case runs against one mount; a canary file must read back intact after all of them.
func TestHostileInput(t *testing.T) {
	m := startMount(t, "--max-size", "64KiB")
	canary := bytes.Repeat([]byte("canary"), 20000)
	if err := os.WriteFile(m.Path("canary"), canary, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("odd names", func(t *testing.T) {
		for _, name := range []string{"...", ".. ", " ", "-", "\n", "\xff\xfe", "a\\b", strings.Repeat("é", 127)} {
			p := m.Path(name)
			if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
				t.Errorf("create %q: %v", name, err)
				continue
			}
			if got, err := os.ReadFile(p); err != nil || string(got) != name {
				t.Errorf("read back %q: %q, %v", name, got, err)
			}
			if err := os.Remove(p); err != nil {
				t.Errorf("remove %q: %v", name, err)
			}
		}
		if err := os.WriteFile(m.Path(strings.Repeat("n", 256)), nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("256-byte name: %v, want ENAMETOOLONG", err)
		}
	})

	t.Run("xattrs at the kernel's limits", func(t *testing.T) {
		p := m.Path("x")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte{0xab}, 65536) // XATTR_SIZE_MAX
		if err := unix.Setxattr(p, "user.big", big, 0); err != nil {
			t.Fatalf("64 KiB value: %v", err)
		}
		got := make([]byte, len(big))
		if n, err := unix.Getxattr(p, "user.big", got); err != nil || !bytes.Equal(got[:n], big) {
			t.Fatalf("64 KiB value read back: n=%d err=%v", n, err)
		}
		if _, err := unix.Getxattr(p, "user.big", make([]byte, 10)); !errors.Is(err, syscall.ERANGE) {
			t.Errorf("small buffer: %v, want ERANGE", err)
		}
		longName := "user." + strings.Repeat("k", 255-len("user."))
		if err := unix.Setxattr(p, longName, []byte("v"), 0); err != nil {
			t.Errorf("255-byte xattr name: %v", err)
		}
		if err := unix.Setxattr(p, longName+"k", []byte("v"), 0); !errors.Is(err, syscall.ERANGE) {
			t.Errorf("256-byte xattr name: %v, want ERANGE", err)
		}
		if err := unix.Setxattr(p, "system.posix_acl_access", []byte("junk"), 0); err == nil {
			t.Error("junk ACL accepted")
		}
	})

	t.Run("huge offsets", func(t *testing.T) {
		f, err := os.Create(m.Path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// 2^40: sparse (or EFBIG), never a crash.
		if _, err := f.WriteAt([]byte("far"), 1<<40); err != nil && !errors.Is(err, syscall.EFBIG) {
			t.Errorf("write at 2^40: %v, want success or EFBIG", err)
		} else if err == nil {
			got := make([]byte, 3)
			if _, err := f.ReadAt(got, 1<<40); err != nil || string(got) != "far" {
				t.Errorf("read at 2^40: %q, %v", got, err)
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Size != 1<<40+3 || st.Blocks*512 > 1<<20 {
				t.Errorf("after a write at 2^40: size %d, %d blocks, %v; want sparse", st.Size, st.Blocks, err)
			}
		}
		// Past what any file can hold: a clean error.
		if _, err := unix.Pwrite(int(f.Fd()), []byte("x"), 1<<62); err == nil {
			t.Error("write at 2^62 succeeded")
		}
		if err := f.Truncate(1 << 62); err == nil {
			t.Error("truncate to 2^62 succeeded")
		}
	})

	t.Run("many handles", func(t *testing.T) {
		raiseNoFile(t, 6000)
		var files []*os.File
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		for i := 0; i < 5000; i++ {
			f, err := os.OpenFile(m.Path("handles", "jobXXXXXX"), os.O_CREATE|os.O_RDWR, 0o600)
			if errors.Is(err, os.ErrNotExist) && i == 0 {
				if err := os.Mkdir(m.Path("handles"), 0o755); err != nil {
					t.Fatal(err)
				}
				f, err = os.OpenFile(m.Path("handles", "jobXXXXXX"), os.O_CREATE|os.O_RDWR, 0o600)
			}
			if err != nil {
				t.Fatalf("open #%d: %v", i, err)
			}
			files = append(files, f)
		}
		if n := len(listDir(t, m.Path("handles"))); n != 5000 {
			t.Errorf("%d open template files listed, want 5000", n)
		}
	})

	if got, err := os.ReadFile(m.Path("canary")); err != nil || !bytes.Equal(got, canary) {
		t.Fatalf("canary damaged: %v", err)
	}
}

func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	old := lim
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestUnsafeStoreParent: a --store parent that other users can write to is refused unless it has the sticky
// bit, with exit status 2 and nothing mounted.
func TestUnsafeStoreParent(t *testing.T) {
	requireFUSE(t)
	loose := t.TempDir()
	if err := os.Chmod(loose, 0o777); err != nil {
		t.Fatal(err)
	}
	mp := t.TempDir()
	cmd := exec.Command(tempfsBin, "mount", "--store", loose, mp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("mount with a 0777 store parent: %v, want exit status 2; stderr: %s", err, stderr.String())
	}
	if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n") + 1; lines != 1 || !strings.Contains(stderr.String(), "sticky") {
		t.Errorf("stderr should be one line naming the problem, got %q", stderr.String())
	}
	if isMounted(mp) {
		t.Error("mounted anyway")
	}
	if left, _ := filepath.Glob(filepath.Join(loose, "tempfs-store-*")); len(left) > 0 {
		t.Errorf("store made in an unsafe parent: %v", left)
	}
	// With the sticky bit, as /tmp has, it is accepted.
	if err := syscall.Chmod(loose, 0o1777); err != nil {
		t.Fatal(err)
	}
	m := startMountAt(t, mp, loose)
	if err := os.WriteFile(m.Path("ok"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
}
