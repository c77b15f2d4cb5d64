package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The freeze gate and the journal of recordingFS, for a take-over (a new daemon serving this mount's FUSE
// connection).
//
// The gate: once frozen, every request that enters recordingFS is parked, unanswered and unapplied, until
// thaw (or the process's exit, after which the kernel re-delivers it to the successor on its
// FUSE_NOTIFY_RESEND). freeze returns when every request that was already inside has returned from the
// wrapped filesystem, so that the state exported after it is final. go-fuse cannot stop reading short of
// unmounting, hence a gate at this level. Not frozen, a request costs two atomic additions on one counter and
// two atomic loads.
//
// The journal: go-fuse writes a reply after the method returns; a process that exits between the two leaves
// the request applied and unanswered, and the kernel re-delivers it to the successor with bit 63 of its unique
// id set. Answered again by the filesystem, a CREATE of O_EXCL would find its own file (EEXIST), an UNLINK
// its own absence (ENOENT), an OPEN would leak a handle. So the results of the requests that are not
// idempotent are kept, by unique id, in a bounded ring that goes with the state; the successor loads it and
// answers a re-delivered request found there from it, byte for byte, without applying it again.
//
// Lock order: gate.mu and journal.mu are leaves; neither is held while a request runs.

// uniqueResend is the bit the kernel sets in the unique id of a request it re-delivers after
// FUSE_NOTIFY_RESEND (FUSE_UNIQUE_RESEND).
const uniqueResend = uint64(1) << 63

// gate parks requests while frozen. The zero value is open.
type gate struct {
	// inside counts requests between enter and leave. A request adds itself before it reads frozen, and
	// freeze sets frozen before it reads inside: with Go's sequentially consistent atomics, either the request
	// sees frozen, or freeze sees it inside and waits for it.
	inside atomic.Int64
	frozen atomic.Bool
	parked atomic.Int64 // requests parked since the process started, for the logs

	mu      sync.Mutex
	thawed  chan struct{} // closed by thaw; the parked wait on it; made by freeze
	drained chan struct{} // one token when inside drops to zero while frozen
	// held are the FORGETs that came while frozen. A FORGET has no answer and the kernel never sends it
	// again, so it is not parked (the exit would lose it) but kept, for the daemon that serves next: this one
	// after a thaw, or the new one, which gets them from the old one's last message.
	held []Forget
}

// Forget is a FORGET: the kernel drops n of its references to a node.
type Forget struct {
	Node uint64 `json:"node"`
	N    uint64 `json:"n"`
}

// holdForget keeps a FORGET that comes while the gate is frozen, and reports whether it did; otherwise the
// request has entered the gate, as by enter.
func (g *gate) holdForget(node, n uint64) bool {
	g.inside.Add(1)
	if !g.frozen.Load() {
		return false
	}
	g.mu.Lock()
	g.held = append(g.held, Forget{Node: node, N: n})
	g.mu.Unlock()
	g.leave()
	return true
}

// takeHeld returns the FORGETs kept while frozen and forgets them.
func (g *gate) takeHeld() []Forget {
	g.mu.Lock()
	defer g.mu.Unlock()
	held := g.held
	g.held = nil
	return held
}

// enter lets a request in, or parks it while the gate is frozen. Each enter is followed by one leave.
func (g *gate) enter() {
	for {
		g.inside.Add(1)
		if !g.frozen.Load() {
			return
		}
		g.leave()
		g.parked.Add(1)
		g.mu.Lock()
		thawed := g.thawed
		g.mu.Unlock()
		if thawed != nil {
			<-thawed
		}
	}
}

// leave ends what enter began; the last request out of a frozen gate wakes freeze.
func (g *gate) leave() {
	if g.inside.Add(-1) == 0 && g.frozen.Load() {
		g.mu.Lock()
		if g.drained != nil {
			select {
			case g.drained <- struct{}{}:
			default:
			}
		}
		g.mu.Unlock()
	}
}

// freeze parks every request from now on and returns once none is inside the wrapped filesystem. If ctx ends
// first (a request that does not return, such as a lock wait), the gate opens again and freeze returns
// ctx's error.
func (g *gate) freeze(ctx context.Context) error {
	g.mu.Lock()
	if g.frozen.Load() {
		g.mu.Unlock()
		return nil
	}
	g.thawed = make(chan struct{})
	g.drained = make(chan struct{}, 1)
	drained := g.drained
	g.frozen.Store(true)
	g.mu.Unlock()
	for g.inside.Load() != 0 {
		select {
		case <-drained:
		case <-ctx.Done():
			g.thaw()
			return ctx.Err()
		}
	}
	return nil
}

// thaw lets the parked requests, and every later one, through.
func (g *gate) thaw() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.frozen.Load() {
		return
	}
	g.frozen.Store(false)
	close(g.thawed)
	g.thawed = nil
	g.drained = nil
}

// journalSize is how many results the journal keeps: far more than the requests that can be in flight at a
// take-over (go-fuse's readers, the kernel's max_background), so that none of those is forgotten.
const journalSize = 4096

// JournalEntry is the result of one applied request that is not idempotent.
type JournalEntry struct {
	// Unique is the request's unique id as the kernel first sent it (bit 63 clear).
	Unique uint64 `json:"unique"`
	// Opcode is the FUSE opcode (fuse.h's numbering: CREATE is 35).
	Opcode uint32 `json:"opcode"`
	// Status is the answer: 0, or a positive errno.
	Status int32 `json:"status"`
	// Out is the reply's body as go-fuse serializes it (an EntryOut, a CreateOut, an OpenOut), empty for a
	// request answered by its status alone.
	Out []byte `json:"out,omitempty"`
}

// journal is the ring of the last journalSize results of this process, and the results loaded from the
// process this one took over from.
type journal struct {
	mu     sync.Mutex
	ring   []JournalEntry // in order of recording, from next (when full)
	next   int
	loaded map[uint64]JournalEntry // by unique id, bit 63 clear
}

// record keeps a result; out is copied.
func (j *journal) record(unique uint64, op uint32, st fuse.Status, out []byte) JournalEntry {
	e := JournalEntry{Unique: unique &^ uniqueResend, Opcode: op, Status: int32(st)}
	if len(out) > 0 {
		e.Out = append([]byte(nil), out...)
	}
	j.mu.Lock()
	if len(j.ring) < journalSize {
		j.ring = append(j.ring, e)
	} else {
		j.ring[j.next] = e
		j.next = (j.next + 1) % journalSize
	}
	j.mu.Unlock()
	return e
}

// entries returns the recorded results, oldest first.
func (j *journal) entries() []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]JournalEntry, 0, len(j.ring))
	out = append(out, j.ring[j.next:]...)
	return append(out, j.ring[:j.next]...)
}

// load makes es the results a re-delivered request is answered from, replacing any loaded before.
func (j *journal) load(es []JournalEntry) {
	m := make(map[uint64]JournalEntry, len(es))
	for _, e := range es {
		m[e.Unique&^uniqueResend] = e
	}
	j.mu.Lock()
	j.loaded = m
	j.mu.Unlock()
}

// lookup finds the loaded result of a re-delivered request: unique must have bit 63 set, and the opcode
// must be the one recorded (a different one is a different request).
func (j *journal) lookup(unique uint64, op uint32) (JournalEntry, bool) {
	if unique&uniqueResend == 0 {
		return JournalEntry{}, false
	}
	j.mu.Lock()
	e, ok := j.loaded[unique&^uniqueResend]
	j.mu.Unlock()
	return e, ok && e.Opcode == op
}

// FUSE opcodes of the journaled requests (fuse.h; go-fuse keeps its own unexported).
const (
	fuseMknod       = 8
	fuseMkdir       = 9
	fuseUnlink      = 10
	fuseRmdir       = 11
	fuseLink        = 13
	fuseOpen        = 14
	fuseRelease     = 18
	fuseSetxattr    = 21
	fuseRemovexattr = 24
	fuseOpendir     = 27
	fuseReleasedir  = 29
	fuseSymlink     = 6
	fuseCreate      = 35
	fuseRename2     = 45
	fuseTmpfile     = 51
)

// structBytes is the memory of *p, which is how go-fuse writes a reply's body.
func structBytes[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// reqStart is when a request entered, and the crash record whose commit it holds (nil: none).
type reqStart struct {
	t   time.Time
	rec *crashRecord
}

// end writes the request's crash record entry and lets commit go.
func (s reqStart) end() {
	if s.rec != nil {
		s.rec.end()
	}
}

// enter passes the gate and returns the request's start, for record (which leaves the gate). A request that
// changes the tree takes the crash record's commit, if there is a record.
func (r *recordingFS) enter(op opcode) reqStart {
	r.gate.enter()
	return r.entered(op)
}

// entered is enter once the gate is passed.
func (r *recordingFS) entered(op opcode) reqStart {
	s := reqStart{t: time.Now()}
	if recordedOps[op] {
		if c := r.crash.Load(); c != nil {
			c.begin()
			s.rec = c
		}
	}
	return s
}

// recordedOps are the requests that change the tree, its lookup counts or its handles: those the crash
// record writes an entry for, one at a time.
var recordedOps = [numOpcodes]bool{
	opLookup: true, opForget: true, opSetattr: true, opMknod: true, opMkdir: true, opUnlink: true, opRmdir: true,
	opRename: true, opLink: true, opSymlink: true, opSetxattr: true, opRemovexattr: true, opCreate: true,
	opTmpfile: true, opOpen: true, opRelease: true, opWrite: true, opCopyFileRange: true, opIoctl: true,
	opFallocate: true, opOpendir: true, opReaddir: true, opReaddirplus: true, opReleasedir: true,
}

// noteIno and noteHandle tell the crash record, if any, that the request changes a node or a handle.
func (r *recordingFS) noteIno(ino uint64) {
	if r.crash.Load() != nil && r.fsys != nil {
		r.fsys.noteIno(ino)
	}
}

func (r *recordingFS) noteHandle(fh uint64) {
	if r.crash.Load() != nil && r.fsys != nil {
		r.fsys.noteHandle(fh)
	}
}

// journaled gives the crash record, if any, a journal entry of the request being recorded.
func (r *recordingFS) journaled(e JournalEntry) {
	if c := r.crash.Load(); c != nil {
		c.mu.Lock()
		c.journal = append(c.journal, e)
		c.mu.Unlock()
	}
}

// replay answers a re-delivered request from the loaded journal: it copies the recorded reply body into out
// and sets *st. It reports whether it did; the caller then returns without applying the request.
func (r *recordingFS) replay(h *fuse.InHeader, op uint32, out []byte, st *fuse.Status) bool {
	if h.Unique&uniqueResend == 0 {
		return false
	}
	e, ok := r.journal.lookup(h.Unique, op)
	if !ok {
		return false
	}
	copy(out, e.Out)
	*st = fuse.Status(e.Status)
	r.replayed.Add(1)
	return true
}

// keep journals the result of a request that was applied.
func (r *recordingFS) keep(h *fuse.InHeader, op uint32, out []byte, st *fuse.Status) {
	if *st != fuse.OK {
		out = nil
	}
	r.journaled(r.journal.record(h.Unique, op, *st, out))
}

// skipRelease tells whether a re-delivered RELEASE or RELEASEDIR must not reach the wrapped filesystem:
// answered from the journal (applied already), or of a handle the filesystem does not know (go-fuse's
// bridge panics on it). Either way the kernel gets OK, the only answer a release has.
func (r *recordingFS) skipRelease(in *fuse.ReleaseIn, op uint32) bool {
	var st fuse.Status
	if r.replay(&in.InHeader, op, nil, &st) {
		return true
	}
	if in.Unique&uniqueResend != 0 && r.handleKnown != nil && !r.handleKnown(in.NodeId, in.Fh) {
		r.replayed.Add(1)
		return true
	}
	return false
}

// freeze parks every request entering the filesystem from now on, and returns once those inside have
// returned (and been journaled). On error (ctx ended first) the gate is open again.
func (r *recordingFS) freeze(ctx context.Context) error { return r.gate.freeze(ctx) }

// thaw lets the parked requests proceed, and applies the FORGETs that came meanwhile.
func (r *recordingFS) thaw() {
	r.gate.thaw()
	r.applyForgets(r.gate.takeHeld())
}

// heldForgets are the FORGETs that came while frozen, for the daemon taking over; they are this daemon's no
// more.
func (r *recordingFS) heldForgets() []Forget { return r.gate.takeHeld() }

// applyForgets applies FORGETs kept while frozen (by this daemon or the one it took over from).
func (r *recordingFS) applyForgets(fs []Forget) {
	for _, f := range fs {
		r.Forget(f.Node, f.N)
	}
}

// journalEntries returns the journal, oldest first, for the state a take-over carries.
func (r *recordingFS) journalEntries() []JournalEntry { return r.journal.entries() }

// loadJournal gives the journal of the process taken over from: a re-delivered request found in it is
// answered from it.
func (r *recordingFS) loadJournal(es []JournalEntry) { r.journal.load(es) }
