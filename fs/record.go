package fs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/spool"
)

// The crash record (docs/takeover.md, "Crash"): with a keeper of descriptors outside the daemon (systemd's fd
// store, tempfs's holder), a daemon killed with SIGKILL can be followed by a new one that serves the same
// mount with everything the old one answered for. The keeper holds the FUSE connection, every descriptor of
// the spool and this record, a memfd the daemon appends to.
//
// The record starts with a snapshot (a hand-over's state, taken frozen) and goes on with one entry per
// request that changes anything: the state, after the request, of every node, directory entry and handle it
// touched, with the kernel's lookup count of each node, the counters, and the journal entry of a request
// that is not idempotent. Each entry is written before the request is answered, and the requests that
// change anything run one at a time (commit), so that an entry never shows half of another request. A
// request the old daemon answered is therefore in the record; one it did not answer is sent again by the
// kernel after FUSE_NOTIFY_RESEND, and is answered from the journal if its entry was written, or applied
// afresh. A descriptor is in the keeper before any entry names it; one the spool closed leaves the keeper
// after the entry that stops naming it.
//
// What is touched is noted where it changes (noteNode, noteEntry, noteHandle): the directory entry sites,
// the lookup counts, the handle table, the spool's moves, and in recordingFS the node of a SETATTR, WRITE and
// the like.
//
// Lock order: crashRecord.commit comes before everything (recordingFS takes it before a request enters the
// filesystem; background work after FS.background); crashRecord.mu is a leaf.

// DescriptorStore keeps descriptors by name outside the daemon: systemd's fd store or tempfs's holder.
type DescriptorStore interface {
	// Add stores a copy of fd under name; when it returns, a later Add or Remove is seen after it.
	Add(name string, fd int) error
	// Remove lets every descriptor stored under name go.
	Remove(name string) error
}

// recordFormat and recordVersion head a crash record; a daemon recovers only from the versions it reads.
const (
	recordFormat  = "tempfs-crash-record"
	recordVersion = 1
	// recordPrefix names the record in the store: "record.GEN", GEN counting its rewrites.
	recordPrefix = "record."
	// compactAfter is how large the record grows before it is rewritten as a snapshot.
	compactAfter = 64 << 20
)

// recordHeader is the record's first frame.
type recordHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Gen     uint64 `json:"gen"`
	// Settings are the mount's settings, the caller's (cmd/tempfs), kept as given.
	Settings json.RawMessage `json:"settings"`
	State    TakeoverState   `json:"state"`
}

// recordEntry is one request's (or one piece of background work's) changes. References are inode numbers.
type recordEntry struct {
	Journal []JournalEntry `json:"j,omitempty"`
	// Nodes are the touched nodes as nodeState with inode numbers for references and no Children (entries
	// change through Entries); Spool is 0 for a file whose bytes are described in Files, -1 when freed.
	Nodes   []nodeState                `json:"n,omitempty"`
	Files   map[uint64]spool.FileState `json:"f,omitempty"`
	Entries []entryState               `json:"e,omitempty"`
	// Refs are the kernel's lookup counts of the touched nodes (0: none).
	Refs     []refState    `json:"r,omitempty"`
	Handles  []handleState `json:"h,omitempty"`
	Released []uint64      `json:"x,omitempty"`
	NextIno  uint64        `json:"i"`
	// MonoBase is this process's: the Used and Opened stamps of Nodes are its Mono readings.
	MonoBase         int64              `json:"m"`
	Counters         countersState      `json:"c"`
	Pool             spool.PoolCounters `json:"p"`
	LastDescriptorID uint64             `json:"d"`
}

// entryState is one directory entry: Node 0 for none.
type entryState struct {
	Dir  uint64 `json:"d"`
	Name string `json:"s"`
	Node uint64 `json:"n"`
}

type entryKey struct {
	dir  *Dir
	name string
}

// crashRecord writes the record of one mount.
type crashRecord struct {
	// commit is held by each recorded request from before it enters the filesystem until its entry is
	// written, and by background work that changes the tree.
	commit sync.Mutex
	fsys   *FS
	store  DescriptorStore
	log    *slog.Logger
	// maxStored is how many descriptors the store takes (0: no limit known).
	maxStored int

	mu      sync.Mutex // guards what follows up to file
	nodes   map[node]struct{}
	entries map[entryKey]struct{}
	handles map[uint64]struct{}
	closed  []string
	journal []JournalEntry
	after   []func()
	// later is the spool's work that must wait for the entry (Later).
	later []func()
	// stored are the names in the store; mounted is false until the record is on (notes are dropped).
	stored map[string]bool

	// Guarded by commit.
	file      *os.File
	gen       uint64
	off       int64
	compactAt int64
	broken    error // the last append failed: logged once
	monoBase  int64

	compacting atomic.Bool
	// mount is what compaction freezes; settings go into each snapshot.
	mount    *Mount
	settings json.RawMessage
}

func newCrashRecord(fsys *FS, store DescriptorStore, maxStored int) *crashRecord {
	return &crashRecord{fsys: fsys, store: store, log: fsys.log, maxStored: maxStored,
		nodes: map[node]struct{}{}, entries: map[entryKey]struct{}{}, handles: map[uint64]struct{}{},
		stored: map[string]bool{}, monoBase: monoBase()}
}

// noteNode, noteEntry and noteHandle say that a node, a directory entry or a handle changed.
func (fsys *FS) noteNode(n node) {
	if r := fsys.crash.Load(); r != nil && n != nil {
		r.mu.Lock()
		r.nodes[n] = struct{}{}
		r.mu.Unlock()
	}
}

func (fsys *FS) noteEntry(d *Dir, name string, ns ...node) {
	if r := fsys.crash.Load(); r != nil {
		r.mu.Lock()
		r.entries[entryKey{d, name}] = struct{}{}
		r.nodes[d] = struct{}{}
		for _, n := range ns {
			if n != nil {
				r.nodes[n] = struct{}{}
			}
		}
		r.mu.Unlock()
	}
}

func (fsys *FS) noteHandle(fh uint64) {
	if r := fsys.crash.Load(); r != nil && fh != 0 {
		r.mu.Lock()
		r.handles[fh] = struct{}{}
		r.mu.Unlock()
	}
}

// noteIno notes the node the kernel knows by ino (the root, or one it holds a lookup of).
func (fsys *FS) noteIno(ino uint64) {
	if fsys.crash.Load() == nil || ino == 0 {
		return
	}
	if ino == fuse.FUSE_ROOT_ID {
		fsys.noteNode(fsys.root)
		return
	}
	if n := fsys.refs.node(ino); n != nil {
		fsys.noteNode(n)
	}
}

// notifyKernel runs a notification to the kernel that may wait for a lock the kernel holds while a request
// waits for this daemon (NotifyDelete takes the directory's lock): while a recorded request holds commit,
// after commit is let go; otherwise at once.
func (fsys *FS) notifyKernel(fn func()) {
	if r := fsys.crash.Load(); r != nil {
		r.mu.Lock()
		r.after = append(r.after, fn)
		r.mu.Unlock()
		return
	}
	fn()
}

// The spool's Watcher.

func (r *crashRecord) DescriptorMade(name string, fd int) error {
	r.mu.Lock()
	n := len(r.stored)
	r.mu.Unlock()
	if r.maxStored > 0 && n >= r.maxStored {
		return fmt.Errorf("it holds %d descriptors, its most: %w", n, syscall.ENFILE)
	}
	if err := r.store.Add(name, fd); err != nil {
		return err
	}
	r.mu.Lock()
	r.stored[name] = true
	r.mu.Unlock()
	return nil
}

func (r *crashRecord) DescriptorClosed(name string) {
	r.mu.Lock()
	r.closed = append(r.closed, name)
	r.mu.Unlock()
}

func (r *crashRecord) Later(fn func()) {
	r.mu.Lock()
	r.later = append(r.later, fn)
	r.mu.Unlock()
}

func (r *crashRecord) Moved(f *spool.File) {
	if n, ok := f.Tag().(*File); ok {
		r.mu.Lock()
		r.nodes[n] = struct{}{}
		r.mu.Unlock()
	}
}

// begin takes commit for a recorded request or background work; end writes the entry and lets it go.
func (r *crashRecord) begin() { r.commit.Lock() }

func (r *crashRecord) end() {
	r.mu.Lock()
	nodes, entries, handles, closed, journal := r.nodes, r.entries, r.handles, r.closed, r.journal
	r.nodes, r.entries, r.handles, r.closed, r.journal = map[node]struct{}{}, map[entryKey]struct{}{}, map[uint64]struct{}{}, nil, nil
	after, later := r.after, r.later
	r.after, r.later = nil, nil
	r.mu.Unlock()
	if len(nodes)+len(entries)+len(handles)+len(closed)+len(journal) > 0 {
		if err := r.write(nodes, entries, handles, journal); err != nil {
			if r.broken == nil {
				r.log.Error("crash record: an entry could not be written; a crash from now on loses what it lacks", "err", err)
			}
			r.broken = err
		}
		r.removeClosed(closed)
	}
	for _, fn := range later {
		fn()
	}
	compact := r.off > r.compactAt && r.compacting.CompareAndSwap(false, true)
	r.commit.Unlock()
	for _, fn := range after {
		fn()
	}
	if compact {
		go r.compact()
	}
}

func (r *crashRecord) removeClosed(closed []string) {
	for _, name := range closed {
		if err := r.store.Remove(name); err != nil {
			r.log.Warn("crash record: a closed descriptor could not leave the store", "name", name, "err", err)
		}
		r.mu.Lock()
		delete(r.stored, name)
		r.mu.Unlock()
	}
}

// recordRefs refer to nodes by inode number.
var recordRefs = stateRefs{
	node:  func(n node) int { return int(n.EmbeddedInode().StableAttr().Ino) },
	file:  func(*File) int { return 0 },
	owner: func(*owner.Owner) int { return -1 },
}

// write appends the entry of the touched things.
func (r *crashRecord) write(nodes map[node]struct{}, entries map[entryKey]struct{}, handles map[uint64]struct{}, journal []JournalEntry) error {
	fsys := r.fsys
	e := recordEntry{Journal: journal, MonoBase: r.monoBase}
	for n := range nodes {
		ns, err := nodeStateOf(n, recordRefs, true)
		if err != nil {
			return err
		}
		if f, ok := n.(*File); ok && ns.Spool >= 0 {
			fs, err := f.data.Record()
			if err != nil {
				return fmt.Errorf("node %d: %w", ns.Ino, err)
			}
			if e.Files == nil {
				e.Files = map[uint64]spool.FileState{}
			}
			e.Files[ns.Ino] = fs
		}
		e.Nodes = append(e.Nodes, ns)
		e.Refs = append(e.Refs, refState{Node: int(ns.Ino), Count: fsys.refs.count(ns.Ino)})
	}
	for k := range entries {
		k.dir.entriesMu.RLock()
		c := k.dir.children[k.name]
		k.dir.entriesMu.RUnlock()
		es := entryState{Dir: k.dir.StableAttr().Ino, Name: k.name}
		if c != nil {
			es.Node = c.EmbeddedInode().StableAttr().Ino
		}
		e.Entries = append(e.Entries, es)
	}
	for fh := range handles {
		fsys.handles.mu.Lock()
		he, ok := fsys.handles.byID[fh]
		fsys.handles.mu.Unlock()
		if !ok {
			e.Released = append(e.Released, fh)
			continue
		}
		hs, err := handleStateOf(fh, he, recordRefs.node)
		if err != nil {
			return err
		}
		e.Handles = append(e.Handles, hs)
	}
	e.Counters = fsys.countersNow()
	e.NextIno = fsys.nextIno.Load()
	e.Pool = fsys.pool.Counters()
	e.LastDescriptorID = fsys.pool.LastDescriptorID()
	return r.appendFrame(&e)
}

// appendFrame writes v as one frame: its length and CRC-32 (little endian, 4 bytes each), then its JSON. A
// frame cut short by a kill, or garbled, ends the record where it starts.
func (r *crashRecord) appendFrame(v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	frame := make([]byte, 8+len(body))
	binary.LittleEndian.PutUint32(frame, uint32(len(body)))
	binary.LittleEndian.PutUint32(frame[4:], crc32.ChecksumIEEE(body))
	copy(frame[8:], body)
	if _, err := r.file.WriteAt(frame, r.off); err != nil {
		return err
	}
	r.off += int64(len(frame))
	return nil
}

// writeSnapshot starts a new record file (generation gen) with the mount's state st.
func writeSnapshot(st *TakeoverState, settings json.RawMessage, gen uint64) (*os.File, int64, error) {
	fd, err := unix.MemfdCreate("tempfs-crash-record", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, err
	}
	f := os.NewFile(uintptr(fd), "crash-record")
	w := &crashRecord{file: f}
	if err := w.appendFrame(recordHeader{Format: recordFormat, Version: recordVersion, Gen: gen, Settings: settings, State: *st}); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, w.off, nil
}

// StartCrashRecord keeps the mount's descriptors in store and starts its crash record there, so that a new
// daemon can serve the mount after this one is killed (RecoverMount). settings are the caller's, given back
// by RecoverMount. maxStored is how many descriptors the store takes (0: unknown). The mount is frozen while
// its state is described.
func (m *Mount) StartCrashRecord(store DescriptorStore, maxStored int, settings json.RawMessage) error {
	if m.fs.owners != nil {
		return errors.New("owners (--owner) are not kept in a crash record yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Freeze(ctx); err != nil {
		return err
	}
	defer m.Thaw()
	r := newCrashRecord(m.fs, store, maxStored)
	r.mount, r.settings = m, settings
	st, fds, err := m.ExportState()
	if err != nil {
		return err
	}
	for _, d := range fds {
		if r.stored[d.Name] {
			continue
		}
		if err := store.Add(d.Name, d.FD); err != nil {
			return fmt.Errorf("storing %s: %w", d.Name, err)
		}
		r.stored[d.Name] = true
	}
	if err := r.startFile(st, 1); err != nil {
		return err
	}
	m.attachRecord(r)
	return nil
}

// startFile writes a snapshot as record generation gen, stores it, and makes it the record appended to. The
// mount is frozen; the previous generation, if any, leaves the store.
func (r *crashRecord) startFile(st *TakeoverState, gen uint64) error {
	f, off, err := writeSnapshot(st, r.settings, gen)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s%d", recordPrefix, gen)
	if err := r.store.Add(name, int(f.Fd())); err != nil {
		f.Close()
		return fmt.Errorf("storing the crash record: %w", err)
	}
	old, oldGen := r.file, r.gen
	r.file, r.gen, r.off, r.compactAt = f, gen, off, max(compactAfter, 4*off)
	r.mu.Lock()
	r.stored[name] = true
	r.mu.Unlock()
	if old != nil {
		old.Close()
		r.removeClosed([]string{fmt.Sprintf("%s%d", recordPrefix, oldGen)})
	}
	return nil
}

// compact rewrites the record as a snapshot of the frozen mount.
func (r *crashRecord) compact() {
	defer r.compacting.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.mount.Freeze(ctx); err != nil {
		r.log.Warn("crash record: could not freeze to rewrite the record", "err", err)
		return
	}
	defer r.mount.Thaw()
	r.commit.Lock()
	defer r.commit.Unlock()
	was := r.off
	st, _, err := r.mount.ExportState()
	if err == nil {
		err = r.startFile(st, r.gen+1)
	}
	if err != nil {
		r.log.Error("crash record: rewriting it failed; appending to the old one", "err", err)
		return
	}
	r.log.Info("crash record rewritten", "was", was, "now", r.off, "pause", time.Since(start))
}

// attachRecord turns the record on: from now on every recorded request and background work writes to it.
// The mount is frozen (nothing runs) or not serving yet.
func (m *Mount) attachRecord(r *crashRecord) {
	m.fs.pool.SetWatcher(r)
	m.fs.crash.Store(r)
	m.raw.crash.Store(r)
}

// CrashRecorded tells whether the mount keeps a crash record.
func (m *Mount) CrashRecorded() bool { return m.fs.crash.Load() != nil }
