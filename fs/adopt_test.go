package fs

import (
	"encoding/json"
	"reflect"
	"slices"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// reqChan is a request's cancel channel: go-fuse gives each request in flight its own, and tempfs pairs the
// handle a request made with the id go-fuse answered by it (kernelrefs.go).
func reqChan() <-chan struct{} { return make(chan struct{}) }

// takeOverInProcess exports b's tree, passes the state through JSON, and rebuilds it in a new FS over the
// same pool with a new go-fuse bridge, as a new daemon would.
func takeOverInProcess(t *testing.T, b *bridge) (*bridge, *treeState) {
	t.Helper()
	x, err := b.fsys.exportTree()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(x.state)
	if err != nil {
		t.Fatal(err)
	}
	var st treeState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	fsys := New(b.fsys.opts)
	nodeFS := fsys.rawFS(&fusefs.Options{ServerCallbacks: quietServer{}, NullPermissions: true})
	nodes, err := fsys.importTree(&st, x.files, x.accounts, nil)
	if err != nil {
		t.Fatal(err)
	}
	handles, err := fsys.importHandles(&st, nodes)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.adopt(nodeFS.(tableFS).RawFileSystem, nil, handles); err != nil {
		t.Fatal(err)
	}
	return &bridge{fsys: fsys, raw: nodeFS, pid: b.pid}, &x.state
}

// withoutClocks is a state with what moves by itself (clock stamps) left out.
func withoutClocks(st treeState) treeState {
	st.MonoBase = 0
	nodes := slices.Clone(st.Nodes)
	for i := range nodes {
		nodes[i].Used, nodes[i].Opened = 0, 0
	}
	st.Nodes = nodes
	slices.SortFunc(st.Refs, func(a, b refState) int { return a.Node - b.Node })
	st.Counters.StartedUnixNano = 0
	return st
}

func TestTakeOverKeepsTheTree(t *testing.T) {
	b := newBridge(t)
	root := uint64(fuse.FUSE_ROOT_ID)
	open := func(node uint64, flags uint32) uint64 {
		var out fuse.OpenOut
		if st := b.raw.Open(reqChan(), &fuse.OpenIn{InHeader: b.hdr(node, b.pid), Flags: flags}, &out); st != fuse.OK {
			t.Fatalf("open %d: %v", node, st)
		}
		return out.Fh
	}
	create := func(dir uint64, name string) fuse.CreateOut {
		in := &fuse.CreateIn{InHeader: b.hdr(dir, b.pid), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o640}
		var out fuse.CreateOut
		if st := b.raw.Create(reqChan(), in, name, &out); st != fuse.OK {
			t.Fatalf("create %q: %v", name, st)
		}
		return out
	}
	write := func(node, fh uint64, data string) {
		in := &fuse.WriteIn{InHeader: b.hdr(node, b.pid), Fh: fh, Size: uint32(len(data))}
		if n, st := b.raw.Write(reqChan(), in, []byte(data)); st != fuse.OK || int(n) != len(data) {
			t.Fatalf("write: %d, %v", n, st)
		}
	}

	held := create(root, "held")
	write(held.NodeId, held.Fh, "bytes of a held file")
	dir := b.mustMkdir(t, root, "d")
	for _, name := range []string{"a", "b", "c", "e", "f"} {
		out := create(dir, name)
		b.release(out.NodeId, out.Fh)
	}
	tmpl := create(root, "jobXXXXXX")
	write(tmpl.NodeId, tmpl.Fh, "template")
	gone := create(root, "gone")
	write(gone.NodeId, gone.Fh, "unlinked but open")
	if st := b.unlink(root, "gone"); st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.link(held.NodeId, dir, "held-link", b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	if _, st := b.mknod(root, "fifo", syscall.S_IFIFO, b.pid); st != fuse.OK {
		t.Fatal(st)
	}
	for range 2 { // two more references to the directory
		if _, st := b.lookup(root, "d"); st != fuse.OK {
			t.Fatal(st)
		}
	}
	reader := open(held.NodeId, syscall.O_RDONLY)
	// A listing in progress: three entries read (".", "..", "a").
	var dirOpen fuse.OpenOut
	if st := b.raw.OpenDir(reqChan(), &fuse.OpenIn{InHeader: b.hdr(dir, b.pid)}, &dirOpen); st != fuse.OK {
		t.Fatal(st)
	}
	first := fuse.NewDirEntryList(make([]byte, 3*32), 0)
	if st := b.raw.ReadDir(reqChan(), &fuse.ReadIn{InHeader: b.hdr(dir, b.pid), Fh: dirOpen.Fh, Size: 3 * 32}, first); st != fuse.OK {
		t.Fatal(st)
	}
	got, _ := fuse.ParseDirEntries(first.Bytes())
	var listed []string
	for _, e := range got {
		listed = append(listed, e.Name)
	}
	if len(got) == 0 || len(got) > 4 {
		t.Fatalf("first READDIR listed %v", listed)
	}
	// A listing of the root held open: the kernel names the root FUSE_ROOT_ID, its Inode has no number.
	var rootOpen fuse.OpenOut
	if st := b.raw.OpenDir(reqChan(), &fuse.OpenIn{InHeader: b.hdr(root, b.pid)}, &rootOpen); st != fuse.OK {
		t.Fatal(st)
	}
	// A handle id freed in the middle, which go-fuse hands out next.
	spare := open(held.NodeId, syscall.O_RDONLY)
	b.release(held.NodeId, spare)

	nb, before := takeOverInProcess(t, b)

	// The new daemon's state is the old one's.
	x, err := nb.fsys.exportTree()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := withoutClocks(*before), withoutClocks(x.state); !reflect.DeepEqual(a, b) {
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		t.Fatalf("state changed in the take-over:\nbefore %s\nafter  %s", ja, jb)
	}

	// The kernel's numbers mean the same: node ids, handle ids, a listing's position.
	read := func(node, fh uint64) string {
		buf := make([]byte, 100)
		res, st := nb.raw.Read(reqChan(), &fuse.ReadIn{InHeader: nb.hdr(node, nb.pid), Fh: fh, Size: 100}, buf)
		if st != fuse.OK {
			t.Fatalf("read %d/%d: %v", node, fh, st)
		}
		data, _ := res.Bytes(buf)
		defer res.Done() // the extent holds the file's lock until then, as until go-fuse wrote the reply
		return string(data)
	}
	if got := read(held.NodeId, reader); got != "bytes of a held file" {
		t.Errorf("read through the carried handle: %q", got)
	}
	if got := read(gone.NodeId, gone.Fh); got != "unlinked but open" {
		t.Errorf("read of the unlinked open file: %q", got)
	}
	if a, st := nb.getattr(dir); st != fuse.OK || a.Ino != dir || a.Nlink != 2 {
		t.Errorf("getattr of the directory by its id: %v ino %d nlink %d", st, a.Ino, a.Nlink)
	}
	off := uint64(len(got))
	rest := fuse.NewDirEntryList(make([]byte, 4096), off)
	if st := nb.raw.ReadDir(reqChan(), &fuse.ReadIn{InHeader: nb.hdr(dir, nb.pid), Fh: dirOpen.Fh, Offset: off, Size: 4096}, rest); st != fuse.OK {
		t.Fatal(st)
	}
	more, _ := fuse.ParseDirEntries(rest.Bytes())
	for _, e := range more {
		listed = append(listed, e.Name)
	}
	if want := []string{".", "..", "a", "b", "c", "e", "f", "held-link"}; !slices.Equal(listed, want) {
		t.Errorf("listing across the take-over: %v, want %v", listed, want)
	}
	// The next handle takes the id that was free, as go-fuse would have given it.
	var again fuse.OpenOut
	if st := nb.raw.Open(reqChan(), &fuse.OpenIn{InHeader: nb.hdr(held.NodeId, nb.pid), Flags: syscall.O_RDONLY}, &again); st != fuse.OK || again.Fh != spare {
		t.Errorf("next handle id %d (%v), want the free %d", again.Fh, st, spare)
	}
	nb.release(held.NodeId, again.Fh)

	// Lifetimes go on: the template file goes at its last close, the unlinked one's bytes at the FORGET after
	// its last close.
	var generated string
	for _, e := range x.state.Nodes {
		if e.Ino == tmpl.NodeId && len(e.Links) == 1 {
			generated = e.Links[0].Name
		}
	}
	if _, st := nb.lookup(root, generated); generated == "" || st != fuse.OK {
		t.Fatalf("template file %q before its last close: %v", generated, st)
	}
	nb.release(tmpl.NodeId, tmpl.Fh)
	if _, st := nb.lookup(root, generated); st != fuse.ENOENT {
		t.Errorf("template file %s after its last close: %v", generated, st)
	}
	before0 := nb.fsys.pool.Stats()
	nb.release(gone.NodeId, gone.Fh)
	nb.raw.Forget(gone.NodeId, 1)
	if after := nb.fsys.pool.Stats(); after.MemoryFiles != before0.MemoryFiles-1 {
		t.Errorf("memory files after the unlinked file's release and forget: %d, want %d", after.MemoryFiles, before0.MemoryFiles-1)
	}
	// Every reference the kernel holds can be given back without go-fuse panicking on an unknown id.
	var left []refState
	nb.fsys.refs.each(func(n node, count uint64) {
		left = append(left, refState{Node: int(n.EmbeddedInode().StableAttr().Ino), Count: count})
	})
	if len(left) != len(x.state.Refs)-1 {
		t.Errorf("%d nodes known after one was forgotten, want %d", len(left), len(x.state.Refs)-1)
	}
	for _, r := range left {
		nb.raw.Forget(uint64(r.Node), r.Count)
	}
}
