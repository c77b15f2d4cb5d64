package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fakeClock is a Clock whose wall and monotonic readings the test moves apart.
type fakeClock struct {
	wall time.Time
	mono time.Duration
}

func (c *fakeClock) Wall() time.Time     { return c.wall }
func (c *fakeClock) Mono() time.Duration { return c.mono }

func useFakeClock(t *testing.T) *fakeClock {
	c := &fakeClock{wall: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), mono: time.Hour}
	UseClock(c)
	t.Cleanup(func() { UseClock(systemClock{}) })
	return c
}

// TestReaperIgnoresWallClockSteps: idle time is the Mono clock's, whatever the wall clock or the entry's
// atime and mtime say, and stat shows the wall clock.
func TestReaperIgnoresWallClockSteps(t *testing.T) {
	c := useFakeClock(t)
	tt := newTestTree(t)
	tt.createClosed(t, "old", 0o644)
	c.mono += 50 * time.Minute
	young := tt.createClosed(t, "young", 0o644)
	if got := int64(young.Attr.Mtime); got != c.wall.Unix() {
		t.Errorf("mtime %d, want the wall clock's %d", got, c.wall.Unix())
	}
	// The wall clock steps 2 h forward while 20 minutes pass: only the entry idle for 70 minutes goes.
	c.wall = c.wall.Add(2 * time.Hour)
	c.mono += 20 * time.Minute
	if n := tt.fsys.reapAt(time.Hour, c.mono); n != 1 {
		t.Fatalf("reaped %d, want 1 (old)", n)
	}
	if got := tt.names(t); len(got) != 1 || got[0] != "young" {
		t.Fatalf("left %q, want [young]", got)
	}
	// The wall clock steps 4 h back; an hour of the daemon's life later, young goes all the same.
	c.wall = c.wall.Add(-4 * time.Hour)
	c.mono += 41 * time.Minute
	if n := tt.fsys.reapAt(time.Hour, c.mono); n != 1 {
		t.Fatalf("reaped %d after the wall clock stepped back, want 1 (young)", n)
	}
}

// TestReaperCountsSetattrTimesAsUse: times set into the past (tar x, cp -p) make no entry old.
func TestReaperCountsSetattrTimesAsUse(t *testing.T) {
	c := useFakeClock(t)
	tt := newTestTree(t)
	out := tt.createClosed(t, "extracted", 0o644)
	c.mono += 2 * time.Hour
	long := uint64(c.wall.Add(-48 * time.Hour).Unix())
	set := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: tt.header(out.NodeId),
		Valid: fuse.FATTR_ATIME | fuse.FATTR_MTIME, Atime: long, Mtime: long}}
	var attr fuse.AttrOut
	if st := tt.raw.SetAttr(nil, set, &attr); st != fuse.OK {
		t.Fatal(st)
	}
	if n := tt.fsys.reapAt(time.Hour, c.mono); n != 0 {
		t.Fatalf("reaped %d: an entry whose times were set just now, 2 days back", n)
	}
}

func TestTestClockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock")
	c := TestClockFile(path)
	if d := time.Since(c.Wall()); d < 0 || d > time.Minute {
		t.Errorf("without a file the wall clock is off by %v", d)
	}
	if err := os.WriteFile(path, []byte("2h 90s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Wall()); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("wall offset %v, want 2h", d)
	}
	if d := c.Mono() - (systemClock{}).Mono(); d < 89*time.Second || d > 90*time.Second {
		t.Errorf("mono offset %v, want 90s", d)
	}
}
