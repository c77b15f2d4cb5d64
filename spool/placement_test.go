package spool

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// placementWeights are opWeights with passthrough writes, for TestModelPlacements.
var placementWeights = func() [numOpKinds]int {
	w := opWeights
	w[opPassthrough] = 2
	return w
}()

// movesSeen records the moves between placements that a model run made, with what made the moves to disk.
type movesSeen map[string]int

// applyTracked is modelRun.apply that records in seen every file's move between placements.
func (r *modelRun) applyTracked(t *testing.T, op fileOp, seen movesSeen) {
	t.Helper()
	before := make([]Placement, len(r.files))
	for i, m := range r.files {
		before[i] = m.f.Where()
	}
	r.apply(t, op)
	if op.kind == opReplace {
		before[op.file] = Empty // a new file, not a move
	}
	maxSize := r.pool.Config().MaxSize
	for i, m := range r.files {
		from, to := before[i], m.f.Where()
		if from == to {
			continue
		}
		move := fmt.Sprintf("%v→%v", from, to)
		if from.Tier() == Memory && to.Tier() == Disk {
			switch {
			case i != op.file:
				move += " (memory pressure, as another file's victim)"
			case op.kind == opRollover:
				move += " (explicit)"
			case int64(len(m.want)) > maxSize:
				move += " (max-size)"
			default:
				move += " (memory cap, no victim)"
			}
		}
		if from.Tier() == Disk && to.Tier() == Memory || from == Memfd && to == Arena {
			t.Fatalf("%v: file %d moved back %s", op, i, move)
		}
		seen[move]++
	}
}

// TestModelPlacements drives files through every move between placements (empty, arena slot, memfd of
// its own, disk, disk written by passthrough), by a script that makes each move at least once and then
// by random operations, checking each step against the model as TestModel does. MaxSize is past
// ArenaMaxFileSize here, so that files also live in memfds of their own, which TestModel's never do.
func TestModelPlacements(t *testing.T) {
	const maxSize = 256 * kib
	cfg := Config{MaxSize: maxSize, MemoryCap: 200 * kib}
	r := newModelRun(t, cfg)
	for range 3 {
		r.files = append(r.files, &modelFile{f: r.newFile()})
	}
	seen := movesSeen{}
	w := func(file int, off, n int64) fileOp {
		return fileOp{kind: opWrite, file: file, off: off, n: n, fill: byte(off + n)}
	}
	script := []fileOp{
		w(0, 0, 1),                               // empty → arena
		w(0, 60*kib, 4*kib),                      // a bigger slot
		w(0, 100*kib, 1),                         // arena → memfd
		{kind: opTruncate, file: 0, n: 10 * kib}, // stays in its memfd
		{kind: opTruncate, file: 0},              // memfd → empty
		w(0, 0, 10*kib),                          // empty → arena
		{kind: opTruncate, file: 0},              // arena → empty
		w(0, 0, 100*kib),                         // empty → memfd
		w(1, maxSize, 1),                         // empty → disk (max-size)
		w(2, 0, 150*kib),                         // memfd, pushing file 0 to disk (memory pressure)
		w(2, maxSize, 1),                         // memfd → disk (max-size)
		{kind: opPassthrough, file: 1, off: 5 * kib, n: 3 * kib}, // disk → disk by passthrough
		w(1, 0, 2*kib),                          // the daemon writes it too
		{kind: opTruncate, file: 1, n: 1 * kib}, // truncate back: still on disk
		{kind: opReplace, file: 0},
		w(0, 0, 1*kib),     // empty → arena
		w(0, maxSize, 100), // arena → disk (max-size)
		{kind: opReplace, file: 1},
		{kind: opReplace, file: 2},
		w(1, 0, 60*kib),       // arena
		w(2, 0, 180*kib),      // memfd, pushing file 1 to disk (memory pressure)
		w(2, 180*kib, 40*kib), // past the memory cap with no other RAM file: to disk itself
		{kind: opReplace, file: 0},
		w(0, 0, 5*kib),              // arena
		{kind: opRollover, file: 0}, // arena → disk (explicit)
		{kind: opReplace, file: 1},
		w(1, 0, 100*kib),            // memfd
		{kind: opRollover, file: 1}, // memfd → disk (explicit)
		{kind: opPassthrough, file: 1, off: 200 * kib, n: 8 * kib},
		{kind: opTruncate, file: 1, n: 3 * kib},
		{kind: opSeek, file: 1, off: 0},
	}
	for _, op := range script {
		r.applyTracked(t, op, seen)
	}
	want := []string{
		"empty→arena", "arena→memfd", "memfd→empty", "arena→empty", "empty→memfd",
		"empty→disk (max-size)", "arena→disk (max-size)", "memfd→disk (max-size)",
		"memfd→disk (memory pressure, as another file's victim)", "arena→disk (memory pressure, as another file's victim)",
		"memfd→disk (memory cap, no victim)", "arena→disk (explicit)", "memfd→disk (explicit)",
		"disk→disk (passthrough)",
	}
	var missing []string
	for _, m := range want {
		if seen[m] == 0 {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the script made no move %q; it made %v", missing, seen)
	}

	seed := seedForTest(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 600 {
		r.applyTracked(t, randomOpWeighted(rng, &placementWeights, len(r.files), maxSize), seen)
	}
	moves := slices.Sorted(func(yield func(string) bool) {
		for m := range seen {
			if !yield(fmt.Sprintf("%s: %d", m, seen[m])) {
				return
			}
		}
	})
	t.Logf("moves: %v", moves)
	for _, m := range r.files {
		if err := m.f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkAccounting(t, r.pool, nil)
}
