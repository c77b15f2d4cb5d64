package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// gateFake is a fuse.RawFileSystem that counts the requests reaching it, can hold LOOKUPs until released, and
// answers CREATE with a reply derived from the request's unique id.
type gateFake struct {
	fuse.RawFileSystem
	calls    atomic.Int64
	inside   atomic.Int64
	maxSeen  atomic.Int64 // requests inside while the test said none may be
	hold     chan struct{}
	held     chan struct{} // one token per LOOKUP that reached the fake and waits on hold
	releases atomic.Int64
	forbid   atomic.Bool // set while frozen: a request reaching the fake then is a failure
}

func newGateFake() *gateFake {
	return &gateFake{RawFileSystem: fuse.NewDefaultRawFileSystem(), hold: make(chan struct{}), held: make(chan struct{}, 64)}
}

func (f *gateFake) in() func() {
	f.calls.Add(1)
	f.inside.Add(1)
	if f.forbid.Load() {
		f.maxSeen.Add(1)
	}
	return func() { f.inside.Add(-1) }
}

func (f *gateFake) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer f.in()()
	if name == "hold" {
		f.held <- struct{}{}
		<-f.hold
	}
	return fuse.ENOENT
}

func (f *gateFake) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer f.in()()
	out.Ino = in.NodeId
	return fuse.OK
}

func (f *gateFake) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer f.in()()
	if name == "exists" {
		return fuse.Status(17) // EEXIST
	}
	u := in.Unique &^ uniqueResend
	out.NodeId = u + 1000
	out.Generation = u + 7
	out.Attr.Ino = u + 1000
	out.Attr.Size = u * 3
	out.Attr.Mode = 0o100644
	out.EntryValid = 1
	out.Fh = u + 5
	out.OpenFlags = 2
	return fuse.OK
}

func (f *gateFake) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer f.in()()
	return fuse.ENOENT
}

func (f *gateFake) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	defer f.in()()
	f.releases.Add(1)
}

func (f *gateFake) ReleaseDir(in *fuse.ReleaseIn) {
	defer f.in()()
	f.releases.Add(1)
}

func newGatedFS(f *gateFake) *recordingFS {
	return &recordingFS{fs: f, rec: newRequestRecorder()}
}

func TestGateFreezeWaitsForRequestsInside(t *testing.T) {
	f := newGateFake()
	r := newGatedFS(f)
	looked := make(chan fuse.Status, 1)
	go func() { looked <- r.Lookup(nil, &fuse.InHeader{Unique: 2, NodeId: 1}, "hold", &fuse.EntryOut{}) }()
	<-f.held
	frozen := make(chan error, 1)
	go func() { frozen <- r.freeze(context.Background()) }()
	select {
	case err := <-frozen:
		t.Fatalf("freeze returned (%v) while a LOOKUP was inside the filesystem", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(f.hold)
	if st := <-looked; st != fuse.ENOENT {
		t.Fatalf("held LOOKUP answered %v", st)
	}
	if err := <-frozen; err != nil {
		t.Fatal(err)
	}
	if n := f.inside.Load(); n != 0 {
		t.Fatalf("freeze returned with %d requests inside", n)
	}
	r.thaw()
}

func TestGateParksUntilThaw(t *testing.T) {
	f := newGateFake()
	r := newGatedFS(f)
	if err := r.freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan fuse.Status, 3)
	go func() {
		done <- r.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{Unique: 4, NodeId: 9}}, &fuse.AttrOut{})
	}()
	go func() {
		r.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 6, NodeId: 9}, Fh: 1})
		done <- fuse.OK
	}()
	go func() {
		done <- r.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 8, NodeId: 1}}, "a", &fuse.CreateOut{})
	}()
	waitFor(t, "three requests parked", func() bool { return r.gate.parked.Load() == 3 })
	select {
	case st := <-done:
		t.Fatalf("a request was answered (%v) while frozen", st)
	case <-time.After(100 * time.Millisecond):
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("%d parked requests reached the filesystem", n)
	}
	r.thaw()
	for i := 0; i < 3; i++ {
		if st := <-done; st != fuse.OK {
			t.Fatalf("after thaw: %v", st)
		}
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("after thaw %d requests reached the filesystem, want 3", n)
	}
	if got := r.rec.Kind(int(opGetattr)).Count; got != 1 {
		t.Fatalf("GETATTR counted %d times, want 1", got)
	}
}

func TestGateFreezeGivesUpWithItsContext(t *testing.T) {
	f := newGateFake()
	r := newGatedFS(f)
	go r.Lookup(nil, &fuse.InHeader{Unique: 2, NodeId: 1}, "hold", &fuse.EntryOut{})
	<-f.held
	defer close(f.hold)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.freeze(ctx); err != context.DeadlineExceeded {
		t.Fatalf("freeze with a request stuck inside: %v, want %v", err, context.DeadlineExceeded)
	}
	// The gate is open again: a request goes through.
	if st := r.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{Unique: 4, NodeId: 9}}, &fuse.AttrOut{}); st != fuse.OK {
		t.Fatal(st)
	}
}

// TestGateConcurrent freezes and thaws while goroutines send requests: between freeze's return and thaw no
// request may be inside the filesystem or reach it, and every request is answered in the end.
func TestGateConcurrent(t *testing.T) {
	f := newGateFake()
	r := newGatedFS(f)
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	var answered atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				u := uint64(w*each+i) * 2
				var st fuse.Status
				switch i % 3 {
				case 0:
					st = r.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{Unique: u, NodeId: 3}}, &fuse.AttrOut{})
				case 1:
					st = r.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: u, NodeId: 1}}, "c", &fuse.CreateOut{})
				case 2:
					r.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: u, NodeId: 3}, Fh: 1})
				}
				if st != fuse.OK {
					t.Errorf("request answered %v", st)
				}
				answered.Add(1)
			}
		}(w)
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	cycles := 0
loop:
	for {
		select {
		case <-allDone:
			break loop
		default:
		}
		if err := r.freeze(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.forbid.Store(true)
		if n := f.inside.Load(); n != 0 {
			t.Fatalf("freeze returned with %d requests inside", n)
		}
		calls := f.calls.Load()
		time.Sleep(200 * time.Microsecond)
		if n := f.calls.Load(); n != calls {
			t.Fatalf("%d requests reached the filesystem while frozen", n-calls)
		}
		f.forbid.Store(false)
		r.thaw()
		cycles++
	}
	if n := f.maxSeen.Load(); n != 0 {
		t.Fatalf("%d requests reached the filesystem while frozen", n)
	}
	if n := answered.Load(); n != workers*each {
		t.Fatalf("%d requests answered, want %d", n, workers*each)
	}
	if cycles < 2 || r.gate.parked.Load() == 0 {
		t.Fatalf("%d freeze cycles, %d requests parked: the test did not exercise the gate", cycles, r.gate.parked.Load())
	}
}

func TestJournalRingBound(t *testing.T) {
	var j journal
	const n = journalSize + 904
	for u := uint64(1); u <= n; u++ {
		j.record(u*2, fuseUnlink, fuse.OK, nil)
	}
	es := j.entries()
	if len(es) != journalSize {
		t.Fatalf("%d entries, want %d", len(es), journalSize)
	}
	if es[0].Unique != 905*2 || es[len(es)-1].Unique != n*2 {
		t.Fatalf("kept uniques %d..%d, want %d..%d (the newest)", es[0].Unique, es[len(es)-1].Unique, 905*2, n*2)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Unique != es[i-1].Unique+2 {
			t.Fatalf("entries out of order at %d: %d after %d", i, es[i].Unique, es[i-1].Unique)
		}
	}
}

// handOver carries a journal from one recordingFS to another the way a take-over does: through JSON.
func handOver(t *testing.T, from, to *recordingFS) {
	t.Helper()
	b, err := json.Marshal(from.journalEntries())
	if err != nil {
		t.Fatal(err)
	}
	var es []JournalEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatal(err)
	}
	to.loadJournal(es)
}

func TestJournalAnswersReDeliveredRequests(t *testing.T) {
	oldFake, newFake := newGateFake(), newGateFake()
	old, successor := newGatedFS(oldFake), newGatedFS(newFake)

	// The old daemon applies a CREATE (0x30), a failing CREATE (0x32), an UNLINK (0x34) and a RELEASE (0x36);
	// their replies are lost.
	var created fuse.CreateOut
	if st := old.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x30, NodeId: 1}}, "c1", &created); st != fuse.OK {
		t.Fatal(st)
	}
	if st := old.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x32, NodeId: 1}}, "exists", &fuse.CreateOut{}); st != 17 {
		t.Fatal(st)
	}
	if st := old.Unlink(nil, &fuse.InHeader{Unique: 0x34, NodeId: 1}, "gone"); st != fuse.ENOENT {
		t.Fatal(st)
	}
	old.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 0x36, NodeId: 5}, Fh: 3})
	// Idempotent requests are not journaled.
	old.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{Unique: 0x38, NodeId: 1}}, &fuse.AttrOut{})
	if es := old.journalEntries(); len(es) != 4 {
		t.Fatalf("journal holds %d entries, want 4: %+v", len(es), es)
	}
	handOver(t, old, successor)
	successor.handleKnown = func(node, fh uint64) bool { return node == 5 && fh == 4 }

	// Re-delivered with bit 63: answered from the journal, byte for byte, without reaching the filesystem.
	var again fuse.CreateOut
	if st := successor.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x30 | uniqueResend, NodeId: 1}}, "c1", &again); st != fuse.OK {
		t.Fatalf("re-delivered CREATE: %v", st)
	}
	if !bytes.Equal(structBytes(&again), structBytes(&created)) {
		t.Fatalf("re-delivered CREATE answered %+v, the old daemon %+v", again, created)
	}
	if st := successor.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x32 | uniqueResend, NodeId: 1}}, "exists", &fuse.CreateOut{}); st != 17 {
		t.Fatalf("re-delivered failed CREATE answered %v, want the recorded EEXIST", st)
	}
	if st := successor.Unlink(nil, &fuse.InHeader{Unique: 0x34 | uniqueResend, NodeId: 1}, "gone"); st != fuse.ENOENT {
		t.Fatalf("re-delivered UNLINK answered %v", st)
	}
	successor.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 0x36 | uniqueResend, NodeId: 5}, Fh: 3})
	if n := newFake.calls.Load(); n != 0 {
		t.Fatalf("%d journaled requests reached the successor's filesystem", n)
	}
	if n := successor.replayed.Load(); n != 4 {
		t.Fatalf("replayed %d, want 4", n)
	}

	// Not journaled (bit 63 but unknown id), journaled id without bit 63 (a new request that reuses the
	// id), or journaled id under another opcode: applied.
	if st := successor.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x40 | uniqueResend, NodeId: 1}}, "c2", &fuse.CreateOut{}); st != fuse.OK {
		t.Fatal(st)
	}
	if st := successor.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{Unique: 0x30, NodeId: 1}}, "c3", &fuse.CreateOut{}); st != fuse.OK {
		t.Fatal(st)
	}
	if st := successor.Unlink(nil, &fuse.InHeader{Unique: 0x30 | uniqueResend, NodeId: 1}, "c4"); st != fuse.ENOENT {
		t.Fatal(st)
	}
	if n := newFake.calls.Load(); n != 3 {
		t.Fatalf("%d requests reached the successor's filesystem, want 3", n)
	}

	// A re-delivered release absent from the journal: of a handle the filesystem does not know, answered
	// without reaching it; of one it knows, applied.
	successor.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 0x50 | uniqueResend, NodeId: 5}, Fh: 9})
	successor.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 0x52 | uniqueResend, NodeId: 6}, Fh: 9})
	if n := newFake.releases.Load(); n != 0 {
		t.Fatalf("%d releases of unknown handles reached the filesystem", n)
	}
	successor.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{Unique: 0x54 | uniqueResend, NodeId: 5}, Fh: 4})
	if n := newFake.releases.Load(); n != 1 {
		t.Fatalf("%d releases of a known handle reached the filesystem, want 1", n)
	}
}
