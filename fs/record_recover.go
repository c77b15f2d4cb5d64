package fs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/spool"
)

// Reading a crash record back (record.go): the snapshot, then each entry applied in order onto a model of the
// tree keyed by inode number (the last state of each node, entry and handle wins), then the nodes nothing
// reaches any more dropped, and the result turned back into a hand-over's state for adoptMount.

// RecoveredRecord is a crash record read back.
type RecoveredRecord struct {
	// Settings are what StartCrashRecord was given.
	Settings json.RawMessage
	// Entries is how many entries were applied; Torn says that the record ended in a frame cut short (a
	// kill while it was written), which was left out.
	Entries int
	Torn    bool
	state   *TakeoverState
	gen     uint64
	// records are the names of the records kept (the one read and any older one): they leave the store once
	// the new daemon has written its own.
	records []string
}

// recordModel is the tree as the record describes it, by inode number.
type recordModel struct {
	nodes    map[uint64]*nodeState
	files    map[uint64]spool.FileState
	refs     map[uint64]uint64
	handles  map[uint64]handleState
	nextIno  uint64
	counters countersState
	pool     spool.PoolCounters
	lastDesc uint64
	journal  []JournalEntry
	monoBase int64
	// root is the root's inode number (go-fuse's root may carry 0 or 1).
	root uint64
	// owners are the owners by number (nil without --owner), orphans their orphaned directories, accounts
	// their --owner-quota accounts' limits by owner number; a file's FileState.Account is an owner number.
	owners   *owner.TrackerState
	orphans  []uint64
	accounts map[int]int64
}

// ReadCrashRecord reads the newest crash record among the descriptors a new daemon was given (by name). It
// closes and takes out of fds every record.
func ReadCrashRecord(fds map[string]int) (*RecoveredRecord, error) {
	var names []string
	best, bestGen := "", uint64(0)
	for name := range fds {
		gen, ok := strings.CutPrefix(name, recordPrefix)
		if !ok {
			continue
		}
		names = append(names, name)
		if g, err := strconv.ParseUint(gen, 10, 64); err == nil && g > bestGen {
			best, bestGen = name, g
		}
	}
	defer func() {
		for _, name := range names {
			unix.Close(fds[name])
			delete(fds, name)
		}
	}()
	if best == "" {
		return nil, errors.New("no crash record among the descriptors kept")
	}
	data, err := readAll(fds[best])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", best, err)
	}
	rec, err := parseRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", best, err)
	}
	rec.gen, rec.records = bestGen, names
	return rec, nil
}

func readAll(fd int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	data := make([]byte, st.Size)
	for off := 0; off < len(data); {
		n, err := unix.Pread(fd, data[off:], int64(off))
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return data[:off], nil
		}
		off += n
	}
	return data, nil
}

// nextFrame splits the first frame off data; ok is false when data holds no whole, intact frame.
func nextFrame(data []byte) (body, rest []byte, ok bool) {
	if len(data) < 8 {
		return nil, data, false
	}
	n := binary.LittleEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-8) {
		return nil, data, false
	}
	body = data[8 : 8+n]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[4:]) {
		return nil, data, false
	}
	return body, data[8+n:], true
}

func parseRecord(data []byte) (*RecoveredRecord, error) {
	body, rest, ok := nextFrame(data)
	if !ok {
		return nil, errors.New("the record's first frame is not whole")
	}
	var h recordHeader
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("the record's snapshot: %w", err)
	}
	if h.Format != recordFormat || h.Version != recordVersion {
		return nil, fmt.Errorf("a record of format %q version %d: this tempfs reads %q version %d", h.Format, h.Version, recordFormat, recordVersion)
	}
	m, err := modelOf(&h.State)
	if err != nil {
		return nil, err
	}
	rec := &RecoveredRecord{Settings: h.Settings}
	for len(rest) > 0 {
		body, rest, ok = nextFrame(rest)
		if !ok {
			rec.Torn = true
			break
		}
		var e recordEntry
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", rec.Entries+1, err)
		}
		if err := m.apply(&e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", rec.Entries+1, err)
		}
		rec.Entries++
	}
	st := h.State
	tree, files, accounts, err := m.tree()
	if err != nil {
		return nil, err
	}
	st.Tree = tree
	st.Owners = m.owners
	st.Pool.Accounts = accounts
	st.Journal = m.journal
	st.Pool.Files = files // RecoverMount turns them into a pool state with the descriptors at hand
	st.Pool.Counters = m.pool
	st.Pool.LastDescriptorID = max(st.Pool.LastDescriptorID, m.lastDesc)
	rec.state = &st
	return rec, nil
}

// modelOf turns a snapshot's tree (references by index) into a model (by inode number).
func modelOf(st *TakeoverState) (*recordModel, error) {
	t := &st.Tree
	inoOf := func(i int) (int, error) {
		if i < 0 || i >= len(t.Nodes) {
			return 0, fmt.Errorf("node index %d of %d", i, len(t.Nodes))
		}
		return int(t.Nodes[i].Ino), nil
	}
	m := &recordModel{nodes: map[uint64]*nodeState{}, files: map[uint64]spool.FileState{}, refs: map[uint64]uint64{},
		handles: map[uint64]handleState{}, nextIno: t.NextIno, counters: t.Counters, pool: st.Pool.Counters,
		lastDesc: st.Pool.LastDescriptorID, journal: st.Journal, monoBase: t.MonoBase}
	if len(t.Nodes) == 0 {
		return nil, errors.New("the record's snapshot has no root")
	}
	m.root = t.Nodes[0].Ino
	m.owners = st.Owners
	// The snapshot numbers accounts apart from owners; the model by their owner's number.
	accountOwner := map[int]int{}
	for _, ss := range t.OwnerSets {
		if ss.Account >= 0 {
			if ss.Account >= len(st.Pool.Accounts) {
				return nil, fmt.Errorf("owner set: account %d of %d", ss.Account, len(st.Pool.Accounts))
			}
			if m.accounts == nil {
				m.accounts = map[int]int64{}
			}
			m.accounts[ss.Owner] = st.Pool.Accounts[ss.Account].Limit
			accountOwner[ss.Account] = ss.Owner
		}
	}
	for _, o := range t.Orphans {
		if o < 0 || o >= len(t.Nodes) {
			return nil, fmt.Errorf("orphan %d of %d nodes", o, len(t.Nodes))
		}
		m.orphans = append(m.orphans, t.Nodes[o].Ino)
	}
	for i := range t.Nodes {
		ns := t.Nodes[i]
		var err error
		if ns.Children != nil {
			children := make(map[string]int, len(ns.Children))
			for name, c := range ns.Children {
				if children[name], err = inoOf(c); err != nil {
					return nil, err
				}
			}
			ns.Children = children
		}
		if ns.Parent >= 0 {
			if ns.Parent, err = inoOf(ns.Parent); err != nil {
				return nil, err
			}
		}
		links := make([]linkState, len(ns.Links))
		for j, l := range ns.Links {
			if links[j].Dir, err = inoOf(l.Dir); err != nil {
				return nil, err
			}
			links[j].Name = l.Name
		}
		ns.Links = links
		if ns.Kind == "dir" && ns.Children == nil {
			ns.Children = map[string]int{} // an empty directory's entries are left out of the JSON
		}
		if ns.Spool >= 0 {
			if ns.Spool >= len(st.Pool.Files) {
				return nil, fmt.Errorf("node %d: spool file %d of %d", ns.Ino, ns.Spool, len(st.Pool.Files))
			}
			fs := st.Pool.Files[ns.Spool]
			if fs.Chunk >= 0 {
				if fs.Chunk >= len(st.Pool.Chunks) {
					return nil, fmt.Errorf("node %d: arena chunk %d of %d", ns.Ino, fs.Chunk, len(st.Pool.Chunks))
				}
				fs.ChunkID, fs.SlotSize, fs.Chunk = st.Pool.Chunks[fs.Chunk].ID, st.Pool.Chunks[fs.Chunk].SlotSize, -1
			}
			if fs.Account >= 0 {
				o, ok := accountOwner[fs.Account]
				if !ok {
					return nil, fmt.Errorf("node %d: account %d is no owner's", ns.Ino, fs.Account)
				}
				fs.Account = o
			}
			m.files[ns.Ino] = fs
			ns.Spool = 0
		}
		m.nodes[ns.Ino] = &ns
	}
	for _, r := range t.Refs {
		ino, err := inoOf(r.Node)
		if err != nil {
			return nil, err
		}
		m.refs[uint64(ino)] = r.Count
	}
	for _, hs := range t.Handles {
		var err error
		if hs.Node, err = inoOf(hs.Node); err != nil {
			return nil, err
		}
		if hs.TemplateDir >= 0 {
			if hs.TemplateDir, err = inoOf(hs.TemplateDir); err != nil {
				return nil, err
			}
		}
		m.handles[hs.ID] = hs
	}
	return m, nil
}

// apply lays one entry over the model.
func (m *recordModel) apply(e *recordEntry) error {
	rebase := e.MonoBase - m.monoBase
	for i := range e.Nodes {
		ns := e.Nodes[i]
		ns.Used += rebase
		if ns.Opened != 0 {
			ns.Opened += rebase
		}
		if old := m.nodes[ns.Ino]; old != nil && old.Kind == "dir" {
			ns.Children = old.Children
		} else if ns.Kind == "dir" {
			ns.Children = map[string]int{}
		}
		delete(m.files, ns.Ino)
		if ns.Spool >= 0 {
			fs, ok := e.Files[ns.Ino]
			if !ok {
				return fmt.Errorf("file %d: its bytes are not described", ns.Ino)
			}
			m.files[ns.Ino] = fs
			ns.Spool = 0
		}
		m.nodes[ns.Ino] = &ns
	}
	for _, es := range e.Entries {
		d := m.nodes[es.Dir]
		if d == nil || d.Kind != "dir" {
			return fmt.Errorf("entry %q: directory %d is not known", es.Name, es.Dir)
		}
		if es.Node == 0 {
			delete(d.Children, es.Name)
		} else {
			d.Children[es.Name] = int(es.Node)
		}
	}
	for _, r := range e.Refs {
		if r.Count == 0 {
			delete(m.refs, uint64(r.Node))
		} else {
			m.refs[uint64(r.Node)] = r.Count
		}
	}
	for _, hs := range e.Handles {
		m.handles[hs.ID] = hs
	}
	for _, id := range e.Released {
		delete(m.handles, id)
	}
	if e.Owners != nil {
		m.owners, m.orphans, m.accounts = &e.Owners.Tracker, e.Owners.Orphans, e.Owners.Accounts
	}
	m.nextIno, m.counters, m.pool = max(m.nextIno, e.NextIno), e.Counters, e.Pool
	m.lastDesc = max(m.lastDesc, e.LastDescriptorID)
	m.journal = append(m.journal, e.Journal...)
	if len(m.journal) > journalSize {
		m.journal = m.journal[len(m.journal)-journalSize:]
	}
	return nil
}

// tree turns the model back into a snapshot's tree, keeping the nodes a name, the kernel or a handle reaches
// (as exportTree does), and lists the spool files in the order the nodes refer to them.
func (m *recordModel) tree() (treeState, []spool.FileState, []spool.AccountState, error) {
	t := treeState{NextIno: m.nextIno, MonoBase: m.monoBase, Counters: m.counters}
	if m.nodes[m.root] == nil {
		return t, nil, nil, errors.New("the record has no root")
	}
	index := map[uint64]int{}
	var order []uint64
	add := func(ino uint64) bool {
		if _, ok := index[ino]; ok {
			return true
		}
		if m.nodes[ino] == nil {
			return false
		}
		index[ino] = len(order)
		order = append(order, ino)
		return true
	}
	add(m.root)
	var roots []uint64
	for ino := range m.refs {
		roots = append(roots, ino)
	}
	ids := make([]uint64, 0, len(m.handles))
	for id, hs := range m.handles {
		ids = append(ids, id)
		roots = append(roots, uint64(hs.Node))
		if hs.TemplateDir >= 0 {
			roots = append(roots, uint64(hs.TemplateDir))
		}
	}
	slices.Sort(roots)
	slices.Sort(ids)
	for _, ino := range roots {
		add(ino)
	}
	for i := 0; i < len(order); i++ {
		ns := m.nodes[order[i]]
		names := make([]string, 0, len(ns.Children))
		for name := range ns.Children {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if !add(uint64(ns.Children[name])) {
				delete(ns.Children, name) // made by a request whose entry was not written: it comes again
			}
		}
		if ns.Parent >= 0 && !add(uint64(ns.Parent)) {
			ns.Parent = -1
		}
		ns.Links = slices.DeleteFunc(ns.Links, func(l linkState) bool { return !add(uint64(l.Dir)) })
	}
	// Accounts in the order of their owners' numbers.
	var accounts []spool.AccountState
	accountIndex := map[int]int{}
	for _, o := range slices.Sorted(maps.Keys(m.accounts)) {
		accountIndex[o] = len(accounts)
		accounts = append(accounts, spool.AccountState{Limit: m.accounts[o]})
	}
	accountOf := func(o int) int {
		if i, ok := accountIndex[o]; ok {
			return i
		}
		return -1
	}
	owners := 0
	if m.owners != nil {
		owners = len(m.owners.Owners)
	}
	sets := map[int][]int{}
	var files []spool.FileState
	handled := map[uint64]bool{}
	for _, hs := range m.handles {
		handled[uint64(hs.Node)] = true
	}
	for _, ino := range order {
		ns := *m.nodes[ino]
		if ns.Children != nil {
			children := make(map[string]int, len(ns.Children))
			for name, c := range ns.Children {
				children[name] = index[uint64(c)]
			}
			ns.Children = children
		}
		if ns.Parent >= 0 {
			ns.Parent = index[uint64(ns.Parent)]
		}
		links := make([]linkState, len(ns.Links))
		for j, l := range ns.Links {
			links[j] = linkState{Dir: index[uint64(l.Dir)], Name: l.Name}
		}
		ns.Links = links
		if ns.Kind == "file" && ns.Spool >= 0 && len(ns.Links) == 0 && !handled[ino] {
			// No name and no open handle: nothing can read the bytes again. The kernel forgets such a file at
			// once, and a FORGET the dead daemon read and had not applied is never sent again, which would keep
			// the bytes until unmount. The node stays for the kernel's count.
			ns.Spool = -1
		}
		if ns.Spool >= 0 {
			fs, ok := m.files[ino]
			if !ok {
				return t, nil, nil, fmt.Errorf("file %d: its bytes are not described", ino)
			}
			if fs.Account >= 0 {
				fs.Account = accountOf(fs.Account)
			}
			ns.Spool = len(files)
			files = append(files, fs)
		}
		if ns.Owner >= owners {
			return t, nil, nil, fmt.Errorf("node %d: owner %d of %d", ino, ns.Owner, owners)
		}
		if ns.Owner >= 0 {
			sets[ns.Owner] = append(sets[ns.Owner], len(t.Nodes))
		}
		t.Nodes = append(t.Nodes, ns)
	}
	for _, o := range slices.Sorted(maps.Keys(sets)) {
		t.OwnerSets = append(t.OwnerSets, ownerSetState{Owner: o, Entries: sets[o], Account: accountOf(o)})
	}
	// An account whose owner has no entry left is an owner set of its own, as the owners keep them.
	for _, o := range slices.Sorted(maps.Keys(m.accounts)) {
		if _, ok := sets[o]; !ok && o < owners {
			t.OwnerSets = append(t.OwnerSets, ownerSetState{Owner: o, Account: accountOf(o)})
		}
	}
	for _, ino := range m.orphans {
		if i, ok := index[ino]; ok {
			t.Orphans = append(t.Orphans, i)
		}
	}
	slices.Sort(t.Orphans)
	refs := make([]uint64, 0, len(m.refs))
	for ino := range m.refs {
		refs = append(refs, ino)
	}
	slices.Sort(refs)
	for _, ino := range refs {
		if i, ok := index[ino]; ok {
			t.Refs = append(t.Refs, refState{Node: i, Count: m.refs[ino]})
		}
	}
	for _, id := range ids {
		hs := m.handles[id]
		i, ok := index[uint64(hs.Node)]
		if !ok {
			continue
		}
		hs.Node = i
		if hs.TemplateDir >= 0 {
			hs.TemplateDir = index[uint64(hs.TemplateDir)]
		}
		t.Handles = append(t.Handles, hs)
	}
	return t, files, accounts, nil
}

// RecoverMount rebuilds a mount from its crash record and the descriptors kept (fds, by name: "fuse", the
// spool's), as AdoptMount does for a take-over, and starts a new record generation in store. Descriptors
// the record no longer names are closed and leave the store. The mount returned does not serve yet: the
// caller calls ServeAdopted, which asks the kernel to send again what the dead daemon read and did not
// answer.
func RecoverMount(mountpoint string, opts Options, cfg MountConfig, scope owner.Scope, rec *RecoveredRecord, fds map[string]int, store DescriptorStore, maxStored int) (*Mount, error) {
	st := *rec.state
	kept := make([]string, 0, len(fds))
	for name := range fds {
		kept = append(kept, name)
	}
	pool, err := spool.RecoveredPoolState(st.Pool, st.Pool.Files, st.Pool.Counters, st.Pool.LastDescriptorID, fds)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	st.Pool = pool
	m, err := adoptMount(mountpoint, opts, cfg, scope, &st, fds, true)
	if err != nil {
		return nil, err
	}
	r := newCrashRecord(m.fs, store, maxStored)
	r.mount, r.settings, r.gen = m, rec.Settings, rec.gen
	for _, name := range kept {
		r.stored[name] = true
	}
	// What the record no longer names (a file whose last name went in an entry, a descriptor made by a request
	// whose entry was not written) goes.
	var unused []string
	for name, fd := range fds {
		unix.Close(fd)
		delete(fds, name)
		unused = append(unused, name)
	}
	r.removeClosed(unused)
	st2, _, err := m.ExportState()
	if err != nil {
		return nil, err
	}
	if err := r.startFile(st2, rec.gen+1); err != nil {
		return nil, err
	}
	r.removeClosed(rec.records)
	m.attachRecord(r)
	return m, nil
}
