package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// handoverFile is a file of the pool handed over: how it is made, and where its bytes must be then.
type handoverFile struct {
	name    string
	account int // index in handoverPool.accounts, -1 for none
	build   func(t *testing.T, f *File)
	where   string
}

// handoverPool is a pool with a file of each kind a take-over must carry.
type handoverPool struct {
	parent   string
	store    *Store
	pool     *Pool
	files    []*File
	accounts []*Account
	specs    []handoverFile
}

const (
	handoverLimit    = 64 * kib // account 0's limit
	handoverAtCap    = 128 * kib
	handoverLimitedN = 40 * kib
)

// handoverFiles are the files of newHandoverPool, built in this order; the last fills RAM to the cap.
var handoverFiles = []handoverFile{
	{"empty", 0, func(t *testing.T, f *File) {}, WhereEmpty},
	{"emptied", -1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(10, 1), 0)
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
	}, WhereEmpty},
	// Three small files side by side in one arena chunk, the middle one closed: its slot is on the free list.
	{"tiny a", 1, func(t *testing.T, f *File) { mustWrite(t, f, pattern(100, 2), 0) }, WhereArena},
	{"tiny gone", -1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(200, 3), 0)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}, WhereClosed},
	{"tiny b", 1, func(t *testing.T, f *File) { mustWrite(t, f, pattern(300, 4), 0) }, WhereArena},
	{"disk gone", -1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(100, 24), 0)
		if err := f.Rollover(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}, WhereClosed},
	{"arena fallocated", -1, func(t *testing.T, f *File) {
		if err := f.Allocate(0, 6000, 0); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, f, pattern(100, 5), 10)
	}, WhereArena},
	{"limited", 0, func(t *testing.T, f *File) { mustWrite(t, f, pattern(int(handoverLimitedN), 6), 0) }, WhereArena},
	{"own memfd", 1, func(t *testing.T, f *File) { mustWrite(t, f, pattern(200*int(kib), 7), 0) }, WhereMemfd},
	{"sparse memfd", -1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(4096, 8), 0)
		mustWrite(t, f, pattern(4096, 9), 250*kib)
	}, WhereMemfd},
	{"rolled over", 1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(100*int(kib), 10), 0)
		if err := f.Rollover(); err != nil {
			t.Fatal(err)
		}
		// A writeback error two descriptions were told of, and a third not yet.
		f.syncSeq, f.syncErr = 2, mapIOError("writeback", unix.EIO)
	}, WhereDisk},
	{"sparse disk", -1, func(t *testing.T, f *File) {
		if err := f.Truncate(3 * mib); err != nil { // past MaxSize: to disk
			t.Fatal(err)
		}
		mustWrite(t, f, pattern(8192, 11), 0)
		mustWrite(t, f, pattern(8192, 12), 2*mib)
	}, WhereDisk},
	{"passthrough", 1, func(t *testing.T, f *File) {
		mustWrite(t, f, pattern(50*int(kib), 13), 0)
		if err := f.Rollover(); err != nil {
			t.Fatal(err)
		}
		f.NoteExternalWrite()
		fd, ok := f.PassthroughFd()
		if !ok {
			t.Fatal("no passthrough fd")
		}
		// The kernel writing behind the daemon's back: the pool has not seen it yet.
		if _, err := unix.Pwrite(fd, pattern(10*int(kib), 14), 60*kib); err != nil {
			t.Fatal(err)
		}
	}, WherePassthrough},
	{"at the cap", 1, func(t *testing.T, f *File) {
		// The memory cap is lowered to what RAM holds plus this file: RAM is then exactly full.
		if err := f.pool.SetMemoryCap(f.pool.Stats().RAMBytes + handoverAtCap); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, f, pattern(int(handoverAtCap), 15), 0)
		if st := f.pool.Stats(); st.RAMBytes != st.RAMCap {
			t.Fatalf("RAM %d, cap %d: not at the cap", st.RAMBytes, st.RAMCap)
		}
	}, WhereMemfd},
}

// newHandoverPool builds the pool of handoverFiles over a store of its own, with the given disk cap; the
// caller disposes of it.
func newHandoverPool(t *testing.T, diskCap int64) *handoverPool {
	t.Helper()
	parent := t.TempDir()
	store, err := OpenStoreWithLogger(parent, slog.New(failOnWarn{t}))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := NewPool(Config{MaxSize: mib, MemoryCap: 4 * mib, DiskCap: diskCap, Store: store, Logger: slog.New(failOnWarn{t})})
	if err != nil {
		t.Fatal(err)
	}
	h := &handoverPool{parent: parent, store: store, pool: pool, specs: handoverFiles}
	// Account 0 has a limit, 1 only counts, 2 has no file.
	h.accounts = []*Account{pool.NewAccount(handoverLimit), pool.NewAccount(0), pool.NewAccount(mib)}
	for _, spec := range h.specs {
		f := pool.NewFile()
		if spec.account >= 0 {
			if err := f.ChargeTo(h.accounts[spec.account]); err != nil {
				t.Fatal(err)
			}
		}
		spec.build(t, f)
		h.files = append(h.files, f)
	}
	for i, f := range h.files {
		if got := whereOf(f); got != h.specs[i].where {
			t.Fatalf("%s: in %s, want %s", h.specs[i].name, got, h.specs[i].where)
		}
	}
	return h
}

// liveFiles are the files not closed.
func (h *handoverPool) liveFiles() []*File {
	var live []*File
	for _, f := range h.files {
		if whereOf(f) != WhereClosed {
			live = append(live, f)
		}
	}
	return live
}

func whereOf(f *File) string {
	f.mu.RLock()
	closed := f.closed
	f.mu.RUnlock()
	if closed {
		return WhereClosed
	}
	switch f.Where() {
	case Empty:
		return WhereEmpty
	case Arena:
		return WhereArena
	case Memfd:
		return WhereMemfd
	case DiskFile:
		return WhereDisk
	case DiskPassthrough:
		return WherePassthrough
	}
	return "?"
}

// fileView is what a reader sees of a File.
type fileView struct {
	where   string
	tier    Tier
	size    int64
	blocks  int64
	content []byte
	account int
}

func viewOf(t *testing.T, f *File, accounts []*Account) fileView {
	t.Helper()
	v := fileView{where: whereOf(f), tier: f.Tier(), size: f.Size(), blocks: f.Blocks(), account: -1}
	if v.where != WhereClosed {
		v.content = readAll(t, f)
	}
	for j, a := range accounts {
		if f.Account() == a {
			v.account = j
		}
	}
	return v
}

// roundTrip encodes the state as JSON and decodes it refusing unknown fields, as the wire does.
func roundTrip(t *testing.T, st PoolState) PoolState {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var out PoolState
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// sendDescriptors passes the descriptors through a Unix socket with SCM_RIGHTS, in batches of at most
// SCM_MAX_FD, as a take-over does, and returns what the receiving end got, by name.
func sendDescriptors(t *testing.T, descs []Descriptor) map[string]int {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	const scmMaxFd = 253
	got := map[string]int{}
	for start := 0; start < len(descs); start += scmMaxFd {
		batch := descs[start:min(start+scmMaxFd, len(descs))]
		names := make([]string, len(batch))
		fds := make([]int, len(batch))
		for i, d := range batch {
			names[i], fds[i] = d.Name, d.FD
		}
		if err := unix.Sendmsg(pair[0], []byte(strings.Join(names, "\n")), unix.UnixRights(fds...), nil, 0); err != nil {
			t.Fatalf("sendmsg: %v", err)
		}
		buf := make([]byte, 1<<16)
		oob := make([]byte, unix.CmsgSpace(scmMaxFd*4))
		n, oobn, flags, _, err := unix.Recvmsg(pair[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil || flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
			t.Fatalf("recvmsg: %v (flags %#x)", err, flags)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control messages: %d, %v", len(msgs), err)
		}
		rights, err := unix.ParseUnixRights(&msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		received := strings.Split(string(buf[:n]), "\n")
		if len(rights) != len(received) {
			t.Fatalf("%d descriptors for %d names", len(rights), len(received))
		}
		for i, name := range received {
			if _, dup := got[name]; dup {
				t.Fatalf("descriptor %s named twice", name)
			}
			got[name] = rights[i]
		}
	}
	return got
}

// dupDescriptors is the descriptors dup'ed, by name: a cheaper stand-in for sending them.
func dupDescriptors(t testing.TB, descs []Descriptor) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, d := range descs {
		fd, err := unix.FcntlInt(uintptr(d.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		got[d.Name] = fd
	}
	return got
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestHandover hands a pool of every kind of file over to a "new process" (the descriptors pass through a
// Unix socket, the old ones are closed as at the old process's exit, the state goes through JSON), then
// checks that everything reads and counts the same, that the caps and quotas still hold, and that closing
// it all leaves no descriptor and no store behind.
func TestHandover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		diskCap int64
	}{
		{"no disk cap", 0},
		{"disk cap", 4 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) { testHandover(t, tc.diskCap) })
	}
}

func testHandover(t *testing.T, diskCap int64) {
	fdsBefore := openFdCount(t)
	h := newHandoverPool(t, diskCap)

	// What the old process shows (once it has looked at the passthrough file: Stats lag until then).
	views := make([]fileView, len(h.files))
	for i, f := range h.files {
		views[i] = viewOf(t, f, h.accounts)
	}
	oldStats := h.pool.Stats()
	var used []int64
	for _, a := range h.accounts {
		used = append(used, a.Used())
	}
	ptIndex := -1
	for i, spec := range h.specs {
		if spec.name == "passthrough" {
			ptIndex = i
		}
	}
	oldPt, _ := h.files[ptIndex].PassthroughFd()
	ptInode := inode(t, oldPt)
	storePath := h.store.Path()

	st, descs, err := h.pool.Export(h.files, h.accounts)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if after := h.pool.Stats(); !reflect.DeepEqual(after, oldStats) {
		t.Errorf("Export changed the pool's Stats:\n%+v\nwas\n%+v", after, oldStats)
	}
	st = roundTrip(t, st)
	fds := sendDescriptors(t, descs)
	// The old process exits: its descriptors close, nothing else happens to the pool (its Files are not
	// closed, which would give their bytes back).
	for _, d := range descs {
		if err := unix.Close(d.FD); err != nil {
			t.Fatal(err)
		}
	}
	fds["fuse"] = -7 // someone else's entry: ImportPool must leave it
	pool, files, accounts, err := ImportPool(st, fds, slog.New(failOnWarn{t}))
	if err != nil {
		t.Fatalf("ImportPool: %v", err)
	}
	if len(fds) != 1 || fds["fuse"] != -7 {
		t.Errorf("after ImportPool the caller's map holds %v; want only the entry not named by the state", fds)
	}
	store := pool.Config().Store
	if store.Path() != storePath {
		t.Errorf("store path %s, was %s", store.Path(), storePath)
	}

	// The same bytes, the same accounting.
	if got := pool.Stats(); !reflect.DeepEqual(got, oldStats) {
		t.Errorf("Stats after import:\n%+v\nbefore export:\n%+v", got, oldStats)
	}
	for i, f := range files {
		got, was := viewOf(t, f, accounts), views[i]
		if !bytes.Equal(got.content, was.content) {
			t.Errorf("%s: the bytes differ after import", h.specs[i].name)
		}
		got.content, was.content = nil, nil
		if !reflect.DeepEqual(got, was) {
			t.Errorf("%s: after import %+v, before %+v", h.specs[i].name, got, was)
		}
	}
	for j, a := range accounts {
		if a.Used() != used[j] || a.Limit() != h.accounts[j].Limit() {
			t.Errorf("account %d: used %d limit %d, was %d of %d", j, a.Used(), a.Limit(), used[j], h.accounts[j].Limit())
		}
	}
	var live []*File
	for _, f := range files {
		if whereOf(f) != WhereClosed {
			live = append(live, f)
		}
	}
	checkAccounting(t, pool, live)

	// The writeback error collected before is still told once to each description not told yet.
	byName := map[string]*File{}
	model := map[*File][]byte{}
	for i, f := range files {
		byName[h.specs[i].name] = f
		model[f] = views[i].content
	}
	if mark := WritebackMark(1); !errors.Is(byName["rolled over"].Sync(&mark), unix.EIO) || mark != 2 {
		t.Errorf("a description not told of the writeback error: mark %d", mark)
	}
	if mark := WritebackMark(2); byName["rolled over"].Sync(&mark) != nil {
		t.Errorf("a description told already is told again")
	}
	if _, err := byName["tiny gone"].WriteAt([]byte("x"), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("write to the closed file: %v, want ErrClosed", err)
	}

	// The passthrough file: the same backing file, still written by the kernel, caught up when looked at.
	pt := byName["passthrough"]
	fd, ok := pt.PassthroughFd()
	if !ok || inode(t, fd) != ptInode {
		t.Fatalf("passthrough fd %d (%v) is not the old backing file", fd, ok)
	}
	if _, err := unix.Pwrite(fd, pattern(4096, 16), 100*kib); err != nil {
		t.Fatal(err)
	}
	model[pt] = append(model[pt], make([]byte, 100*kib+4096-int64(len(model[pt])))...)
	copy(model[pt][100*kib:], pattern(4096, 16))
	pool.RefreshExternal()
	if got := pool.Stats(); got.DiskBytes <= oldStats.DiskBytes || got.DiskWrittenBytes <= oldStats.DiskWrittenBytes {
		t.Errorf("the kernel's writes to the passthrough file were not counted: disk %d written %d, were %d %d",
			got.DiskBytes, got.DiskWrittenBytes, oldStats.DiskBytes, oldStats.DiskWrittenBytes)
	}

	// The caps and the quota hold as before.
	write := func(f *File, p []byte, off int64) {
		t.Helper()
		mustWrite(t, f, p, off)
		if end := off + int64(len(p)); end > int64(len(model[f])) {
			model[f] = append(model[f], make([]byte, end-int64(len(model[f])))...)
		}
		copy(model[f][off:], p)
	}
	limited := byName["limited"]
	if _, err := limited.WriteAt(pattern(30*int(kib), 17), handoverLimitedN); !errors.Is(err, ErrOverQuota) {
		t.Errorf("writing past the account's limit: %v, want ErrOverQuota", err)
	}
	if err := limited.Truncate(handoverLimit + 1); !errors.Is(err, ErrOverQuota) {
		t.Errorf("truncating past the account's limit: %v, want ErrOverQuota", err)
	}
	write(limited, pattern(1000, 18), 100) // inside the slot: fine
	if got := accounts[0].Used(); got != handoverLimitedN {
		t.Errorf("limited account uses %d, want %d", got, handoverLimitedN)
	}
	before := pool.Stats()
	spill := pool.NewFile()
	spill.HandTo(accounts[1])
	live = append(live, spill)
	write(spill, pattern(100*int(kib), 19), 0) // RAM is full: the largest RAM file goes to disk
	after := pool.Stats()
	if after.Rollovers != before.Rollovers+1 || after.RAMBytes > after.RAMCap || byName["own memfd"].Tier() != Disk {
		t.Errorf("writing into a full RAM: rollovers %d → %d, RAM %d of %d, own memfd on %v; want the own memfd moved to disk",
			before.Rollovers, after.Rollovers, after.RAMBytes, after.RAMCap, byName["own memfd"].Tier())
	}
	tiny := pool.NewFile() // takes the free slot of "tiny gone", between "tiny a" and "tiny b"
	live = append(live, tiny)
	write(tiny, pattern(150, 20), 0)
	write(byName["tiny a"], pattern(3000, 21), 50) // to a bigger slot
	if err := byName["sparse disk"].Truncate(1000); err != nil {
		t.Fatal(err)
	}
	model[byName["sparse disk"]] = model[byName["sparse disk"]][:1000]
	if err := byName["tiny b"].Rollover(); err != nil {
		t.Fatal(err)
	}
	write(byName["empty"], pattern(5000, 22), 0)
	write(byName["at the cap"], pattern(10, 23), 0)
	for f, want := range model {
		if whereOf(f) != WhereClosed {
			checkContent(t, f, want)
		}
	}
	checkAccounting(t, pool, live)
	if got := accounts[1].Used(); got == used[1] {
		t.Errorf("account 1 did not follow its files: %d", got)
	}
	// Descriptors made by the new process never take a name the old one gave.
	tiny.mu.RLock()
	if chunk := tiny.place.(*arenaFile).slot.chunk; chunk.id > st.LastDescriptorID {
		t.Errorf("the free slot of an imported chunk was not reused (chunk %d)", chunk.id)
	}
	tiny.mu.RUnlock()
	spill.mu.RLock()
	if id := spill.place.(*memfdFile).id; id <= st.LastDescriptorID {
		t.Errorf("a new memfd got id %d, not past the old process's %d", id, st.LastDescriptorID)
	}
	spill.mu.RUnlock()

	// The store is still locked: a cleaner starting now (another mount's OpenStore) leaves it alone.
	other, err := OpenStoreWithLogger(h.parent, slog.New(failOnWarn{t}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(storePath); err != nil {
		t.Errorf("a cleaner removed the imported store: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := byName["passthrough"].Rollover(); err != nil { // a no-op on disk; the store still works:
		t.Fatal(err)
	}
	if err := byName["arena fallocated"].Rollover(); err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, pool, live)
	if diskCap > 0 {
		// The disk cap holds: a write that would pass it fails, and changes nothing.
		disk := byName["sparse disk"]
		if _, err := disk.WriteAt(pattern(int(diskCap), 25), 0); !errors.Is(err, ErrNoSpace) {
			t.Errorf("writing past the disk cap: %v, want ErrNoSpace", err)
		}
		checkContent(t, disk, model[disk])
		if st := pool.Stats(); st.DiskCap != diskCap || st.DiskBytes > diskCap {
			t.Errorf("disk %d of cap %d, want the cap %d", st.DiskBytes, st.DiskCap, diskCap)
		}
	}

	for _, f := range live {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if st := pool.Stats(); st.Files != 0 || st.RAMBytes != 0 || st.DiskBytes != 0 || st.Descriptors != 0 {
		t.Errorf("after closing every file: %+v", st)
	}
	for j, a := range accounts {
		if a.Used() != 0 {
			t.Errorf("account %d still uses %d", j, a.Used())
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(storePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store %s still there after Close: %v", storePath, err)
	}
	if got := openFdCount(t); got != fdsBefore {
		t.Errorf("%d descriptors open, %d before", got, fdsBefore)
	}
}

// TestHandoverRefused makes ImportPool refuse states and descriptor sets that do not agree, and checks that
// it then closed every descriptor the state names (and only those), and that the old pool, which goes on
// after a refused take-over, is unharmed.
func TestHandoverRefused(t *testing.T) {
	h := newHandoverPool(t, 0)
	defer h.close(t)
	st, descs, err := h.pool.Export(h.files, h.accounts)
	if err != nil {
		t.Fatal(err)
	}
	fileOf := func(st *PoolState, where string) *FileState {
		for i := range st.Files {
			if st.Files[i].Where == where {
				return &st.Files[i]
			}
		}
		t.Fatalf("no %s file", where)
		return nil
	}
	for _, tc := range []struct {
		name   string
		change func(st *PoolState, fds map[string]int)
		want   string
	}{
		{"a memfd missing", func(st *PoolState, fds map[string]int) {
			name := fileOf(st, WhereMemfd).FD
			unix.Close(fds[name])
			delete(fds, name)
		}, "were not received"},
		{"the store lock missing", func(st *PoolState, fds map[string]int) {
			unix.Close(fds[st.Store.Lock])
			delete(fds, st.Store.Lock)
		}, "were not received"},
		{"an arena chunk missing", func(st *PoolState, fds map[string]int) {
			unix.Close(fds[st.Chunks[0].FD])
			delete(fds, st.Chunks[0].FD)
		}, "were not received"},
		{"a lock that does not hold the store's lock", func(st *PoolState, fds map[string]int) {
			fresh, err := unix.Openat(fds[st.Store.Dir], storeLockName, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[st.Store.Lock])
			fds[st.Store.Lock] = fresh
		}, "does not hold the store's lock"},
		{"two names for one descriptor", func(st *PoolState, fds map[string]int) {
			a, b := st.Files[len(st.Files)-1].FD, fileOf(st, WhereMemfd).FD
			unix.Close(fds[a])
			fds[a] = fds[b]
		}, "as is"},
		{"descriptors swapped", func(st *PoolState, fds map[string]int) {
			a, b := fileOf(st, WhereMemfd).FD, fileOf(st, WhereDisk).FD
			fds[a], fds[b] = fds[b], fds[a]
		}, "not a memfd"},
		{"a memfd's size", func(st *PoolState, fds map[string]int) { fileOf(st, WhereMemfd).Size++ }, "bytes, the state says"},
		{"a backing file's allocation", func(st *PoolState, fds map[string]int) { fileOf(st, WhereDisk).Accounted += 4096 }, "allocates"},
		{"an account forgotten", func(st *PoolState, fds map[string]int) {
			for i := range st.Files {
				if st.Files[i].Account == 0 {
					st.Files[i].Account = -1
				}
			}
		}, "account 0"},
		{"an account's used bytes", func(st *PoolState, fds map[string]int) { st.Accounts[1].Used-- }, "account 1"},
		{"slot offsets forgotten", func(st *PoolState, fds map[string]int) {
			for i := range st.Files {
				st.Files[i].SlotOffset = 0
			}
		}, "another file's too"},
		{"a slot on the free list", func(st *PoolState, fds map[string]int) {
			f := fileOf(st, WhereArena)
			st.Chunks[f.Chunk].Free = append(st.Chunks[f.Chunk].Free, uint32(f.SlotOffset/st.Chunks[f.Chunk].SlotSize))
		}, "free list"},
		{"RAM bytes", func(st *PoolState, fds map[string]int) { st.Counters.RAMBytes += 512 }, "RAM bytes"},
		{"a file left out", func(st *PoolState, fds map[string]int) { st.Files = st.Files[1:] }, "live files"},
		{"an unknown placement", func(st *PoolState, fds map[string]int) { fileOf(st, WhereEmpty).Where = "tape" }, "unknown placement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFdCount(t)
			state := roundTrip(t, st)
			fds := dupDescriptors(t, descs)
			extra, err := unix.Dup(0)
			if err != nil {
				t.Fatal(err)
			}
			fds["fuse"] = extra
			tc.change(&state, fds)
			_, _, _, err = ImportPool(state, fds, slog.New(failOnWarn{t}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ImportPool: %v, want an error with %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			for _, name := range state.descriptorNames() {
				if _, left := fds[name]; left {
					t.Errorf("descriptor %s, named by the state, left in the caller's map", name)
				}
			}
			if fds["fuse"] != extra {
				t.Errorf("the caller's own descriptor was taken")
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
			if got := openFdCount(t); got != before {
				t.Errorf("%d descriptors open after the refusal, %d before", got, before)
			}
		})
	}
	// The old pool goes on, unharmed.
	checkAccounting(t, h.pool, h.liveFiles())
	if _, _, err := h.pool.Export(h.files, h.accounts); err != nil {
		t.Errorf("Export after refusals: %v", err)
	}
}

// TestHandoverExportRefused: Export refuses a list of files or accounts that does not describe the pool.
func TestHandoverExportRefused(t *testing.T) {
	h := newHandoverPool(t, 0)
	defer h.close(t)
	otherPool := newTestPool(t, Config{MemoryCap: mib})
	stranger := otherPool.NewFile()
	defer stranger.Close()
	for _, tc := range []struct {
		name     string
		files    func() []*File
		accounts func() []*Account
		want     string
	}{
		{"a live file left out", func() []*File { return h.files[1:] }, nil, "every live file"},
		{"a file twice", func() []*File { return append(h.files, h.files[0]) }, nil, "twice"},
		{"another pool's file", func() []*File { return append(h.files, stranger) }, nil, "another pool's"},
		{"an account left out", nil, func() []*Account { return h.accounts[1:] }, "not given"},
		{"an account twice", nil, func() []*Account { return append(h.accounts, h.accounts[0]) }, "twice"},
		{"another pool's account", nil, func() []*Account { return append(h.accounts, otherPool.NewAccount(0)) }, "another pool's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, accounts := h.files, h.accounts
			if tc.files != nil {
				files = tc.files()
			}
			if tc.accounts != nil {
				accounts = tc.accounts()
			}
			if _, _, err := h.pool.Export(files, accounts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Export: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// close closes the old pool's files and store, as a daemon whose take-over was refused does at its end.
func (h *handoverPool) close(t *testing.T) {
	t.Helper()
	for _, f := range h.liveFiles() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := h.store.Close(); err != nil {
		t.Error(err)
	}
}

// BenchmarkHandover measures what a take-over of a pool of small files costs while the daemon is frozen:
// Export, the state through JSON, and ImportPool (descriptors dup'ed, not sent). Per hand-over:
// export-ms, json-ms (encode and decode), import-ms, and the state's size in bytes per file.
func BenchmarkHandover(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("files="+strconv.Itoa(n), func(b *testing.B) {
			pool := newTestPool(b, Config{MaxSize: mib, MemoryCap: 256 * mib})
			files := make([]*File, n)
			account := pool.NewAccount(0)
			for i := range files {
				files[i] = pool.NewFile()
				files[i].HandTo(account)
				mustWrite(b, files[i], pattern(100+i%2000, byte(i)), 0)
			}
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			accounts := []*Account{account}
			var exportNs, jsonNs, importNs, stateBytes int64
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				st, descs, err := pool.Export(files, accounts)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				data, err := json.Marshal(st)
				if err != nil {
					b.Fatal(err)
				}
				decoded := PoolState{}
				if err := json.Unmarshal(data, &decoded); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				b.StopTimer()
				fds := dupDescriptors(b, descs)
				b.StartTimer()
				t3 := time.Now()
				imported, importedFiles, importedAccounts, err := ImportPool(decoded, fds, slog.New(failOnWarn{b}))
				if err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				b.StopTimer()
				// Dropped as by a process that exits: its descriptors close, its files' bytes stay the old pool's.
				_, held, err := imported.Export(importedFiles, importedAccounts)
				if err != nil {
					b.Fatal(err)
				}
				for _, d := range held {
					unix.Close(d.FD)
				}
				b.StartTimer()
				exportNs += t1.Sub(t0).Nanoseconds()
				jsonNs += t2.Sub(t1).Nanoseconds()
				importNs += t4.Sub(t3).Nanoseconds()
				stateBytes = int64(len(data))
			}
			b.ReportMetric(float64(exportNs)/float64(b.N)/1e6, "export-ms")
			b.ReportMetric(float64(jsonNs)/float64(b.N)/1e6, "json-ms")
			b.ReportMetric(float64(importNs)/float64(b.N)/1e6, "import-ms")
			b.ReportMetric(float64(stateBytes)/float64(n), "state-B/file")
		})
	}
}
