package fs

import (
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestNamespaceConcurrentExclusiveCreate: two CREATEs of one name with O_EXCL, at once, in one directory.
// Exactly one may succeed, and the directory then holds one entry. The kernel happens to serialize creates in
// a directory under its lock, but nothing in tempfs may rely on that: the daemon itself removes names
// (last close, --max-age, gone owners) without it, and a name must be claimed in the same step that checks it
// is free.
func TestNamespaceConcurrentExclusiveCreate(t *testing.T) {
	b := newBridge(t)
	const rounds = 3000
	var doubles []int
	for round := range rounds {
		var outs [2]fuse.CreateOut
		var sts [2]fuse.Status
		var start, done sync.WaitGroup
		start.Add(1)
		for i := range 2 {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				outs[i], sts[i] = b.create(fuse.FUSE_ROOT_ID, "x", syscall.O_EXCL, b.pid)
			}()
		}
		start.Done()
		done.Wait()
		ok := 0
		for i := range 2 {
			switch sts[i] {
			case fuse.OK:
				ok++
			case fuse.Status(syscall.EEXIST):
			default:
				t.Fatalf("round %d: create = %v, want OK or EEXIST", round, sts[i])
			}
		}
		attr, st := b.getattr(fuse.FUSE_ROOT_ID)
		if st != fuse.OK {
			t.Fatal(st)
		}
		if ok != 1 || attr.Size != 40+20 {
			doubles = append(doubles, round)
			if len(doubles) <= 3 {
				t.Errorf("round %d: %d of 2 exclusive creates of one name succeeded; root size %d (%d entries), want 1 and 60",
					round, ok, attr.Size, (attr.Size-40)/20)
			}
		}
		// Undo the round: the handles, and the name.
		for i := range 2 {
			if sts[i] == fuse.OK {
				b.release(outs[i].NodeId, outs[i].Fh)
			}
		}
		if ok != 1 {
			b = newBridge(t) // the tree is inconsistent from here on: go on in a fresh one
			continue
		}
		if st := b.unlink(fuse.FUSE_ROOT_ID, "x"); st != fuse.OK {
			t.Fatalf("round %d: unlink = %v", round, st)
		}
		if entries, _ := b.readdir(fuse.FUSE_ROOT_ID); len(entries) != 0 {
			t.Fatalf("round %d: after unlink the root lists %v", round, entries)
		}
	}
	if len(doubles) > 0 {
		t.Errorf("%d of %d rounds let both exclusive creates succeed (first rounds: %v)", len(doubles), rounds, doubles[:min(len(doubles), 10)])
	}
}
