package fs

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
)

// The namespace model test: random sequences of namespace requests, sent through go-fuse's raw bridge (no
// kernel, so no directory lock serializes them), are applied side by side to a plain model of names, link
// counts and open handles. After each step, or each batch of requests sent at once from several goroutines,
// the tree must look like the model after the same requests in some order (every request linearizable):
// same answers, same names in every directory (READDIR, and LOOKUP of every name it might hold), same link
// counts, directory sizes and link counts, and the same counts in Stats.
//
// Names come from pools chosen so that every request the test sends is one the kernel could send: plain
// file names (primary names, which create, mknod and rename use), link names (only link and unlink use them,
// so that no rename ever has two names of one node as source and target, which the kernel answers itself),
// and directory names in the root only (so that no rename can move a directory below itself).

var nsSeed = flag.Uint64("fs.seed", 0, "seed for the namespace model tests (0: from the clock, logged)")

// Seeds that once failed, run every time before a new one. Those of the concurrent test failed on a
// namespace kept in two places (go-fuse's tree, updated after each request returns, and tempfs's links): two
// requests on one name both succeeded, or a whiteout was lost. A concurrent failure depends on the
// interleaving too, so a seed reproduces it often, not always; TestNamespaceConcurrentConflicts repeats each
// kind of conflict found.
var (
	nsSequentialSeeds = []uint64{}
	nsConcurrentSeeds = []uint64{1796668801236116690, 1796668823673470926, 1796668826375353239, 1796668819474784502, 1796669803625767504}
)

var (
	nsFileNames = []string{"f0", "f1", "f2", "f3"}
	nsLinkNames = []string{"l0", "l1", "l2"}
	nsDirNames  = []string{"d0", "d1", "d2"}
)

const (
	nsFileTemplate = "tmpXXXXXX"
	nsDirTemplate  = "dirXXXXXX"
)

type nsKind uint8

const (
	nsCreate nsKind = iota
	nsCreateTemplate
	nsMkdir
	nsMkdirTemplate
	nsMknod
	nsTmpfile
	nsLink
	nsUnlink
	nsRmdir
	nsRename
	nsRelease
	// Solo steps: never in a batch with other requests.
	nsReap
	nsOwnerGone
)

func (k nsKind) String() string {
	return [...]string{"create", "create-template", "mkdir", "mkdir-template", "mknod", "tmpfile", "link", "unlink",
		"rmdir", "rename", "release", "reap", "owner-gone"}[k]
}

// mNode is a node of the model: a directory, a regular file or a special file (FIFO, whiteout).
type mNode struct {
	nodeID, ino uint64 // ino 0: a whiteout not yet seen in the tree
	mode        uint32 // S_IFDIR, S_IFREG, S_IFIFO, S_IFCHR
	kids        map[string]int
	removed     bool // a directory after rmdir
	links       int
	opens       int
	ephemeral   bool // made from a template: its generated name goes at the last close
	genDir      int
	genName     string
	linkable    bool // O_TMPFILE without O_EXCL, not linked yet
	owner       int  // index of the owner process; -1: the test process itself
	gone        bool // a leaf without names or handles
}

func (n *mNode) isDir() bool { return n.mode == syscall.S_IFDIR }

// nsModel is the namespace as it must be. Nodes and handles are keyed by the sequence number of the request
// that made them; the root is 0.
type nsModel struct {
	nodes   map[int]*mNode
	handles map[int]int // open handle: node
	fhs     map[int]uint64
	created int // template entries made
}

func newNSModel() *nsModel {
	root := &mNode{nodeID: fuse.FUSE_ROOT_ID, mode: syscall.S_IFDIR, kids: map[string]int{}, owner: -1}
	return &nsModel{nodes: map[int]*mNode{0: root}, handles: map[int]int{}, fhs: map[int]uint64{}}
}

func (m *nsModel) clone() *nsModel {
	c := &nsModel{nodes: make(map[int]*mNode, len(m.nodes)), handles: maps.Clone(m.handles), fhs: m.fhs, created: m.created}
	for id, n := range m.nodes {
		cn := *n
		if n.kids != nil {
			cn.kids = maps.Clone(n.kids)
		}
		c.nodes[id] = &cn
	}
	return c
}

// nsOp is one request with its answer.
type nsOp struct {
	seq         int
	kind        nsKind
	owner       int
	dir, dir2   int // model ids of the directories
	name, name2 string
	flags       uint32
	target      int // link: the node; release: the handle
	// The answer.
	st     fuse.Status
	nodeID uint64
	ino    uint64
	fh     uint64
	reaped int
}

func (op *nsOp) String() string {
	switch op.kind {
	case nsRename:
		return fmt.Sprintf("#%d rename(%d/%s -> %d/%s, flags %#x) = %v", op.seq, op.dir, op.name, op.dir2, op.name2, op.flags, op.st)
	case nsLink:
		return fmt.Sprintf("#%d link(node %d -> %d/%s) = %v", op.seq, op.target, op.dir, op.name, op.st)
	case nsRelease:
		return fmt.Sprintf("#%d release(handle %d) = %v", op.seq, op.target, op.st)
	case nsReap:
		return fmt.Sprintf("#%d reap = %d", op.seq, op.reaped)
	case nsOwnerGone:
		return fmt.Sprintf("#%d owner %d gone", op.seq, op.owner)
	case nsTmpfile:
		return fmt.Sprintf("#%d tmpfile(%d, flags %#x) = %v", op.seq, op.dir, op.flags, op.st)
	}
	return fmt.Sprintf("#%d %v(%d/%s, flags %#x, owner %d) = %v", op.seq, op.kind, op.dir, op.name, op.flags, op.owner, op.st)
}

var (
	errENOENT    = fuse.Status(syscall.ENOENT)
	errEEXIST    = fuse.Status(syscall.EEXIST)
	errEISDIR    = fuse.Status(syscall.EISDIR)
	errENOTDIR   = fuse.Status(syscall.ENOTDIR)
	errENOTEMPTY = fuse.Status(syscall.ENOTEMPTY)
)

// dropName removes (dir, name) of leaf id, as unlink does: a generated name loses its removal at last close.
func (m *nsModel) dropName(dir int, name string, id int) {
	n := m.nodes[id]
	if n.ephemeral && n.genDir == dir && n.genName == name {
		n.ephemeral = false
	}
	delete(m.nodes[dir].kids, name)
	n.links--
	m.settle(n)
}

func (m *nsModel) settle(n *mNode) {
	if !n.isDir() && n.links == 0 && n.opens == 0 {
		n.gone = true
	}
}

// moveName moves node id from (d, name) to (nd, newName), whatever was there having been removed.
func (m *nsModel) moveName(d int, name string, nd int, newName string, id int) {
	n := m.nodes[id]
	if n.ephemeral && n.genDir == d && n.genName == name {
		n.ephemeral = false // a rename persists a file made from a template
	}
	delete(m.nodes[d].kids, name)
	m.nodes[nd].kids[newName] = id
}

func (m *nsModel) addNode(op *nsOp, dir int, name string, n *mNode) {
	n.nodeID, n.ino, n.owner = op.nodeID, op.ino, op.owner
	m.nodes[op.seq] = n
	if name != "" {
		m.nodes[dir].kids[name] = op.seq
	}
}

// placeholder is the model's key for a generated name until the tree shows it.
func placeholder(seq int) string { return fmt.Sprintf("?%d", seq) }

// apply applies op to the model and returns the answer the filesystem must give. For a request that makes a
// node, the node's ids come from the answer (op.nodeID, op.ino).
func (m *nsModel) apply(op *nsOp) fuse.Status {
	d := m.nodes[op.dir]
	switch op.kind {
	case nsCreate, nsMknod:
		if d.removed {
			return errENOENT
		}
		if _, ok := d.kids[op.name]; ok {
			return errEEXIST
		}
		n := &mNode{mode: syscall.S_IFREG, links: 1}
		if op.kind == nsCreate {
			n.opens = 1
			m.handles[op.seq] = op.seq
		} else {
			n.mode = op.flags
		}
		m.addNode(op, op.dir, op.name, n)
	case nsCreateTemplate:
		if d.removed {
			return errENOENT
		}
		name := placeholder(op.seq)
		m.addNode(op, op.dir, name, &mNode{mode: syscall.S_IFREG, links: 1, opens: 1, ephemeral: true, genDir: op.dir, genName: name})
		m.handles[op.seq] = op.seq
		m.created++
	case nsMkdir:
		if d.removed {
			return errENOENT
		}
		if _, ok := d.kids[op.name]; ok {
			return errEEXIST
		}
		m.addNode(op, op.dir, op.name, &mNode{mode: syscall.S_IFDIR, kids: map[string]int{}})
	case nsMkdirTemplate:
		if d.removed {
			return errENOENT
		}
		m.addNode(op, op.dir, placeholder(op.seq), &mNode{mode: syscall.S_IFDIR, kids: map[string]int{}})
		m.created++
	case nsTmpfile:
		if d.removed {
			return errENOENT
		}
		m.addNode(op, op.dir, "", &mNode{mode: syscall.S_IFREG, opens: 1, linkable: op.flags&syscall.O_EXCL == 0})
		m.handles[op.seq] = op.seq
	case nsLink:
		n := m.nodes[op.target]
		if d.removed {
			return errENOENT
		}
		if _, ok := d.kids[op.name]; ok {
			if n.links == 0 && (!n.linkable || n.gone) && op.st == errENOENT {
				// Both answers apply; which the filesystem checks first is its own (the kernel checks the
				// name before it sends LINK).
				return errENOENT
			}
			return errEEXIST
		}
		if n.links == 0 {
			if !n.linkable || n.gone {
				return errENOENT
			}
			n.linkable = false
			n.owner = op.owner // an O_TMPFILE file belongs to whoever gives it its first name
		}
		n.links++
		d.kids[op.name] = op.target
	case nsUnlink:
		id, ok := d.kids[op.name]
		if !ok {
			return errENOENT
		}
		if m.nodes[id].isDir() {
			return errEISDIR
		}
		m.dropName(op.dir, op.name, id)
	case nsRmdir:
		id, ok := d.kids[op.name]
		if !ok {
			return errENOENT
		}
		sub := m.nodes[id]
		switch {
		case !sub.isDir():
			return errENOTDIR
		case len(sub.kids) > 0:
			return errENOTEMPTY
		}
		delete(d.kids, op.name)
		sub.removed = true
	case nsRename:
		return m.rename(op)
	case nsRelease:
		id := m.handles[op.target]
		delete(m.handles, op.target)
		n := m.nodes[id]
		n.opens--
		if n.opens == 0 && n.ephemeral {
			m.dropName(n.genDir, n.genName, id)
		}
		m.settle(n)
	}
	return fuse.OK
}

func (m *nsModel) rename(op *nsOp) fuse.Status {
	d, nd := m.nodes[op.dir], m.nodes[op.dir2]
	src, ok := d.kids[op.name]
	if !ok {
		return errENOENT
	}
	if nd.removed {
		return errENOENT
	}
	dst, dstOK := nd.kids[op.name2]
	if op.flags&unix.RENAME_EXCHANGE != 0 {
		if !dstOK {
			return errENOENT
		}
		m.moveName(op.dir, op.name, op.dir2, op.name2, src)
		m.moveName(op.dir2, op.name2, op.dir, op.name, dst)
		m.nodes[op.dir2].kids[op.name2] = src // moveName of dst removed it
		return fuse.OK
	}
	if dstOK && op.flags&unix.RENAME_NOREPLACE != 0 {
		return errEEXIST
	}
	if dstOK && dst != src {
		s, t := m.nodes[src], m.nodes[dst]
		switch {
		case s.isDir() && !t.isDir():
			return errENOTDIR
		case !s.isDir() && t.isDir():
			return errEISDIR
		case t.isDir() && len(t.kids) > 0:
			return errENOTEMPTY
		case t.isDir():
			delete(nd.kids, op.name2)
			t.removed = true
		default:
			m.dropName(op.dir2, op.name2, dst)
		}
	}
	m.moveName(op.dir, op.name, op.dir2, op.name2, src)
	if op.flags&unix.RENAME_WHITEOUT != 0 {
		// A whiteout: its ino is learnt from the tree (placeholder 0).
		m.nodes[op.seq] = &mNode{mode: syscall.S_IFCHR, links: 1, owner: op.owner}
		d.kids[op.name] = op.seq
	}
	return fuse.OK
}

// reap is a --max-age sweep long after every use: every name of a leaf that is not open goes, then every
// directory left empty.
func (m *nsModel) reap() int {
	removed := 0
	var sweep func(dir int) bool
	sweep = func(dir int) bool {
		d := m.nodes[dir]
		for _, name := range slices.Sorted(maps.Keys(d.kids)) {
			id := d.kids[name]
			n := m.nodes[id]
			switch {
			case n.isDir():
				if sweep(id) {
					delete(d.kids, name)
					n.removed = true
					removed++
				}
			case n.opens == 0:
				m.dropName(dir, name, id)
				removed++
			}
		}
		return len(d.kids) == 0
	}
	sweep(0)
	return removed
}

// ownerGone removes every name of the owner's leaves; returns how many names went.
func (m *nsModel) ownerGone(o int) int {
	removed := 0
	for dirID, d := range m.nodes {
		if !d.isDir() {
			continue
		}
		for name, id := range d.kids {
			if n := m.nodes[id]; !n.isDir() && n.owner == o {
				m.dropName(dirID, name, id)
				removed++
			}
		}
	}
	for _, n := range m.nodes {
		if n.owner == o {
			n.owner = -2 // gone: a new process in its place is another owner
		}
	}
	return removed
}

// nsRun is one run of the model test: the filesystem, the model, the owners and the random source.
type nsRun struct {
	t      *testing.T
	b      *bridge
	m      *nsModel
	rng    *rand.Rand
	seq    int
	owners []*exec.Cmd    // mortal owners; the test process is owner -1
	known  map[int]bool   // owners that made a request that names its owner (the tracker watches them)
	log    []string       // the last requests, for a failure's report
	tally  map[string]int // answers by request kind, for the run's report
}

func (r *nsRun) pid(o int) uint32 {
	if o < 0 {
		return uint32(os.Getpid())
	}
	return uint32(r.owners[o].Process.Pid)
}

func startOwner(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

func newNSRun(t *testing.T, seed uint64) *nsRun { return newNSRunWith(t, seed, true) }

// newNSRunWith starts a run; withOwners binds entries to their owners (--owner process), with two mortal
// owners to end.
func newNSRunWith(t *testing.T, seed uint64, withOwners bool) *nsRun {
	b := newBridge(t)
	if withOwners {
		if err := b.fsys.WatchOwners(owner.Process); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.fsys.StopOwners)
	}
	b.pid = uint32(os.Getpid())
	r := &nsRun{t: t, b: b, m: newNSModel(), known: map[int]bool{}, tally: map[string]int{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for range 2 {
		if withOwners {
			r.owners = append(r.owners, startOwner(t))
		}
	}
	return r
}

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

// dirs lists the model's directories: live ones, and now and then a removed one.
func (r *nsRun) dirs() []int {
	var live, removed []int
	for _, id := range slices.Sorted(maps.Keys(r.m.nodes)) {
		if n := r.m.nodes[id]; n.isDir() && n.removed {
			removed = append(removed, id)
		} else if n.isDir() {
			live = append(live, id)
		}
	}
	if len(removed) > 0 && r.rng.IntN(4) == 0 {
		live = append(live, pick(r.rng, removed))
	}
	return live
}

// generated lists (dir, name) of the entries named by templates that are still there, files or directories.
func (r *nsRun) generated(dirs bool) [][2]any {
	var out [][2]any
	for _, dirID := range slices.Sorted(maps.Keys(r.m.nodes)) {
		d := r.m.nodes[dirID]
		if !d.isDir() {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(d.kids)) {
			if strings.HasPrefix(name, "tmp") && !dirs || strings.HasPrefix(name, "dir") && dirs {
				out = append(out, [2]any{dirID, name})
			}
		}
	}
	return out
}

// gen makes a request; used lists the handles other requests of its batch release.
func (r *nsRun) gen(solo bool, used map[int]bool) *nsOp {
	r.seq++
	owner := -1
	if len(r.owners) > 0 && r.rng.IntN(3) == 0 {
		owner = r.rng.IntN(len(r.owners))
	}
	op := &nsOp{}
	var handles []int
	for _, h := range slices.Sorted(maps.Keys(r.m.handles)) {
		if !used[h] {
			handles = append(handles, h)
		}
	}
	dirs := r.dirs()
	for {
		*op = nsOp{seq: r.seq, owner: owner} // afresh: a choice given up below may have filled in fields
		w := r.rng.IntN(100)
		switch {
		case solo && w < 1:
			op.kind = nsReap
		case solo && w < 2 && len(r.owners) > 0:
			op.kind = nsOwnerGone
			op.owner = r.rng.IntN(len(r.owners))
		case w < 14:
			op.kind = nsCreate
			op.dir, op.name = pick(r.rng, dirs), pick(r.rng, nsFileNames)
			if r.rng.IntN(2) == 0 {
				op.flags = syscall.O_EXCL
			}
		case w < 22:
			op.kind = nsCreateTemplate
			op.dir, op.name = pick(r.rng, dirs), nsFileTemplate
		case w < 27:
			op.kind = nsMkdir
			op.name = pick(r.rng, nsDirNames)
			op.owner = -1 // directories belong to the test process: no orphaned directories to wait for
		case w < 29:
			op.kind = nsMkdirTemplate
			op.name = nsDirTemplate
			op.owner = -1
		case w < 33:
			op.kind = nsMknod
			op.dir, op.name = pick(r.rng, dirs), pick(r.rng, nsFileNames)
			op.flags = pick(r.rng, []uint32{syscall.S_IFIFO, syscall.S_IFREG})
		case w < 36:
			op.kind = nsTmpfile
			op.dir = pick(r.rng, dirs)
			if r.rng.IntN(4) == 0 {
				op.flags = syscall.O_EXCL
			}
		case w < 44:
			var leaves, gone []int
			for _, id := range slices.Sorted(maps.Keys(r.m.nodes)) {
				if n := r.m.nodes[id]; !n.isDir() && n.ino != 0 && n.gone {
					gone = append(gone, id)
				} else if !n.isDir() && n.ino != 0 {
					leaves = append(leaves, id)
				}
			}
			if len(gone) > 0 {
				leaves = append(leaves, pick(r.rng, gone))
			}
			if len(leaves) == 0 {
				continue
			}
			op.kind = nsLink
			op.target = pick(r.rng, leaves)
			op.dir, op.name = pick(r.rng, dirs), pick(r.rng, nsLinkNames)
		case w < 56:
			op.kind = nsUnlink
			op.dir = pick(r.rng, dirs)
			names := slices.Concat(nsFileNames, nsLinkNames)
			if op.dir == 0 {
				names = slices.Concat(names, nsDirNames)
			}
			op.name = pick(r.rng, names)
			if g := r.generated(false); len(g) > 0 && r.rng.IntN(4) == 0 {
				e := pick(r.rng, g)
				op.dir, op.name = e[0].(int), e[1].(string)
			}
		case w < 61:
			op.kind = nsRmdir
			op.name = pick(r.rng, append(append([]string{}, nsDirNames...), nsFileNames[0]))
			if g := r.generated(true); len(g) > 0 && r.rng.IntN(3) == 0 {
				op.name = pick(r.rng, g)[1].(string)
			}
		case w < 80:
			op.kind = nsRename
			op.flags = pick(r.rng, []uint32{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE, unix.RENAME_WHITEOUT, unix.RENAME_WHITEOUT | unix.RENAME_NOREPLACE})
			switch r.rng.IntN(4) {
			case 0: // directories, in the root
				op.name, op.name2 = pick(r.rng, nsDirNames), pick(r.rng, nsDirNames)
				if g := r.generated(true); len(g) > 0 && r.rng.IntN(3) == 0 {
					op.name = pick(r.rng, g)[1].(string)
				}
			case 1: // a file made from a template
				g := r.generated(false)
				if len(g) == 0 {
					continue
				}
				e := pick(r.rng, g)
				op.dir, op.name = e[0].(int), e[1].(string)
				op.dir2, op.name2 = pick(r.rng, dirs), pick(r.rng, nsFileNames)
			default: // files, between any directories
				op.dir, op.name = pick(r.rng, dirs), pick(r.rng, nsFileNames)
				op.dir2, op.name2 = pick(r.rng, dirs), pick(r.rng, nsFileNames)
				if op.dir == 0 && op.dir2 == 0 && op.flags&unix.RENAME_EXCHANGE == 0 && r.rng.IntN(4) == 0 {
					// A file onto a directory's name (EISDIR if it is one); a directory then meets a file
					// in the directory case. Never with an exchange, which would put a directory at a file
					// name, from where a file rename could move it below itself.
					op.name2 = pick(r.rng, nsDirNames)
				}
			}
			if op.dir == op.dir2 && op.name == op.name2 {
				continue // the kernel answers a rename of a node onto itself without asking
			}
		default:
			if len(handles) == 0 {
				continue
			}
			op.kind = nsRelease
			op.target = pick(r.rng, handles)
			if used != nil {
				used[op.target] = true
			}
		}
		return op
	}
}

// do sends op to the filesystem and records the answer.
func (r *nsRun) do(op *nsOp) {
	b := r.b
	nodeOf := func(id int) uint64 { return r.m.nodes[id].nodeID }
	pid := r.pid(op.owner)
	switch op.kind {
	case nsCreate, nsCreateTemplate:
		name := op.name
		out, st := b.create(nodeOf(op.dir), name, op.flags, pid)
		op.st, op.nodeID, op.ino, op.fh = st, out.NodeId, out.Attr.Ino, out.Fh
	case nsTmpfile:
		out, st := b.tmpfile(nodeOf(op.dir), op.flags, pid)
		op.st, op.nodeID, op.ino, op.fh = st, out.NodeId, out.Attr.Ino, out.Fh
	case nsMkdir, nsMkdirTemplate:
		out, st := b.mkdir(nodeOf(op.dir), op.name, pid)
		op.st, op.nodeID, op.ino = st, out.NodeId, out.Attr.Ino
	case nsMknod:
		out, st := b.mknod(nodeOf(op.dir), op.name, op.flags, pid)
		op.st, op.nodeID, op.ino = st, out.NodeId, out.Attr.Ino
	case nsLink:
		out, st := b.link(nodeOf(op.target), nodeOf(op.dir), op.name, pid)
		op.st, op.nodeID, op.ino = st, out.NodeId, out.Attr.Ino
	case nsUnlink:
		op.st = b.unlink(nodeOf(op.dir), op.name)
	case nsRmdir:
		op.st = b.rmdir(nodeOf(op.dir), op.name)
	case nsRename:
		op.st = b.rename(nodeOf(op.dir), op.name, nodeOf(op.dir2), op.name2, op.flags, pid)
	case nsRelease:
		b.release(nodeOf(r.m.handles[op.target]), r.m.fhs[op.target])
		op.st = fuse.OK
	case nsReap:
		// Nothing is idle for an hour yet; two hours on, everything not open is.
		if n := b.fsys.Reap(time.Hour, time.Now()); n != 0 {
			r.t.Fatalf("%v: a sweep at the present removed %d entries", op, n)
		}
		op.reaped = b.fsys.Reap(time.Hour, time.Now().Add(2*time.Hour))
	case nsOwnerGone:
		before := b.fsys.Stats()
		want := r.m.clone().ownerGone(op.owner)
		cmd := r.owners[op.owner]
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := b.fsys.Stats()
			if (s.OwnersGone > before.OwnersGone || !r.known[op.owner]) && s.NamesRemovedWithOwner >= before.NamesRemovedWithOwner+int64(want) {
				op.reaped = int(s.NamesRemovedWithOwner - before.NamesRemovedWithOwner)
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("%v: after 10s, %d owners gone and %d names removed with them; want %d and %d",
					op, s.OwnersGone-before.OwnersGone, s.NamesRemovedWithOwner-before.NamesRemovedWithOwner, 1, want)
			}
			time.Sleep(time.Millisecond) // the owner's end reaches the daemon asynchronously
		}
	}
}

// applyAll applies ops to m in order; it reports the first request whose answer differs.
func applyAll(m *nsModel, ops []*nsOp) (bad *nsOp, want fuse.Status) {
	for _, op := range ops {
		switch op.kind {
		case nsReap:
			if got := m.reap(); got != op.reaped {
				return op, fuse.Status(got)
			}
			continue
		case nsOwnerGone:
			if got := m.ownerGone(op.owner); got != op.reaped {
				return op, fuse.Status(got)
			}
			continue
		}
		if st := m.apply(op); st != op.st {
			return op, st
		}
	}
	return nil, 0
}

// permutations calls fn with every order of ops until it returns true.
func permutations(ops []*nsOp, fn func([]*nsOp) bool) bool {
	if len(ops) <= 1 {
		return fn(ops)
	}
	for i := range ops {
		rest := slices.Concat(ops[:i], ops[i+1:])
		if permutations(rest, func(p []*nsOp) bool { return fn(append([]*nsOp{ops[i]}, p...)) }) {
			return true
		}
	}
	return false
}

// step runs one batch: its requests at once, each from its own goroutine, then checks that some order of them
// explains every answer and the tree.
func (r *nsRun) step(batch []*nsOp) {
	t := r.t
	t.Helper()
	if len(batch) == 1 {
		r.do(batch[0])
	} else {
		var start, done sync.WaitGroup
		start.Add(1)
		for _, op := range batch {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				r.do(op)
			}()
		}
		start.Done()
		done.Wait()
	}
	for _, op := range batch {
		r.log = append(r.log, op.String())
		r.tally[fmt.Sprintf("%v %v", op.kind, op.st)]++
		if op.st == fuse.OK && (op.kind == nsCreate || op.kind == nsCreateTemplate || op.kind == nsTmpfile) {
			r.m.fhs[op.seq] = op.fh
		}
		if op.kind == nsCreate || op.kind == nsCreateTemplate || op.kind == nsMknod || op.kind == nsLink ||
			op.kind == nsRename && op.flags&unix.RENAME_WHITEOUT != 0 {
			r.known[op.owner] = true // the tracker watches this owner now
		}
	}
	if len(r.log) > 40 {
		r.log = r.log[len(r.log)-40:]
	}
	snap := r.snapshot()
	var why []string
	var good *nsModel
	permutations(batch, func(order []*nsOp) bool {
		m := r.m.clone()
		if bad, want := applyAll(m, order); bad != nil {
			why = append(why, fmt.Sprintf("order %v: %v, want %v", seqs(order), bad, want))
			return false
		}
		if diff := m.matches(r.b, snap); diff != "" {
			why = append(why, fmt.Sprintf("order %v: %s", seqs(order), diff))
			return false
		}
		good = m
		return true
	})
	if good == nil {
		var ops []string
		for _, op := range batch {
			ops = append(ops, op.String())
		}
		if len(why) > 6 {
			why = append(why[:6], fmt.Sprintf("(%d more orders)", len(why)-6))
		}
		t.Fatalf("no order of the batch\n  %s\nexplains the answers and the tree:\n  %s\nrequests before:\n  %s\ntree: %s",
			strings.Join(ops, "\n  "), strings.Join(why, "\n  "), strings.Join(r.log[:len(r.log)-len(batch)], "\n  "), snap)
	}
	r.m = good
	for _, op := range batch {
		if op.kind == nsOwnerGone {
			r.owners[op.owner] = startOwner(t)
			r.known[op.owner] = false
		}
	}
}

func seqs(ops []*nsOp) []int {
	var s []int
	for _, op := range ops {
		s = append(s, op.seq)
	}
	return s
}

// nsSnap is the tree as the filesystem shows it: each directory's READDIR with a LOOKUP of every name, the
// LOOKUP of every pool name it does not list, GETATTR of every directory and Stats.
type nsSnap struct {
	dirs    map[uint64]*dirSnap // by node id
	stats   Stats
	missing []string // directories whose READDIR failed
}

type dirSnap struct {
	attr    fuse.Attr
	entries map[string]fuse.EntryOut
	// lookups of names not listed that answered something else than ENOENT
	phantom map[string]fuse.Status
}

func (s *nsSnap) String() string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(s.dirs)) {
		d := s.dirs[id]
		fmt.Fprintf(&b, "\n  dir node %d (ino %d, nlink %d, size %d):", id, d.attr.Ino, d.attr.Nlink, d.attr.Size)
		for _, name := range slices.Sorted(maps.Keys(d.entries)) {
			e := d.entries[name]
			fmt.Fprintf(&b, " %s=ino%d/%o/nlink%d", name, e.Attr.Ino, e.Attr.Mode&syscall.S_IFMT, e.Attr.Nlink)
		}
	}
	return b.String()
}

func (r *nsRun) snapshot() *nsSnap {
	b := r.b
	s := &nsSnap{dirs: map[uint64]*dirSnap{}}
	var walk func(node uint64)
	walk = func(node uint64) {
		attr, st := b.getattr(node)
		listing, st2 := b.readdir(node)
		if st != fuse.OK || st2 != fuse.OK {
			s.missing = append(s.missing, fmt.Sprintf("node %d: getattr %v, readdir %v", node, st, st2))
			return
		}
		d := &dirSnap{attr: attr.Attr, entries: map[string]fuse.EntryOut{}, phantom: map[string]fuse.Status{}}
		s.dirs[node] = d
		for _, e := range listing {
			out, st := b.lookup(node, e.Name)
			if st != fuse.OK {
				d.phantom[e.Name] = st // listed but not found
				continue
			}
			if out.Attr.Ino != e.Ino {
				d.phantom[e.Name] = fuse.Status(syscall.ESTALE)
			}
			d.entries[e.Name] = out
		}
		for _, name := range slices.Concat(nsFileNames, nsLinkNames, nsDirNames, []string{nsFileTemplate, nsDirTemplate}) {
			if _, ok := d.entries[name]; ok {
				continue
			}
			if _, st := b.lookup(node, name); st != errENOENT {
				d.phantom[name] = st
			}
		}
		for _, name := range slices.Sorted(maps.Keys(d.entries)) {
			if e := d.entries[name]; e.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				walk(e.NodeId)
			}
		}
	}
	walk(fuse.FUSE_ROOT_ID)
	s.stats = b.fsys.Stats()
	return s
}

// matches compares the model with the tree; it binds generated names and whiteouts' inode numbers as it
// goes, and returns the first difference ("" when none).
func (m *nsModel) matches(b *bridge, s *nsSnap) string {
	if len(s.missing) > 0 {
		return fmt.Sprintf("directories that cannot be read: %v", s.missing)
	}
	seen := map[uint64]bool{}
	files, dirs, others, ephemeral := int64(0), int64(0), int64(0), int64(0)
	for _, id := range slices.Sorted(maps.Keys(m.nodes)) {
		n := m.nodes[id]
		switch {
		case n.gone || n.removed:
			continue
		case n.isDir():
			if id != 0 {
				dirs++ // the root is not an entry
			}
		case n.mode == syscall.S_IFREG:
			files++
		default:
			others++
		}
		if n.ephemeral {
			ephemeral++
		}
		if !n.isDir() {
			continue
		}
		d, ok := s.dirs[n.nodeID]
		if !ok {
			return fmt.Sprintf("directory %d (node %d) is not in the tree", id, n.nodeID)
		}
		seen[n.nodeID] = true
		if len(d.phantom) > 0 {
			return fmt.Sprintf("directory %d: names found by LOOKUP but not listed, or listed but not found: %v", id, d.phantom)
		}
		// Bind generated names: a placeholder matches the listed name with its inode that the model lacks.
		for _, key := range slices.Sorted(maps.Keys(n.kids)) {
			if !strings.HasPrefix(key, "?") {
				continue
			}
			kidID := n.kids[key]
			kid := m.nodes[kidID]
			for name, e := range d.entries {
				if _, known := n.kids[name]; !known && e.Attr.Ino == kid.ino {
					delete(n.kids, key)
					n.kids[name] = kidID
					if kid.ephemeral && kid.genName == key {
						kid.genName = name
					}
					break
				}
			}
		}
		var want []string
		for name := range n.kids {
			want = append(want, name)
		}
		got := slices.Sorted(maps.Keys(d.entries))
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Sprintf("directory %d lists %v, want %v", id, got, want)
		}
		subdirs := 0
		for _, name := range want {
			kid := m.nodes[n.kids[name]]
			e := d.entries[name]
			if kid.ino == 0 && kid.mode == syscall.S_IFCHR && e.Attr.Mode&syscall.S_IFMT == syscall.S_IFCHR {
				kid.ino, kid.nodeID = e.Attr.Ino, e.NodeId // a whiteout, seen for the first time
			}
			if e.Attr.Ino != kid.ino || e.Attr.Mode&syscall.S_IFMT != kid.mode {
				return fmt.Sprintf("directory %d: %s is ino %d mode %o, want ino %d mode %o", id, name, e.Attr.Ino, e.Attr.Mode&syscall.S_IFMT, kid.ino, kid.mode)
			}
			if kid.isDir() {
				subdirs++
			} else if int(e.Attr.Nlink) != kid.links {
				return fmt.Sprintf("directory %d: %s has nlink %d, want %d", id, name, e.Attr.Nlink, kid.links)
			}
		}
		if d.attr.Nlink != uint32(2+subdirs) || d.attr.Size != uint64(40+20*len(want)) {
			return fmt.Sprintf("directory %d: nlink %d size %d, want %d and %d (%d entries)", id, d.attr.Nlink, d.attr.Size, 2+subdirs, 40+20*len(want), len(want))
		}
	}
	for node := range s.dirs {
		if !seen[node] {
			return fmt.Sprintf("the tree holds directory node %d, which the model does not", node)
		}
	}
	// Open files without names: GETATTR by node says nlink 0.
	for _, id := range slices.Sorted(maps.Keys(m.nodes)) {
		n := m.nodes[id]
		if n.isDir() || n.gone || n.links > 0 {
			continue
		}
		if attr, st := b.getattr(n.nodeID); st != fuse.OK || attr.Nlink != 0 {
			return fmt.Sprintf("open unnamed file %d: getattr %v nlink %d, want nlink 0", id, st, attr.Nlink)
		}
	}
	st := s.stats
	if st.Files != files || st.Dirs != dirs || st.Others != others || st.OpenHandles != int64(len(m.handles)) ||
		st.EphemeralFiles != ephemeral || st.TemplateEntries != int64(m.created) {
		return fmt.Sprintf("stats: files %d dirs %d others %d handles %d ephemeral %d template entries %d; want %d %d %d %d %d %d",
			st.Files, st.Dirs, st.Others, st.OpenHandles, st.EphemeralFiles, st.TemplateEntries,
			files, dirs, others, len(m.handles), ephemeral, m.created)
	}
	return ""
}

// report logs how often each request got each answer, to show what a run reached.
func (r *nsRun) report() {
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(r.tally)) {
		lines = append(lines, fmt.Sprintf("%s: %d", k, r.tally[k]))
	}
	r.t.Logf("answers: %s", strings.Join(lines, ", "))
}

// nsSeeds are the seeds a model test runs: the regression seeds, then -fs.seed or one from the clock.
func nsSeeds(t *testing.T, regressions []uint64) []uint64 {
	seed := *nsSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun: go test ./fs -run %s -args -fs.seed=%d)", seed, t.Name(), seed)
	return append(slices.Clone(regressions), seed)
}

// TestNamespaceModel: one request at a time, each checked against the model, with --max-age sweeps and
// owners ending.
func TestNamespaceModel(t *testing.T) {
	steps := 1500
	if testing.Short() {
		steps = 300
	}
	for _, seed := range nsSeeds(t, nsSequentialSeeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newNSRun(t, seed)
			for range steps {
				r.step([]*nsOp{r.gen(true, nil)})
			}
			r.report()
		})
	}
}

// TestNamespaceModelConcurrent: batches of two to four requests sent at once from as many goroutines, each
// batch checked against every order of its requests; sweeps and owners' ends run alone between batches.
func TestNamespaceModelConcurrent(t *testing.T) {
	batches := 1000
	if testing.Short() || raceEnabled {
		batches = 400
	}
	for _, seed := range nsSeeds(t, nsConcurrentSeeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newNSRun(t, seed)
			for range batches {
				if r.rng.IntN(30) == 0 {
					r.step([]*nsOp{r.gen(true, nil)})
					continue
				}
				used := map[int]bool{}
				batch := make([]*nsOp, 2+r.rng.IntN(3))
				for i := range batch {
					batch[i] = r.gen(false, used)
				}
				r.step(batch)
			}
			r.report()
		})
	}
}

// nsConflict is a batch of requests that meet on one name, sent at once after a setup, for many rounds.
// Ops name their targets by sequence number: the setup's requests are 1, 2, ... in order. A name "$N" is the
// generated name of the template entry request N made.
type nsConflict struct {
	name  string
	setup []nsOp
	batch []nsOp
}

var nsConflicts = []nsConflict{
	{"exclusive creates", nil, []nsOp{
		{kind: nsCreate, name: "f0", flags: syscall.O_EXCL}, {kind: nsCreate, name: "f0", flags: syscall.O_EXCL}}},
	{"create and mknod", nil, []nsOp{
		{kind: nsCreate, name: "f0", flags: syscall.O_EXCL}, {kind: nsMknod, name: "f0", flags: syscall.S_IFIFO}}},
	{"mkdirs", nil, []nsOp{{kind: nsMkdir, name: "d0"}, {kind: nsMkdir, name: "d0"}}},
	{"rename without replace and create", []nsOp{{kind: nsCreate, name: "f1"}}, []nsOp{
		{kind: nsRename, name: "f1", name2: "f2", flags: unix.RENAME_NOREPLACE}, {kind: nsCreate, name: "f2", flags: syscall.O_EXCL}}},
	{"two renames of one name", []nsOp{{kind: nsCreate, name: "f1"}}, []nsOp{
		{kind: nsRename, name: "f1", name2: "f2"}, {kind: nsRename, name: "f1", name2: "f3"}}},
	{"rename with whiteout and rename of the old name", []nsOp{{kind: nsCreate, name: "f1"}}, []nsOp{
		{kind: nsRename, name: "f1", name2: "f2", flags: unix.RENAME_WHITEOUT}, {kind: nsRename, name: "f1", name2: "f3"}}},
	{"unlink and rename onto the name", []nsOp{{kind: nsCreate, name: "f1"}, {kind: nsCreate, name: "f2"}}, []nsOp{
		{kind: nsUnlink, name: "f2"}, {kind: nsRename, name: "f1", name2: "f2"}}},
	{"links of one name", []nsOp{{kind: nsCreate, name: "f1"}}, []nsOp{
		{kind: nsLink, target: 1, name: "l0"}, {kind: nsLink, target: 1, name: "l0"}}},
	{"rmdir and create inside", []nsOp{{kind: nsMkdir, name: "d0"}}, []nsOp{
		{kind: nsRmdir, name: "d0"}, {kind: nsCreate, dir: 1, name: "f0"}}},
	{"last close and rename of a generated name", []nsOp{{kind: nsCreateTemplate, name: nsFileTemplate}}, []nsOp{
		{kind: nsRelease, target: 1}, {kind: nsRename, name: "$1", name2: "f0"}}},
	{"last close and link of a file made from a template", []nsOp{{kind: nsCreateTemplate, name: nsFileTemplate}}, []nsOp{
		{kind: nsRelease, target: 1}, {kind: nsLink, target: 1, name: "l0"}}},
}

// resolve fills in a generated name ("$N") from the model.
func (r *nsRun) resolve(op *nsOp) {
	if !strings.HasPrefix(op.name, "$") {
		return
	}
	var seq int
	fmt.Sscan(op.name[1:], &seq)
	for name, id := range r.m.nodes[op.dir].kids {
		if id == seq {
			op.name = name
		}
	}
}

// TestNamespaceConcurrentConflicts runs each conflict many times in a fresh tree, checking every round
// against every order of the batch.
func TestNamespaceConcurrentConflicts(t *testing.T) {
	rounds := 300
	if testing.Short() || raceEnabled {
		rounds = 100
	}
	for _, c := range nsConflicts {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			for range rounds {
				r := newNSRunWith(t, 0, false)
				for _, op := range c.setup {
					r.seq++
					op.seq, op.owner = r.seq, -1
					r.resolve(&op)
					r.step([]*nsOp{&op})
				}
				var batch []*nsOp
				for _, op := range c.batch {
					r.seq++
					op.seq, op.owner = r.seq, -1
					r.resolve(&op)
					batch = append(batch, &op)
				}
				r.step(batch)
			}
		})
	}
}
