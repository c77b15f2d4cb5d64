package csinode

import (
	"testing"

	"github.com/tempfs/tempfs/spool"
)

// TestNoRAMHoldsNoData: the cap of a volume that finds the budget used must hold no file data, which is why it
// is not counted against the budget.
func TestNoRAMHoldsNoData(t *testing.T) {
	if noRAM >= spool.ArenaMinSlot {
		t.Fatalf("noRAM %d would hold a file's arena slot (%d bytes)", noRAM, spool.ArenaMinSlot)
	}
}

// TestGrant: grants never add up past the budget; a volume gets what it asks or what is left, none when nothing
// is; a grant given back is granted again; an adopted volume's grant counts even past the budget.
func TestGrant(t *testing.T) {
	d := &Driver{cfg: Config{MemoryBudget: 10}, grants: map[string]int64{}}
	steps := []struct {
		id        string
		ask, want int64
	}{
		{"a", 4, 4},
		{"b", 4, 4},
		{"c", 4, 2},
		{"d", 4, noRAM},
	}
	for _, s := range steps {
		if got := d.grant(s.id, s.ask); got != s.want {
			t.Errorf("grant(%s, %d) = %d, want %d", s.id, s.ask, got, s.want)
		}
	}
	if got := d.granted(); got != 10 {
		t.Errorf("granted %d, want the budget 10", got)
	}
	d.ungrant("a")
	if got := d.grant("e", 8); got != 4 {
		t.Errorf("after a went, grant(e, 8) = %d, want 4", got)
	}
	// The same volume granted again (a publish retried after a failure) replaces its grant.
	if got := d.grant("e", 3); got != 3 || d.granted() != 9 {
		t.Errorf("grant(e, 3) again = %d with %d granted in all, want 3 of 9", got, d.granted())
	}
	d = &Driver{cfg: Config{MemoryBudget: 10}, grants: map[string]int64{}}
	if !d.regrant("x", 6) || d.regrant("y", 6) {
		t.Error("regrant should report the budget covering 6 and not 12")
	}
	if got := d.grant("z", 1); got != noRAM {
		t.Errorf("with adopted volumes over the budget, grant = %d, want noRAM", got)
	}
}
