package integration

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestMaxAge: with --max-age, ordinary and kept entries neither accessed nor modified for that long are
// removed; an open file and the directory holding it are spared, and so is an entry still in use.
func TestMaxAge(t *testing.T) {
	m := startMount(t, "--max-age", "2s")
	for _, p := range []string{"old", "dir/old", "busy/open"} {
		if err := os.MkdirAll(m.Path(p, ".."), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m.Path(p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	held, err := os.Open(m.Path("busy", "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	start := time.Now()
	eventually(t, 20*time.Second, "old entries reaped", func() bool {
		_, err1 := os.Lstat(m.Path("old"))
		_, err2 := os.Lstat(m.Path("dir"))
		return errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist)
	})
	if age := time.Since(start); age < 2*time.Second {
		t.Errorf("entries reaped after %v, before --max-age 2s had passed", age)
	}
	// The open file and its directory are spared, however old.
	if got, err := os.ReadFile(m.Path("busy", "open")); err != nil || string(got) != "busy/open" {
		t.Fatalf("open file reaped: %q, %v", got, err)
	}
	// Once closed and left alone, it goes too.
	held.Close()
	eventually(t, 20*time.Second, "the closed file and its directory reaped", func() bool {
		_, err := os.Lstat(m.Path("busy"))
		return errors.Is(err, os.ErrNotExist)
	})
	if names := listDir(t, m.Dir); len(names) != 0 {
		t.Errorf("left after reaping: %q", names)
	}
}
