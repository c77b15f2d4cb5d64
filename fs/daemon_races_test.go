package fs

import (
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The daemon removes names on its own (the last close of a file made from a template, --max-age, a gone
// owner's entries), with no request and no kernel lock around it: these tests put such a removal at the one
// point of another one, or of a client's renames, where it used to go wrong. Each pins the interleaving with
// the namespace's own locks, held by the test as a concurrent request would hold them, so that it happens on
// every run.

// childNamed is the node (dir, name), read as a request would, or nil.
func childNamed(dir *Dir, name string) node {
	dir.entriesMu.RLock()
	defer dir.entriesMu.RUnlock()
	return dir.children[name]
}

// TestReaperDuringLastClose: the last RELEASE of a file made from a template counts the handle closed, then
// takes the directory's lock to remove the generated name. A --max-age sweep that takes that lock in between
// finds an idle file without open handles. It must not leave the file ephemeral without its generated name:
// the last close then indexed its (empty) list of names and panicked with the directory's lock held, and
// every later request in that directory hung.
func TestReaperDuringLastClose(t *testing.T) {
	b := newBridge(t)
	root := b.fsys.root
	out, st := b.create(fuse.FUSE_ROOT_ID, "jobXXXXXX", 0, b.pid)
	if st != fuse.OK {
		t.Fatal(st)
	}
	var f *File
	root.entriesMu.RLock()
	for _, n := range root.children {
		f = n.(*File)
	}
	root.entriesMu.RUnlock()

	// A listing of the root is in progress (its reader's lock held): the sweep, which finds the file idle an
	// hour from now, waits for the root's lock to remove it.
	root.entriesMu.RLock()
	reaped := make(chan int, 1)
	go func() { reaped <- b.fsys.Reap(time.Minute, time.Now().Add(time.Hour)) }()
	waitFor(t, "the sweep waits for the root's lock", func() bool {
		if root.entriesMu.TryRLock() { // fails once a writer waits
			root.entriesMu.RUnlock()
			return false
		}
		return true
	})
	// The last close counts its handle closed, then waits for the root's lock too, after the sweep.
	released := make(chan any, 1)
	go func() {
		defer func() { released <- recover() }()
		b.release(out.NodeId, out.Fh)
	}()
	waitFor(t, "the release counted the handle closed", func() bool {
		f.stateMu.Lock()
		defer f.stateMu.Unlock()
		return f.opens == 0
	})
	root.entriesMu.RUnlock()

	timeout := time.After(10 * time.Second)
	select {
	case p := <-released:
		if p != nil {
			t.Fatalf("the last close panicked after the sweep removed the name: %v", p)
		}
	case <-timeout:
		t.Fatal("the last close did not return")
	}
	select {
	case <-reaped:
	case <-timeout:
		t.Fatal("the sweep did not return")
	}
	if names, st := b.readdir(fuse.FUSE_ROOT_ID); st != fuse.OK || len(names) != 0 {
		t.Errorf("root lists %v (%v), want nothing", names, st)
	}
	if s := b.fsys.Stats(); s.Files != 0 || s.EphemeralFiles != 0 || s.OpenHandles != 0 {
		t.Errorf("stats: %d files, %d ephemeral, %d handles; want 0, 0, 0", s.Files, s.EphemeralFiles, s.OpenHandles)
	}
	// The root still serves requests.
	if _, st := b.create(fuse.FUSE_ROOT_ID, "after", 0, b.pid); st != fuse.OK {
		t.Errorf("create after: %v", st)
	}
}

// TestReapSubdirMovedAboveItsParent: the sweeps that remove empty directories (--max-age, a gone owner's
// orphaned directories) read (parent, name, dir) first and remove it later. A client may move the directory
// away and its old parent below it meanwhile: the sweep must then not take the old parent's lock and wait
// for the directory's, which now comes first (ancestor before descendant): a request in the directory that
// holds its lock and needs the old parent's (rmdir of it, a rename of it) deadlocked with the sweep, and
// both directories hung.
func TestReapSubdirMovedAboveItsParent(t *testing.T) {
	b := newBridge(t)
	root := uint64(fuse.FUSE_ROOT_ID)
	a := b.mustMkdir(t, root, "a")
	if _, st := b.mkdir(a, "b", b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	aDir := childNamed(b.fsys.root, "a").(*Dir)
	bDir := childNamed(aDir, "b").(*Dir)
	// What the sweep read: b, empty, in a. Then the client: mv a/b b; mv a b/a.
	if st := b.rename(a, "b", root, "b", 0, b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	bEntry, st := b.lookup(root, "b")
	if st != fuse.OK {
		t.Fatal(st)
	}
	if st := b.rename(root, "a", bEntry.NodeId, "a", 0, b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	// A request in b holds b's lock (it is about to take a's, its child's)...
	bDir.entriesMu.Lock()
	done := make(chan bool, 1)
	go func() { done <- b.fsys.reapSubdir(aDir, "b", bDir) }()
	select {
	case removed := <-done:
		bDir.entriesMu.Unlock()
		if removed {
			t.Errorf("the sweep removed b from a, which it has left")
		}
	case <-time.After(5 * time.Second):
		// ...and the sweep holds a's and waits for b's: a deadlock.
		locked := !aDir.entriesMu.TryLock()
		if !locked {
			aDir.entriesMu.Unlock()
		}
		bDir.entriesMu.Unlock()
		<-done
		t.Fatalf("the sweep of a stale (a, b) waited for b's lock (holding a's: %v), the lock of a's new ancestor", locked)
	}
	// Both still serve requests, and the tree is as the client left it.
	if st := b.rmdir(bEntry.NodeId, "a"); st != fuse.OK {
		t.Errorf("rmdir b/a: %v", st)
	}
	names, st := b.readdir(root)
	if st != fuse.OK || len(names) != 1 || names[0].Name != "b" {
		t.Errorf("root lists %v (%v), want only b", names, st)
	}
}
