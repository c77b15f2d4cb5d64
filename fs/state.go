package fs

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/spool"
)

// The tree as data, for a new daemon that takes the mount over (docs/takeover.md): every node the kernel or a
// handle can still reach, with its inode number, attributes, names, owner and lifetime state; the kernel's
// lookup counts; the open handles by id; the counters. Nodes refer to each other, to spool files, to accounts
// and to owners by index. It is written while the daemon is frozen (no request inside, the reaper and the
// owner watcher stopped), so it takes no lock but those the race detector would otherwise miss.

// treeState is the tree as data. Nodes[0] is the root.
type treeState struct {
	NextIno uint64      `json:"next_ino"`
	Nodes   []nodeState `json:"nodes"`
	// Refs are the kernel's lookup counts: node index and count.
	Refs    []refState    `json:"refs"`
	Handles []handleState `json:"handles"`
	// OwnerSets are the entries of each owner (--owner), with its quota account.
	OwnerSets []ownerSetState `json:"owner_sets,omitempty"`
	// Orphans are directories of gone owners that still hold others' entries.
	Orphans []int `json:"orphans,omitempty"`
	// MonoBase is CLOCK_MONOTONIC minus the Mono reading, in nanoseconds, when the state was taken: idle stamps
	// are Mono readings, which start at each process's start.
	MonoBase int64         `json:"mono_base"`
	Counters countersState `json:"counters"`
}

type refState struct {
	Node  int    `json:"node"`
	Count uint64 `json:"count"`
}

type timeState struct {
	Sec  int64  `json:"s"`
	Nsec uint32 `json:"ns"`
}

func timeStateOf(t timespec) timeState { return timeState{Sec: t.sec, Nsec: t.nsec} }

func (t timeState) timespec() timespec { return timespec{sec: t.Sec, nsec: t.Nsec} }

// nodeState is one node; the fields after Xattrs belong to one kind each.
type nodeState struct {
	Ino    uint64            `json:"ino"`
	Kind   string            `json:"kind"` // dir, file, symlink, special
	Mode   uint32            `json:"mode"`
	UID    uint32            `json:"uid"`
	GID    uint32            `json:"gid"`
	Rdev   uint32            `json:"rdev,omitempty"`
	Atime  timeState         `json:"atime"`
	Mtime  timeState         `json:"mtime"`
	Ctime  timeState         `json:"ctime"`
	Btime  timeState         `json:"btime"`
	Used   int64             `json:"used"`
	Flags  uint32            `json:"flags,omitempty"`
	Xattrs map[string][]byte `json:"xattrs,omitempty"`
	// Owner is an index into the owners (-1: none); Kept: user.tempfs.lifetime=keep took it from its owner.
	Owner int  `json:"owner"`
	Kept  bool `json:"kept,omitempty"`
	// Unpinned: go-fuse was told the node is no longer persistent (a removed directory, a leaf without names).
	Unpinned bool `json:"unpinned,omitempty"`

	// Directories.
	Children map[string]int `json:"children,omitempty"`
	Parent   int            `json:"parent"`
	Name     string         `json:"name,omitempty"`
	Removed  bool           `json:"removed,omitempty"`
	FromTmpl bool           `json:"from_tmpl,omitempty"`
	Created  []createdState `json:"created,omitempty"`

	// Leaves.
	Links []linkState `json:"links,omitempty"`

	// Files. Spool is an index into the pool's files (-1: the bytes were freed).
	Spool       int   `json:"spool"`
	Opens       int32 `json:"opens,omitempty"`
	CachedOpens int32 `json:"cached_opens,omitempty"`
	Ephemeral   bool  `json:"ephemeral,omitempty"`
	PtWritten   bool  `json:"pt_written,omitempty"`
	Forgotten   bool  `json:"forgotten,omitempty"`
	Linkable    bool  `json:"linkable,omitempty"`
	LookedUp    bool  `json:"looked_up,omitempty"`
	Opened      int64 `json:"opened,omitempty"`
	BackingSeen int64 `json:"backing_seen,omitempty"`

	// Symlinks.
	Target []byte `json:"target,omitempty"`
}

type linkState struct {
	Dir  int    `json:"dir"`
	Name string `json:"name"`
}

type createdState struct {
	TID  uint32 `json:"tid"`
	Name string `json:"name"`
	Seq  uint64 `json:"seq"`
}

// handleState is one open handle: a file's, or a directory's listing.
type handleState struct {
	ID   uint64 `json:"id"`
	Node int    `json:"node"`
	Dir  bool   `json:"dir,omitempty"`
	// Files.
	Flags        uint32 `json:"flags,omitempty"`
	Passthrough  bool   `json:"passthrough,omitempty"`
	KeepCache    bool   `json:"keep_cache,omitempty"`
	DirectIO     bool   `json:"direct_io,omitempty"`
	Synced       uint64 `json:"synced,omitempty"`
	BackingID    int32  `json:"backing_id,omitempty"`
	TemplateDir  int    `json:"template_dir"`
	TemplateName string `json:"template_name,omitempty"`
	// Directories.
	Listed  bool        `json:"listed,omitempty"`
	Entries []direntRow `json:"entries,omitempty"`
	Next    int         `json:"next,omitempty"`
}

type direntRow struct {
	Name string `json:"name"`
	Mode uint32 `json:"mode"`
	Ino  uint64 `json:"ino"`
}

type ownerSetState struct {
	Owner   int   `json:"owner"`
	Entries []int `json:"entries"`
	// Account is an index into the pool's accounts (-1: none made yet).
	Account int `json:"account"`
}

type countersState struct {
	Files, Dirs, Others, OpenHandles, TemplateEntries, Created, EphemeralFiles int64
	BytesWritten, PassthroughOpens, BytesRead                                  int64
	Removed                                                                    []int64
	CreatedSeq                                                                 uint64
	OwnersRemoved                                                              int64
	StartedUnixNano                                                            int64
}

// treeExport is what exportTree found beside the tree: the spool files, accounts and owners the state refers
// to by index.
type treeExport struct {
	state    treeState
	files    []*spool.File
	accounts []*spool.Account
	owners   []*owner.Owner
}

// numbering returns a function that numbers values in the order it first meets them, appending each new one
// to list; the zero value (nil) is -1.
func numbering[T comparable](list *[]T) func(T) int {
	index := map[T]int{}
	return func(v T) int {
		var zero T
		if v == zero {
			return -1
		}
		if i, ok := index[v]; ok {
			return i
		}
		index[v] = len(*list)
		*list = append(*list, v)
		return len(*list) - 1
	}
}

// monoBase is CLOCK_MONOTONIC minus the Mono reading now, in nanoseconds.
func monoBase() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() - monoNow()
}

// exportTree describes the tree. The daemon is frozen.
func (fsys *FS) exportTree() (*treeExport, error) {
	x := &treeExport{}
	index := map[node]int{}
	var order []node
	add := func(n node) int {
		if i, ok := index[n]; ok {
			return i
		}
		index[n] = len(order)
		order = append(order, n)
		return len(order) - 1
	}
	// Every node a name reaches, breadth first from the root; then those only the kernel or a handle holds.
	add(fsys.root)
	for i := 0; i < len(order); i++ {
		if d, ok := order[i].(*Dir); ok {
			names := make([]string, 0, len(d.children))
			for name := range d.children {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				add(d.children[name])
			}
		}
	}
	fsys.refs.each(func(n node, count uint64) {
		x.state.Refs = append(x.state.Refs, refState{Node: add(n), Count: count})
	})
	fsys.handles.mu.Lock()
	ids := make([]uint64, 0, len(fsys.handles.byID))
	for id := range fsys.handles.byID {
		ids = append(ids, id)
	}
	fsys.handles.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		hs, err := handleStateOf(id, fsys.handles.byID[id], add)
		if err != nil {
			return nil, err
		}
		x.state.Handles = append(x.state.Handles, hs)
	}
	// Parents of removed directories and directories of links are nodes too (a removed directory has none).
	for i := 0; i < len(order); i++ {
		switch n := order[i].(type) {
		case *Dir:
			if p := n.parent.Load(); p != nil {
				add(p)
			}
		case leafNode:
			for _, l := range n.leafPart().links {
				add(l.dir)
			}
		}
	}

	ownerOf := numbering(&x.owners)
	accountOf := numbering(&x.accounts)

	refs := stateRefs{
		node:  func(c node) int { return index[c] },
		owner: ownerOf,
		file: func(f *File) int {
			x.files = append(x.files, f.data)
			accountOf(f.data.Account())
			return len(x.files) - 1
		},
		children: true,
	}
	for _, n := range order {
		ns, err := nodeStateOf(n, refs, false)
		if err != nil {
			return nil, err
		}
		x.state.Nodes = append(x.state.Nodes, ns)
	}

	if own := fsys.owners; own != nil {
		for o, set := range own.entries {
			ss := ownerSetState{Owner: ownerOf(o), Account: accountOf(set.quota)}
			set.each(func(n node) {
				if i, ok := index[n]; ok {
					ss.Entries = append(ss.Entries, i)
				}
			})
			slices.Sort(ss.Entries)
			x.state.OwnerSets = append(x.state.OwnerSets, ss)
		}
		for d := range own.orphans {
			if i, ok := index[d]; ok {
				x.state.Orphans = append(x.state.Orphans, i)
			}
		}
		slices.Sort(x.state.Orphans)
	}

	x.state.Counters = fsys.countersNow()
	x.state.NextIno = fsys.nextIno.Load()
	x.state.MonoBase = monoBase()
	return x, nil
}

// stateRefs says how a nodeState refers to what is not in it: other nodes, its spool file, its owner. children:
// a directory's entries are listed.
type stateRefs struct {
	node     func(node) int
	file     func(*File) int
	owner    func(*owner.Owner) int
	children bool
}

// nodeStateOf describes n. locked: take n's locks (requests run meanwhile); otherwise the daemon is frozen.
func nodeStateOf(n node, refs stateRefs, locked bool) (nodeState, error) {
	a := n.base()
	if locked {
		a.mu.Lock()
	}
	ns := nodeState{
		Ino: n.EmbeddedInode().StableAttr().Ino, Mode: a.mode, UID: a.uid, GID: a.gid, Rdev: a.rdev,
		Atime: timeStateOf(a.atime), Mtime: timeStateOf(a.mtime), Ctime: timeStateOf(a.ctime), Btime: timeStateOf(a.btime),
		Used: a.used, Flags: a.flags, Xattrs: a.xattrs, Parent: -1, Spool: -1,
		Owner: refs.owner(n.ownerTag().owner), Kept: n.ownerTag().kept,
	}
	if locked {
		if len(a.xattrs) > 0 {
			ns.Xattrs = make(map[string][]byte, len(a.xattrs))
			for k, v := range a.xattrs {
				ns.Xattrs[k] = v
			}
		}
		a.mu.Unlock()
	}
	switch n := n.(type) {
	case *Dir:
		ns.Kind = "dir"
		if locked {
			n.entriesMu.RLock()
			defer n.entriesMu.RUnlock()
		}
		if refs.children {
			ns.Children = make(map[string]int, len(n.children))
			for name, c := range n.children {
				ns.Children[name] = refs.node(c)
			}
		}
		if p := n.parent.Load(); p != nil {
			ns.Parent = refs.node(p)
		}
		ns.Name, ns.Removed, ns.FromTmpl, ns.Unpinned = n.name, n.removed.Load(), n.fromTmpl, n.removed.Load()
		for tid, r := range n.created {
			ns.Created = append(ns.Created, createdState{TID: tid, Name: r.name, Seq: r.seq})
		}
	case leafNode:
		l := n.leafPart()
		if locked {
			l.stateMu.Lock()
			defer l.stateMu.Unlock()
		}
		for _, link := range l.links {
			ns.Links = append(ns.Links, linkState{Dir: refs.node(link.dir), Name: link.name})
		}
		switch n := n.(type) {
		case *File:
			ns.Kind = "file"
			if !n.freed.Load() {
				ns.Spool = refs.file(n)
			}
			ns.Opens, ns.CachedOpens, ns.Ephemeral, ns.PtWritten = n.opens, n.cachedOpens, n.ephemeral, n.ptWritten
			ns.Unpinned, ns.Forgotten, ns.Linkable, ns.LookedUp = n.unpinned, n.forgotten, n.linkable, n.lookedUp.Load()
			ns.Opened = n.opened.Load()
			if locked {
				n.attrs.mu.Lock()
			}
			ns.BackingSeen = n.backingSeen
			if locked {
				n.attrs.mu.Unlock()
			}
		case *Symlink:
			ns.Kind = "symlink"
			ns.Target = n.target
			ns.Unpinned = len(l.links) == 0
		case *Special:
			ns.Kind = "special"
			ns.Unpinned = len(l.links) == 0
		default:
			return nodeState{}, fmt.Errorf("node %d: unknown kind %T", ns.Ino, n)
		}
	}
	return ns, nil
}

// handleStateOf describes the open handle id; ref numbers the nodes it refers to.
func handleStateOf(id uint64, e handleEntry, ref func(node) int) (handleState, error) {
	hs := handleState{ID: id, TemplateDir: -1, BackingID: e.backingID}
	switch h := e.h.(type) {
	case *handle:
		hs.Node = ref(h.file)
		hs.Flags, hs.Passthrough, hs.KeepCache, hs.DirectIO = h.flags, h.passthrough, h.keepCache, h.directIO
		hs.Synced = uint64(h.synced)
		if td := h.templateDentry.Load(); td != nil {
			hs.TemplateDir, hs.TemplateName = ref(td.dir), td.name
		}
	case *dirStream:
		hs.Dir = true
		hs.Node = ref(h.dir)
		hs.Listed, hs.Next = h.listed, h.next
		for _, e := range h.entries {
			hs.Entries = append(hs.Entries, direntRow{Name: e.Name, Mode: e.Mode, Ino: e.Ino})
		}
	default:
		return handleState{}, fmt.Errorf("handle %d: unknown kind %T", id, e.h)
	}
	return hs, nil
}

// countersNow are the tree's counters.
func (fsys *FS) countersNow() countersState {
	c := &fsys.counts
	cs := countersState{
		Files: c.files.Load(), Dirs: c.dirs.Load(), Others: c.others.Load(), OpenHandles: c.openHandles.Load(),
		TemplateEntries: c.templateEntries.Load(), Created: c.created.Load(), EphemeralFiles: c.ephemeralFiles.Load(),
		BytesWritten: c.bytesWritten.Load(), PassthroughOpens: c.passthroughOpens.Load(),
		BytesRead: fsys.activity.bytesRead.Load(), CreatedSeq: fsys.createdSeq.Load(),
		StartedUnixNano: fsys.started.UnixNano(),
	}
	for i := range fsys.activity.removed {
		cs.Removed = append(cs.Removed, fsys.activity.removed[i].Load())
	}
	if fsys.owners != nil {
		cs.OwnersRemoved = fsys.owners.removed.Load()
	}
	return cs
}
