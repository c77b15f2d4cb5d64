package fs

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/spool"
)

// A new daemon taking a mount over rebuilds the tree from a treeState (importTree), then makes its go-fuse
// bridge hold the numbers the kernel holds (adopt): every node id with its lookup count, every handle id. The
// bridge registers numbers only while answering requests, so adopt sends it requests of its own before the
// server reads any from the kernel: a LOOKUP per reference the kernel holds, of a name no kernel can send
// (it holds "/"), which the root answers with the node of that inode number; an OPEN or OPENDIR per handle,
// in id order, answered with the handle carried over (go-fuse hands out the lowest free id, so ids not in use
// are taken by placeholders, released afterwards).

// adoption is the state of a take-over in progress: set while adopt runs, before the server serves.
type adoption struct {
	byName map[string]node // hidden lookup names to nodes
	next   openHandle      // what the next OPEN or OPENDIR answers
}

// adoptedBacking holds the passthrough backing ids the old daemon gave the kernel, by node, with the handles
// open with each. The kernel gives every passthrough open of an inode the backing file of the first, so while
// one is open a new passthrough open of that node must be answered with the same id, which go-fuse's new
// bridge does not know: tableFS answers it (attachAdopted). The new daemon unregisters an id after the last
// handle opened with it is released; later opens get one of go-fuse's again.
type adoptedBacking struct {
	mu     sync.Mutex
	server *fuse.Server
	users  map[int32]int
	byNode map[uint64]int32
}

// attrs are the node's attributes, its idle stamp moved onto this process's Mono clock by rebase.
func (ns *nodeState) attrs(rebase int64) attrs {
	return attrs{mode: ns.Mode, uid: ns.UID, gid: ns.GID, rdev: ns.Rdev, atime: ns.Atime.timespec(),
		mtime: ns.Mtime.timespec(), ctime: ns.Ctime.timespec(), btime: ns.Btime.timespec(),
		used: ns.Used + rebase, flags: ns.Flags, xattrs: ns.Xattrs}
}

func hiddenName(ino uint64) string { return "/" + strconv.FormatUint(ino, 10) }

// importTree rebuilds st in fsys, a new FS over the imported pool whose bridge exists (rawFS) and serves
// nothing yet. files, accounts and owners are what st refers to by index.
func (fsys *FS) importTree(st *treeState, files []*spool.File, accounts []*spool.Account, owners []*owner.Owner) ([]node, error) {
	if len(st.Nodes) == 0 || st.Nodes[0].Kind != "dir" {
		return nil, fmt.Errorf("the state has no root directory")
	}
	rebase := st.MonoBase - monoBase()
	ctx := context.Background()
	nodes := make([]node, len(st.Nodes))
	for i := range st.Nodes {
		ns := &st.Nodes[i]
		var n node
		switch ns.Kind {
		case "dir":
			if i == 0 {
				d := fsys.root
				d.attrs.mode, d.attrs.uid, d.attrs.gid = ns.Mode, ns.UID, ns.GID
				d.attrs.atime, d.attrs.mtime = ns.Atime.timespec(), ns.Mtime.timespec()
				d.attrs.ctime, d.attrs.btime = ns.Ctime.timespec(), ns.Btime.timespec()
				d.attrs.used, d.attrs.flags, d.attrs.xattrs = ns.Used+rebase, ns.Flags, ns.Xattrs
				nodes[0] = d
				continue
			}
			n = &Dir{attrs: ns.attrs(rebase), fs: fsys, fromTmpl: ns.FromTmpl, name: ns.Name}
		case "file":
			f := &File{leaf: leaf{attrs: ns.attrs(rebase)}, fs: fsys}
			if ns.Spool >= 0 {
				if ns.Spool >= len(files) {
					return nil, fmt.Errorf("node %d: spool file %d of %d", ns.Ino, ns.Spool, len(files))
				}
				f.data = files[ns.Spool]
				f.data.SetTag(f)
			} else {
				// The bytes were freed; the kernel may still stat the node until it forgets it.
				f.data = fsys.pool.NewFile()
				_ = f.data.Close()
				f.freed.Store(true)
			}
			f.opens, f.cachedOpens, f.ephemeral, f.ptWritten = ns.Opens, ns.CachedOpens, ns.Ephemeral, ns.PtWritten
			f.unpinned, f.forgotten, f.linkable = ns.Unpinned, ns.Forgotten, ns.Linkable
			f.lookedUp.Store(ns.LookedUp)
			if ns.Opened != 0 {
				f.opened.Store(ns.Opened + rebase)
			}
			f.backingSeen = ns.BackingSeen
			n = f
		case "symlink":
			n = &Symlink{leaf: leaf{attrs: ns.attrs(rebase)}, fs: fsys, target: ns.Target}
		case "special":
			n = &Special{leaf: leaf{attrs: ns.attrs(rebase)}, fs: fsys}
		default:
			return nil, fmt.Errorf("node %d: unknown kind %q", ns.Ino, ns.Kind)
		}
		if ns.Ino <= fuse.FUSE_ROOT_ID || ns.Ino > st.NextIno {
			return nil, fmt.Errorf("node of kind %s: inode number %d outside 2..%d", ns.Kind, ns.Ino, st.NextIno)
		}
		fsys.root.NewPersistentInode(ctx, n, fusefs.StableAttr{Mode: ns.Mode & syscall.S_IFMT, Ino: ns.Ino})
		nodes[i] = n
	}
	at := func(i int, what string) (node, error) {
		if i < 0 || i >= len(nodes) {
			return nil, fmt.Errorf("%s: node %d of %d", what, i, len(nodes))
		}
		return nodes[i], nil
	}
	dirAt := func(i int, what string) (*Dir, error) {
		n, err := at(i, what)
		if err != nil {
			return nil, err
		}
		d, ok := n.(*Dir)
		if !ok {
			return nil, fmt.Errorf("%s: node %d is not a directory", what, i)
		}
		return d, nil
	}
	for i := range st.Nodes {
		ns := &st.Nodes[i]
		switch n := nodes[i].(type) {
		case *Dir:
			for name, c := range ns.Children {
				child, err := at(c, "entry "+name)
				if err != nil {
					return nil, err
				}
				n.addChildLocked(name, child)
				if _, ok := child.(*Dir); ok {
					n.subdirs++
				}
			}
			if ns.Parent >= 0 {
				p, err := dirAt(ns.Parent, "parent")
				if err != nil {
					return nil, err
				}
				n.parent.Store(p)
			}
			n.removed.Store(ns.Removed)
			for _, c := range ns.Created {
				if n.created == nil {
					n.created = make(map[uint32]createdRecord)
				}
				n.created[c.TID] = createdRecord{name: c.Name, seq: c.Seq}
			}
		case leafNode:
			l := n.leafPart()
			links := make([]link, 0, len(ns.Links))
			for _, ln := range ns.Links {
				d, err := dirAt(ln.Dir, "link "+ln.Name)
				if err != nil {
					return nil, err
				}
				links = append(links, link{dir: d, name: ln.Name})
			}
			l.setLinksLocked(links)
		}
		if ns.Owner >= 0 {
			if ns.Owner >= len(owners) {
				return nil, fmt.Errorf("node %d: owner %d of %d", ns.Ino, ns.Owner, len(owners))
			}
			nodes[i].ownerTag().owner = owners[ns.Owner]
		}
		nodes[i].ownerTag().kept = ns.Kept
	}
	if len(st.OwnerSets) > 0 || len(st.Orphans) > 0 {
		own := fsys.owners
		if own == nil {
			return nil, fmt.Errorf("the state has owners, the new daemon watches none")
		}
		for _, ss := range st.OwnerSets {
			if ss.Owner < 0 || ss.Owner >= len(owners) {
				return nil, fmt.Errorf("owner set: owner %d of %d", ss.Owner, len(owners))
			}
			set := own.accountLocked(owners[ss.Owner])
			if ss.Account >= 0 {
				if ss.Account >= len(accounts) {
					return nil, fmt.Errorf("owner set: account %d of %d", ss.Account, len(accounts))
				}
				set.quota = accounts[ss.Account]
			}
			for _, e := range ss.Entries {
				n, err := at(e, "owned entry")
				if err != nil {
					return nil, err
				}
				set.add(n)
			}
			set.pruneAt = max(minPruneAt, 2*set.size())
		}
		for _, o := range st.Orphans {
			d, err := dirAt(o, "orphan")
			if err != nil {
				return nil, err
			}
			own.orphans[d] = struct{}{}
		}
		own.removed.Store(st.Counters.OwnersRemoved)
	}
	for _, r := range st.Refs {
		n, err := at(r.Node, "kernel reference")
		if err != nil {
			return nil, err
		}
		fsys.refs.set(n, r.Count)
	}
	c := &st.Counters
	fsys.counts.files.Store(c.Files)
	fsys.counts.dirs.Store(c.Dirs)
	fsys.counts.others.Store(c.Others)
	fsys.counts.openHandles.Store(c.OpenHandles)
	fsys.counts.templateEntries.Store(c.TemplateEntries)
	fsys.counts.created.Store(c.Created)
	fsys.counts.ephemeralFiles.Store(c.EphemeralFiles)
	fsys.counts.bytesWritten.Store(c.BytesWritten)
	fsys.counts.passthroughOpens.Store(c.PassthroughOpens)
	fsys.activity.bytesRead.Store(c.BytesRead)
	for i := range min(len(c.Removed), len(fsys.activity.removed)) {
		fsys.activity.removed[i].Store(c.Removed[i])
	}
	fsys.createdSeq.Store(c.CreatedSeq)
	fsys.started = time.Unix(0, c.StartedUnixNano) // uptime is the mount's
	fsys.nextIno.Store(st.NextIno)
	return nodes, nil
}

// importHandles makes the handles of st, by id, over the imported nodes.
func (fsys *FS) importHandles(st *treeState, nodes []node) (map[uint64]handleEntry, error) {
	handles := make(map[uint64]handleEntry, len(st.Handles))
	for _, hs := range st.Handles {
		if hs.ID == 0 || hs.Node < 0 || hs.Node >= len(nodes) {
			return nil, fmt.Errorf("handle %d: node %d of %d", hs.ID, hs.Node, len(nodes))
		}
		if _, dup := handles[hs.ID]; dup {
			return nil, fmt.Errorf("handle %d twice", hs.ID)
		}
		if hs.Dir {
			d, ok := nodes[hs.Node].(*Dir)
			if !ok {
				return nil, fmt.Errorf("directory handle %d: node %d is not a directory", hs.ID, hs.Node)
			}
			s := &dirStream{dir: d, listed: hs.Listed, next: hs.Next}
			for _, e := range hs.Entries {
				s.entries = append(s.entries, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: e.Ino})
			}
			if s.next > len(s.entries) {
				return nil, fmt.Errorf("directory handle %d: position %d of %d", hs.ID, s.next, len(s.entries))
			}
			handles[hs.ID] = handleEntry{h: s}
			continue
		}
		f, ok := nodes[hs.Node].(*File)
		if !ok {
			return nil, fmt.Errorf("file handle %d: node %d is not a file", hs.ID, hs.Node)
		}
		h := &handle{file: f, flags: hs.Flags, passthrough: hs.Passthrough, keepCache: hs.KeepCache,
			directIO: hs.DirectIO, synced: spool.WritebackMark(hs.Synced)}
		if h.passthrough && h.flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			f.ptWriters.Add(1)
		}
		if hs.TemplateDir >= 0 {
			if hs.TemplateDir >= len(nodes) {
				return nil, fmt.Errorf("file handle %d: template directory %d of %d", hs.ID, hs.TemplateDir, len(nodes))
			}
			d, ok := nodes[hs.TemplateDir].(*Dir)
			if !ok {
				return nil, fmt.Errorf("file handle %d: template directory is not a directory", hs.ID)
			}
			h.templateDentry.Store(&templateDentry{dir: d, name: hs.TemplateName})
		}
		handles[hs.ID] = handleEntry{h: h, backingID: hs.BackingID}
	}
	return handles, nil
}

// adopt makes bridge (fsys's go-fuse bridge, its server made but not serving) hold every number the kernel
// holds: refs as lookups, handles at their ids. It runs before the server reads its first request.
func (fsys *FS) adopt(bridge fuse.RawFileSystem, server *fuse.Server, handles map[uint64]handleEntry) error {
	a := &adoption{byName: map[string]node{}}
	var refs []kernelRef
	fsys.refs.each(func(n node, count uint64) { refs = append(refs, kernelRef{n: n, count: count}) })
	for _, r := range refs {
		a.byName[hiddenName(r.n.EmbeddedInode().StableAttr().Ino)] = r.n
	}
	fsys.adopting = a
	defer func() { fsys.adopting = nil }()

	root := &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}
	for _, r := range refs {
		ino := r.n.EmbeddedInode().StableAttr().Ino
		name := hiddenName(ino)
		for range r.count {
			var out fuse.EntryOut
			if st := bridge.Lookup(nil, root, name, &out); !st.Ok() || out.NodeId != ino {
				return fmt.Errorf("registering node %d: %v, node id %d", ino, st, out.NodeId)
			}
		}
		fsys.root.RmChild(name) // the name was go-fuse's only: tempfs's root never had it
	}

	var last uint64
	for id := range handles {
		last = max(last, id)
	}
	var placeholders []uint64
	backing := &adoptedBacking{server: server, users: map[int32]int{}, byNode: map[uint64]int32{}}
	for id := uint64(1); id <= last; id++ {
		e, ok := handles[id]
		var out fuse.OpenOut
		var st fuse.Status
		switch h := e.h.(type) {
		case nil:
			a.next = &dirStream{dir: fsys.root}
			st = bridge.OpenDir(nil, &fuse.OpenIn{InHeader: *root}, &out)
			placeholders = append(placeholders, id)
		case *dirStream:
			a.next = h
			// The kernel knows the root as FUSE_ROOT_ID; go-fuse's root Inode carries no number of its own.
			in := &fuse.OpenIn{InHeader: *root}
			if h.dir != fsys.root {
				in.NodeId = h.dir.StableAttr().Ino
			}
			st = bridge.OpenDir(nil, in, &out)
		case *handle:
			a.next = h
			in := &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: h.file.StableAttr().Ino}, Flags: h.flags & syscall.O_ACCMODE}
			st = bridge.Open(nil, in, &out)
			if e.backingID != 0 {
				backing.users[e.backingID]++
				backing.byNode[h.file.StableAttr().Ino] = e.backingID
			}
		}
		if !st.Ok() || out.Fh != id {
			return fmt.Errorf("registering handle %d: %v, handle id %d", id, st, out.Fh)
		}
		if ok {
			fsys.handles.put(id, e)
		}
	}
	for _, id := range placeholders {
		bridge.ReleaseDir(&fuse.ReleaseIn{InHeader: *root, Fh: id})
	}
	if len(backing.users) > 0 {
		fsys.adoptedBacking = backing
	}
	// Nodes go-fuse must drop once the kernel forgets them, as their last name or handle went before.
	fsys.refs.each(func(n node, _ uint64) {
		switch n := n.(type) {
		case *Dir:
			if n.removed.Load() {
				n.ForgetPersistent()
			}
		case *File:
			if n.unpinned {
				n.ForgetPersistent()
			}
		case leafNode:
			if n.leafPart().nlink.Load() == 0 {
				n.EmbeddedInode().ForgetPersistent()
			}
		}
	})
	return nil
}

// adoptedBackingOf is the old daemon's backing id still in use for node ino (0: none).
func (fsys *FS) adoptedBackingOf(ino uint64) int32 {
	b := fsys.adoptedBacking
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byNode[ino]
}

// attachAdopted answers a passthrough open of a node whose kernel inode still has the old daemon's backing
// file with that backing id (go-fuse registered none: handle.PassthroughFd said no). It reports the id, 0 when
// the last handle with it went meanwhile (the handle is then served by the daemon).
func (fsys *FS) attachAdopted(ino uint64, out *fuse.OpenOut) int32 {
	b := fsys.adoptedBacking
	if b == nil {
		return 0
	}
	b.mu.Lock()
	id := b.byNode[ino]
	if id != 0 {
		b.users[id]++
	}
	b.mu.Unlock()
	if id != 0 {
		out.BackingID = id
		out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
		out.OpenFlags &^= fuse.FOPEN_KEEP_CACHE
	}
	return id
}

// releasedAdopted unregisters a backing id of the old daemon once the last handle the kernel opened with it
// is released.
func (fsys *FS) releasedAdopted(e handleEntry) {
	b := fsys.adoptedBacking
	if b == nil || e.backingID == 0 {
		return
	}
	b.mu.Lock()
	if _, ok := b.users[e.backingID]; !ok {
		b.mu.Unlock()
		return // the id of a handle this daemon opened: go-fuse unregisters it
	}
	b.users[e.backingID]--
	last := b.users[e.backingID] <= 0
	if last {
		delete(b.users, e.backingID)
		for ino, id := range b.byNode {
			if id == e.backingID {
				delete(b.byNode, ino)
			}
		}
	}
	b.mu.Unlock()
	if last && b.server != nil {
		if errno := b.server.UnregisterBackingFd(e.backingID); errno != 0 {
			fsys.log.Warn("unregistering a passthrough backing id of the previous daemon", "id", e.backingID, "errno", errno)
		}
	}
}
