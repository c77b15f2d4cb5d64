package fs

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/spool"
)

// memStore is a DescriptorStore in the test's process: copies of the descriptors, by name.
type memStore struct {
	fds map[string][]int
}

func (s *memStore) Add(name string, fd int) error {
	c, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	s.fds[name] = append(s.fds[name], c)
	return nil
}

func (s *memStore) Remove(name string) error {
	for _, fd := range s.fds[name] {
		unix.Close(fd)
	}
	delete(s.fds, name)
	return nil
}

func (s *memStore) closeAll() {
	for name := range s.fds {
		_ = s.Remove(name)
	}
}

// recordedTree is a tree served through recordingFS with a crash record attached, as a mount under a
// descriptor store is.
type recordedTree struct {
	fsys  *FS
	raw   *recordingFS
	rec   *crashRecord
	store *memStore
	mount *Mount
}

// newRecordedTree is a tree with a record, over a pool of memoryCap bytes of RAM.
func newRecordedTree(t testing.TB, memoryCap int64) *recordedTree {
	t.Helper()
	store, err := spool.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A small max-size and arena sizes in between, so that files move between the arena, memfds and disk.
	pool, err := spool.NewPool(spool.Config{MaxSize: 64 << 10, MemoryCap: memoryCap, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	fsys := New(Options{Mountpoint: "/mnt", Pool: pool, RootMode: 01777})
	nodeFS := fsys.rawFS(&fusefs.Options{ServerCallbacks: quietServer{}, NullPermissions: true})
	raw := &recordingFS{fs: nodeFS, rec: fsys.requests, handleKnown: fsys.handleKnown, fsys: fsys}
	m := &Mount{fs: fsys, raw: raw, fd: -1, initRecord: []byte("init"), initReply: []byte("reply")}
	ms := &memStore{fds: map[string][]int{}}
	t.Cleanup(func() {
		ms.closeAll()
		store.Close()
	})
	r := newCrashRecord(fsys, ms, 0)
	r.mount = m
	st, fds, err := m.ExportState()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fds {
		if d.Name != fuseFDName {
			if err := ms.Add(d.Name, d.FD); err != nil {
				t.Fatal(err)
			}
			r.stored[d.Name] = true
		}
	}
	if err := r.startFile(st, 1); err != nil {
		t.Fatal(err)
	}
	m.attachRecord(r)
	return &recordedTree{fsys: fsys, raw: raw, rec: r, store: ms, mount: m}
}

// modelNow is the live tree as a record model, for comparison.
func (rt *recordedTree) modelNow(t *testing.T) *recordModel {
	t.Helper()
	st, _, err := rt.mount.ExportState()
	if err != nil {
		t.Fatal(err)
	}
	m, err := modelOf(st)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// modelRecorded is the model the record gives, as a new daemon would read it.
func (rt *recordedTree) modelRecorded(t *testing.T) (*recordModel, *RecoveredRecord) {
	t.Helper()
	data, err := readAll(int(rt.rec.file.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := parseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	st := *rec.state
	st.Pool.Chunks = nil // RecoverMount rebuilds them from the files
	m, err := modelOf(&st)
	if err != nil {
		t.Fatal(err)
	}
	return m, rec
}

// comparable is a model with what a record does not keep, or keeps otherwise, left out: clock stamps, the
// counters of the request in flight, the journal, and the allocation of files (recounted on recovery).
func (m *recordModel) comparable() map[string]any {
	nodes := map[uint64]nodeState{}
	for ino, ns := range m.nodes {
		n := *ns
		n.Used, n.Opened = 0, 0
		if len(n.Children) == 0 {
			n.Children = nil
		}
		nodes[ino] = n
	}
	files := map[uint64]spool.FileState{}
	for ino, fs := range m.files {
		fs.Accounted, fs.Pages, fs.FallocPages = 0, 0, 0
		files[ino] = fs
	}
	return map[string]any{"nodes": nodes, "files": files, "refs": m.refs, "handles": m.handles, "next_ino": m.nextIno}
}

// recovered is m as a recovery makes it: without the nodes nothing reaches, and without the bytes of files
// nothing can read (no name, no handle).
func (m *recordModel) recovered(t *testing.T) *recordModel {
	t.Helper()
	tree, files, accounts, err := m.tree()
	if err != nil {
		t.Fatal(err)
	}
	again, err := modelOf(&TakeoverState{Tree: tree, Owners: m.owners, Pool: spool.PoolState{Files: files, Accounts: accounts}})
	if err != nil {
		t.Fatal(err)
	}
	return again
}

func diffModels(t *testing.T, what string, live, recorded *recordModel) {
	t.Helper()
	a, b := live.recovered(t).comparable(), recorded.recovered(t).comparable()
	for k := range a {
		if !reflect.DeepEqual(a[k], b[k]) {
			ja, _ := json.Marshal(a[k])
			jb, _ := json.Marshal(b[k])
			// The first element that differs, when both are maps.
			var ma, mb map[string]json.RawMessage
			if json.Unmarshal(ja, &ma) == nil && json.Unmarshal(jb, &mb) == nil {
				for key, va := range ma {
					if string(mb[key]) != string(va) {
						ja, jb = []byte(key+": "+string(va)), []byte(key+": "+string(mb[key]))
						break
					}
				}
				for key, vb := range mb {
					if _, ok := ma[key]; !ok {
						ja, jb = []byte(key+": (none)"), []byte(key+": "+string(vb))
					}
				}
			}
			t.Fatalf("%s: the record's %s differ from the tree's:\ntree   %s\nrecord %s", what, k, ja, jb)
		}
	}
}

// TestCrashRecordFollowsTheTree runs a random mix of requests through recordingFS with a crash record and
// checks, every few steps, that reading the record back gives the tree as it is: every node, entry,
// file placement, lookup count and handle.
func TestCrashRecordFollowsTheTree(t *testing.T) {
	// A memory cap the files reach, so that writes move other files to disk.
	rt := newRecordedTree(t, 512<<10)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	raw := rt.raw
	hdr := func(node uint64) fuse.InHeader {
		return fuse.InHeader{NodeId: node, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: 4242}, Unique: r.Uint64() >> 2}
	}
	type open struct{ node, fh uint64 }
	var opens []open
	type dirOpen struct{ node, fh, off uint64 }
	var dirHandles []dirOpen
	dirs := []uint64{fuse.FUSE_ROOT_ID}
	refs := map[uint64]uint64{}
	name := func() string { return fmt.Sprintf("n%d", r.IntN(12)) }
	pick := func(s []uint64) uint64 { return s[r.IntN(len(s))] }
	for step := range 1500 {
		switch op := r.IntN(18); op {
		case 0, 1: // create, maybe from a template
			n := name()
			if r.IntN(4) == 0 {
				n = "tmpXXXXXX"
			}
			var out fuse.CreateOut
			in := &fuse.CreateIn{InHeader: hdr(pick(dirs)), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}
			if raw.Create(reqChan(), in, n, &out) == fuse.OK {
				opens = append(opens, open{out.NodeId, out.Fh})
				refs[out.NodeId]++
			}
		case 2, 3: // write, across the arena, memfds and disk
			if len(opens) == 0 {
				continue
			}
			o := opens[r.IntN(len(opens))]
			size := []int{10, 700, 5000, 40 << 10, 100 << 10}[r.IntN(5)]
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			raw.Write(reqChan(), &fuse.WriteIn{InHeader: hdr(o.node), Fh: o.fh, Offset: uint64(r.IntN(3) * 4096), Size: uint32(size)}, data)
		case 4: // release
			if len(opens) == 0 {
				continue
			}
			i := r.IntN(len(opens))
			o := opens[i]
			opens = append(opens[:i], opens[i+1:]...)
			raw.Release(reqChan(), &fuse.ReleaseIn{InHeader: hdr(o.node), Fh: o.fh})
		case 5: // mkdir
			var out fuse.EntryOut
			if raw.Mkdir(reqChan(), &fuse.MkdirIn{InHeader: hdr(pick(dirs)), Mode: 0o755}, name(), &out) == fuse.OK {
				dirs = append(dirs, out.NodeId)
				refs[out.NodeId]++
			}
		case 6: // unlink
			h := hdr(pick(dirs))
			raw.Unlink(reqChan(), &h, name())
		case 7: // rmdir
			h := hdr(pick(dirs))
			raw.Rmdir(reqChan(), &h, name())
		case 8: // rename, maybe over something
			raw.Rename(reqChan(), &fuse.RenameIn{InHeader: hdr(pick(dirs)), Newdir: pick(dirs)}, name(), name())
		case 9: // lookup
			h := hdr(pick(dirs))
			var out fuse.EntryOut
			if raw.Lookup(reqChan(), &h, name(), &out) == fuse.OK {
				refs[out.NodeId]++
			}
		case 10: // forget some; the kernel keeps a lookup of what it uses (a directory it names, an open file)
			for ino, n := range refs {
				pinned := slices.Contains(dirs, ino) || slices.ContainsFunc(opens, func(o open) bool { return o.node == ino }) ||
					slices.ContainsFunc(dirHandles, func(o dirOpen) bool { return o.node == ino })
				if pinned {
					n--
				}
				if n == 0 {
					continue
				}
				k := uint64(r.IntN(int(n)) + 1)
				raw.Forget(ino, k)
				if refs[ino] -= k; refs[ino] == 0 {
					delete(refs, ino)
				}
				break
			}
		case 11: // truncate or chmod
			if len(opens) == 0 {
				continue
			}
			o := opens[r.IntN(len(opens))]
			in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr(o.node), Valid: fuse.FATTR_SIZE | fuse.FATTR_MODE,
				Size: uint64(r.IntN(80 << 10)), Mode: 0o600}}
			var out fuse.AttrOut
			raw.SetAttr(reqChan(), in, &out)
		case 12: // xattr
			if len(opens) == 0 {
				continue
			}
			o := opens[r.IntN(len(opens))]
			raw.SetXAttr(reqChan(), &fuse.SetXAttrIn{InHeader: hdr(o.node), Size: 3}, "user.k", []byte("abc"))
		case 13: // link
			if len(opens) == 0 {
				continue
			}
			var out fuse.EntryOut
			if raw.Link(reqChan(), &fuse.LinkIn{InHeader: hdr(pick(dirs)), Oldnodeid: opens[r.IntN(len(opens))].node}, name(), &out) == fuse.OK {
				refs[out.NodeId]++
			}
		case 14: // a listing, read in part or whole, or its end
			if len(dirHandles) > 0 && r.IntN(2) == 0 {
				i := r.IntN(len(dirHandles))
				o := dirHandles[i]
				if r.IntN(3) == 0 {
					dirHandles = append(dirHandles[:i], dirHandles[i+1:]...)
					raw.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(o.node), Fh: o.fh})
					continue
				}
				list := fuse.NewDirEntryList(make([]byte, 200), o.off)
				if raw.ReadDir(reqChan(), &fuse.ReadIn{InHeader: hdr(o.node), Fh: o.fh, Offset: o.off, Size: 200}, list) == fuse.OK {
					got, _ := fuse.ParseDirEntries(list.Bytes())
					dirHandles[i].off += uint64(len(got))
				}
				continue
			}
			d := pick(dirs)
			var out fuse.OpenOut
			if raw.OpenDir(reqChan(), &fuse.OpenIn{InHeader: hdr(d)}, &out) == fuse.OK {
				dirHandles = append(dirHandles, dirOpen{d, out.Fh, 0})
			}
		case 15: // symlink or fifo
			h := hdr(pick(dirs))
			var out fuse.EntryOut
			st := raw.Symlink(reqChan(), &h, "target", name(), &out)
			if r.IntN(2) == 0 {
				st = raw.Mknod(reqChan(), &fuse.MknodIn{InHeader: h, Mode: syscall.S_IFIFO | 0o644}, name(), &out)
			}
			if st == fuse.OK {
				refs[out.NodeId]++
			}
		case 16: // O_TMPFILE, sometimes linked in later by case 13
			var out fuse.CreateOut
			in := &fuse.CreateIn{InHeader: hdr(pick(dirs)), Flags: syscall.O_RDWR, Mode: 0o600}
			if raw.Tmpfile(reqChan(), in, &out) == fuse.OK {
				opens = append(opens, open{out.NodeId, out.Fh})
				refs[out.NodeId]++
			}
		case 17: // open an existing file
			h := hdr(pick(dirs))
			var e fuse.EntryOut
			if raw.Lookup(reqChan(), &h, name(), &e) != fuse.OK {
				continue
			}
			refs[e.NodeId]++
			if e.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
				continue
			}
			var out fuse.OpenOut
			if raw.Open(reqChan(), &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: syscall.O_RDWR}, &out) == fuse.OK {
				opens = append(opens, open{e.NodeId, out.Fh})
			}
		}
		// Directories removed stay in dirs: requests on them fail as the kernel's would.
		if step == 700 {
			// The record rewritten as a snapshot, as when it grows large; entries go on after it.
			rt.rec.compacting.Store(true)
			rt.rec.compact()
			if rt.rec.gen != 2 || len(rt.store.fds[recordPrefix+"1"]) != 0 || len(rt.store.fds[recordPrefix+"2"]) != 1 {
				t.Fatalf("after the rewrite: generation %d, store holds %d of record.1 and %d of record.2", rt.rec.gen,
					len(rt.store.fds[recordPrefix+"1"]), len(rt.store.fds[recordPrefix+"2"]))
			}
		}
		if step%100 == 99 {
			recorded, _ := rt.modelRecorded(t)
			diffModels(t, fmt.Sprintf("after step %d", step+1), rt.modelNow(t), recorded)
		}
	}
	recorded, rec := rt.modelRecorded(t)
	diffModels(t, "at the end", rt.modelNow(t), recorded)
	ps := rt.fsys.pool.Stats()
	t.Logf("%d entries; pool: %d files, %d on disk, %d rollovers; %d handles open, %d listings", rec.Entries, ps.Files, ps.DiskFiles,
		ps.Rollovers, len(opens), len(dirHandles))
	if ps.Rollovers == 0 {
		t.Errorf("no file rolled over to disk: the test does not cover moves")
	}
	if rec.Entries == 0 || rec.Torn {
		t.Errorf("record: %d entries, torn %v", rec.Entries, rec.Torn)
	}
	// Every descriptor the record names is in the store, and the store holds no other than the live tree's
	// (besides the record itself).
	_, rec2 := rt.modelRecorded(t)
	named := map[string]bool{}
	for _, fs := range rec2.state.Pool.Files {
		if fs.FD != "" {
			named[fs.FD] = true
		}
		if fs.ChunkID != 0 {
			named[fmt.Sprintf("spool/arena/%d", fs.ChunkID)] = true
		}
	}
	_, liveFDs, err := rt.mount.ExportState()
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, d := range liveFDs {
		live[d.Name] = true
	}
	var missing, extra []string
	for n := range named {
		if _, ok := rt.store.fds[n]; !ok {
			missing = append(missing, n)
		}
	}
	for n := range rt.store.fds {
		if !live[n] && !isStoreDescriptor(n) {
			extra = append(extra, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("store: missing %v, not named by the record %v", missing, extra)
	}
}

// isStoreDescriptor tells the descriptors that are not files' bytes: the record and the disk store's own.
func isStoreDescriptor(name string) bool {
	for _, p := range []string{recordPrefix, "spool/store"} {
		if len(name) >= len(p) && name[:len(p)] == p {
			return true
		}
	}
	return false
}

// BenchmarkCrashRecord is the cost of the record to a request that changes the tree: a create, a small write
// and a release, with and without a record.
func BenchmarkCrashRecord(b *testing.B) {
	for _, recorded := range []bool{false, true} {
		b.Run(fmt.Sprintf("recorded=%v", recorded), func(b *testing.B) {
			rt := newRecordedTree(b, 1<<30)
			if !recorded {
				rt.fsys.crash.Store(nil)
				rt.raw.crash.Store(nil)
				rt.fsys.pool.SetWatcher(nil)
			}
			raw := rt.raw
			data := []byte("a small file's bytes")
			b.ResetTimer()
			for i := range b.N {
				in := &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID, Unique: uint64(i)}, Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}
				var out fuse.CreateOut
				if st := raw.Create(reqChan(), in, fmt.Sprintf("f%d", i), &out); st != fuse.OK {
					b.Fatal(st)
				}
				raw.Write(reqChan(), &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: out.Fh, Size: uint32(len(data))}, data)
				raw.Release(reqChan(), &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: out.Fh})
			}
		})
	}
}

// TestCrashRecordStoreFull: once the descriptor store holds as many descriptors as it takes, a file that
// needs one more (here: one that rolls over to disk) gets ENOSPC, every other file goes on, and the record
// still gives the tree.
func TestCrashRecordStoreFull(t *testing.T) {
	rt := newRecordedTree(t, 64<<20)
	rt.rec.mu.Lock()
	rt.rec.maxStored = len(rt.rec.stored) + 3 // two more, and one kept for the record
	rt.rec.mu.Unlock()
	data := make([]byte, 100<<10) // past max-size: a disk file, one descriptor each
	var got []fuse.Status
	for i := range 4 {
		in := &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}, Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}
		var out fuse.CreateOut
		if st := rt.raw.Create(reqChan(), in, fmt.Sprintf("big%d", i), &out); st != fuse.OK {
			t.Fatal(st)
		}
		_, st := rt.raw.Write(reqChan(), &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: out.Fh, Size: uint32(len(data))}, data)
		got = append(got, st)
		rt.raw.Release(reqChan(), &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: out.Fh})
	}
	want := []fuse.Status{fuse.OK, fuse.OK, fuse.Status(syscall.ENOSPC), fuse.Status(syscall.ENOSPC)}
	if !slices.Equal(got, want) {
		t.Errorf("writes that each need a descriptor, with room for two: %v, want %v", got, want)
	}
	recorded, _ := rt.modelRecorded(t)
	diffModels(t, "with the store full", rt.modelNow(t), recorded)
}
