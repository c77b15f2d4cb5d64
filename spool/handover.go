package spool

// Lock order: see the package comment in pool.go. Export takes each File's mu for reading and, under it,
// Pool.mu and the File's syncMu; then Pool.mu, arena.mu and Store.mu, one at a time. ImportPool builds a
// pool that no one else can see yet.
//
// A pool is handed over to a new process without moving a byte: the descriptors that hold the bytes (arena
// chunks, files' own memfds, disk backing files, and the store's directory and lock) are sent to it, and
// the state says what each one is. The store's lock is an flock, which belongs to the open file
// description: the description sent is the one that holds the lock, so the store stays locked, and
// cleaners leave it alone, across the hand-over and after the old process exits.

import (
	"container/heap"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PoolState is a pool's content for a new process to take over: plain JSON-serializable data (exported
// fields, references by index), the descriptors named beside it.
type PoolState struct {
	// MaxSize, MemoryCap and DiskCap are the Config the pool was built with; RAMCap is the memory cap in
	// force (SetMemoryCap may have moved it since).
	MaxSize   int64 `json:"max_size"`
	MemoryCap int64 `json:"memory_cap"`
	DiskCap   int64 `json:"disk_cap"`
	RAMCap    int64 `json:"ram_cap"`
	// Counters are the pool's counters; those that follow from the files are checked against them.
	Counters PoolCounters `json:"counters"`
	// LastDescriptorID is the last id given to a descriptor: ids, and so descriptor names, are never reused.
	LastDescriptorID uint64 `json:"last_descriptor_id"`
	// What the pool learnt of its store's filesystem and the kernel, so the new process need not learn it
	// again (and counts disk bytes the same way: st_blocks where FIEMAP is missing).
	CopyRangeUnsupported  bool `json:"copy_range_unsupported"`
	FiemapUnsupported     bool `json:"fiemap_unsupported"`
	DescriptorLimitLogged bool `json:"descriptor_limit_logged"`

	Store    StoreState     `json:"store"`
	Chunks   []ChunkState   `json:"chunks"`
	Files    []FileState    `json:"files"`
	Accounts []AccountState `json:"accounts"`
}

// PoolCounters are the counters behind Stats.
type PoolCounters struct {
	// Follow from the files (checked by ImportPool).
	Files       int64 `json:"files"`
	MemoryFiles int64 `json:"memory_files"`
	DiskFiles   int64 `json:"disk_files"`
	RAMBytes    int64 `json:"ram_bytes"`
	DiskBytes   int64 `json:"disk_bytes"`
	ArenaFiles  int64 `json:"arena_files"`
	ArenaMemfds int64 `json:"arena_memfds"`
	OwnMemfds   int64 `json:"own_memfds"`
	// History (continued as they are).
	PeakRAMBytes        int64 `json:"peak_ram_bytes"`
	PeakDiskBytes       int64 `json:"peak_disk_bytes"`
	DiskWrittenBytes    int64 `json:"disk_written_bytes"`
	Rollovers           int64 `json:"rollovers"`
	SpilledBytes        int64 `json:"spilled_bytes"`
	DescriptorLimitHits int64 `json:"descriptor_limit_hits"`
}

// StoreState is the pool's disk store: its directory, lock and parent travel as descriptors (Dir, Lock,
// ParentDir name them), never reopened by path.
type StoreState struct {
	// Parent is the directory the store was made in (a store deleted while mounted is made there again);
	// Path and Name are the store directory's path and its name in Parent.
	Parent string `json:"parent"`
	Path   string `json:"path"`
	Name   string `json:"name"`
	// Generation counts the store directories made so far (1 at start; Stats.StoreRecreated+1), LastError
	// is the last failure to make a backing file (Stats.StoreError).
	Generation         int64  `json:"generation"`
	LastError          string `json:"last_error,omitempty"`
	TmpfileUnsupported bool   `json:"tmpfile_unsupported"`
	// The descriptors' names: the store directory, its ".lock" (holding the flock) and Parent.
	Dir       string `json:"dir"`
	Lock      string `json:"lock"`
	ParentDir string `json:"parent_dir"`
}

// ChunkState is one memfd of the small-file arena, cut into slots of SlotSize bytes: slots from Next on
// were never handed out, Free lists the freed ones (reused first, in order from the end). A slot that is in
// neither and held by no file is lost (its punch failed) and stays so. The files in it say which slots
// are in use.
type ChunkState struct {
	FD       string   `json:"fd"`
	ID       uint64   `json:"id"`
	SlotSize int64    `json:"slot_size"`
	Next     uint32   `json:"next"`
	Free     []uint32 `json:"free,omitempty"`
}

// Where a FileState's bytes are: the Placement names, and WhereClosed for a File that was closed.
const (
	WhereClosed      = "closed"
	WhereEmpty       = "empty"
	WhereArena       = "arena"
	WhereMemfd       = "memfd"
	WhereDisk        = "disk"
	WherePassthrough = "passthrough"
)

// FileState is one File.
type FileState struct {
	// Where is one of the Where* constants.
	Where string `json:"where"`
	// Size is the logical size (for a passthrough file, its backing file's at the export).
	Size int64 `json:"size"`
	// Accounted is the file's share of RAMBytes or DiskBytes, and of its account: the bytes it allocates.
	Accounted int64 `json:"accounted"`
	// Account is the index in PoolState.Accounts of the account the file is charged to, -1 for none.
	Account int `json:"account"`
	// FD names the descriptor of a memfd, disk or passthrough file, and ID is its id; "" and 0 otherwise.
	FD string `json:"fd,omitempty"`
	ID uint64 `json:"id,omitempty"`
	// An arena file's slot: Chunk is its index in PoolState.Chunks (-1 for other files), SlotOffset where
	// the slot starts in the chunk. FallocPages and Pages are what the slot knows of its pages (see
	// arenaFile; Pages -1 when not known).
	Chunk       int    `json:"chunk"`
	SlotOffset  int64  `json:"slot_offset,omitempty"`
	FallocPages uint16 `json:"falloc_pages,omitempty"`
	Pages       int32  `json:"pages,omitempty"`
	// ChunkID and SlotSize name an arena file's chunk in a crash record, which has no list of chunks to index
	// (record.go); 0 in a hand-over's state.
	ChunkID  uint64 `json:"chunk_id,omitempty"`
	SlotSize int64  `json:"slot_size,omitempty"`
	// SyncSeq and SyncErrno are the writeback errors Sync collected: how many, and the last one's errno
	// (0 for none), so that every open description is still told of each once.
	SyncSeq   uint64 `json:"sync_seq,omitempty"`
	SyncErrno int    `json:"sync_errno,omitempty"`
	// ClosedOnDisk: a closed file that was on disk when it was closed (its Tier stays Disk).
	ClosedOnDisk bool `json:"closed_on_disk,omitempty"`
}

// AccountState is one Account.
type AccountState struct {
	Limit int64 `json:"limit"`
	Used  int64 `json:"used"`
}

// Descriptor is a descriptor of the pool, under the name the state knows it by.
type Descriptor struct {
	Name string
	FD   int
}

// Descriptor names. An arena chunk's, a memfd's or a backing file's carries the descriptor's id, which no
// other descriptor of the pool ever gets, also after a hand-over: a name sent once means the same
// descriptor as long as the state names it.
const (
	descStoreDir    = "spool/store"
	descStoreLock   = "spool/store-lock"
	descStoreParent = "spool/store-parent"
)

func chunkDescName(id uint64) string { return fmt.Sprintf("spool/arena/%d", id) }
func memfdDescName(id uint64) string { return fmt.Sprintf("spool/memfd/%d", id) }
func diskDescName(id uint64) string  { return fmt.Sprintf("spool/disk/%d", id) }

// Export describes the pool, the given files (files[i] is PoolState.Files[i]) and accounts (accounts[j] is
// PoolState.Accounts[j]; a file's account is referred to by index, -1 for none), and names the descriptors
// that hold their bytes (store directory, store lock, store parent, arena chunks, own memfds, disk backing
// files).
//
// files must hold every live File of the pool, once each (Export fails otherwise, since the bytes and
// charges of a File left out would be lost to the new process). A File already closed may be among them:
// it is carried as closed (it holds nothing, counts nowhere, and answers ErrClosed as before). accounts
// must hold every Account a carried File is charged to; an Account with no File may be carried too.
//
// The caller guarantees that no operation on the pool, its files or accounts runs meanwhile (the daemon is
// frozen). The descriptors stay the pool's: Export neither dups nor closes them; the caller sends them.
// Export changes nothing: after a refused take-over the pool goes on as before.
func (p *Pool) Export(files []*File, accounts []*Account) (PoolState, []Descriptor, error) {
	st := PoolState{
		MaxSize:              p.cfg.MaxSize,
		MemoryCap:            p.cfg.MemoryCap,
		DiskCap:              p.cfg.DiskCap,
		RAMCap:               p.memoryCap.Load(),
		CopyRangeUnsupported: p.copyRangeUnsupported.Load(),
		FiemapUnsupported:    p.fiemapUnsupported.Load(),
		Files:                make([]FileState, len(files)),
		Accounts:             make([]AccountState, len(accounts)),
	}
	storeState, descs, err := p.cfg.Store.export()
	if err != nil {
		return PoolState{}, nil, err
	}
	st.Store = storeState

	accountIndex := make(map[*Account]int, len(accounts))
	for j, a := range accounts {
		switch _, dup := accountIndex[a]; {
		case a == nil:
			return PoolState{}, nil, fmt.Errorf("spool: export: account %d is nil", j)
		case a.pool != p:
			return PoolState{}, nil, fmt.Errorf("spool: export: account %d is another pool's", j)
		case dup:
			return PoolState{}, nil, fmt.Errorf("spool: export: account %d is given twice", j)
		}
		accountIndex[a] = j
	}

	seen := make(map[*File]struct{}, len(files))
	chunkIndex := map[*arenaChunk]int{}
	var chunks []*arenaChunk
	chunkFiles := map[*arenaChunk]int{}
	var live int64
	for i, f := range files {
		switch _, dup := seen[f]; {
		case f == nil:
			return PoolState{}, nil, fmt.Errorf("spool: export: file %d is nil", i)
		case f.pool != p:
			return PoolState{}, nil, fmt.Errorf("spool: export: file %d is another pool's", i)
		case dup:
			return PoolState{}, nil, fmt.Errorf("spool: export: file %d is given twice", i)
		}
		seen[f] = struct{}{}
		fs, chunk, desc, err := f.export(accountIndex)
		if err != nil {
			return PoolState{}, nil, fmt.Errorf("spool: export: file %d: %w", i, err)
		}
		if fs.Where != WhereClosed {
			live++
		}
		if chunk != nil {
			c, ok := chunkIndex[chunk]
			if !ok {
				c = len(chunks)
				chunkIndex[chunk] = c
				chunks = append(chunks, chunk)
				descs = append(descs, Descriptor{Name: chunkDescName(chunk.id), FD: chunk.fd})
			}
			fs.Chunk = c
			chunkFiles[chunk]++
		}
		if desc.Name != "" {
			descs = append(descs, desc)
		}
		st.Files[i] = fs
	}

	p.mu.Lock()
	st.Counters = p.countersLocked()
	for j, a := range accounts {
		st.Accounts[j] = AccountState{Limit: a.limit, Used: a.used}
	}
	p.mu.Unlock()
	st.DescriptorLimitLogged = p.descriptorLimitLogged.Load()
	if live != st.Counters.Files {
		return PoolState{}, nil, fmt.Errorf("spool: export: the pool has %d live files and %d were given: every live file must be", st.Counters.Files, live)
	}

	p.arena.mu.Lock()
	st.Counters.ArenaMemfds = p.arena.chunks
	st.Chunks = make([]ChunkState, len(chunks))
	for c, ch := range chunks {
		if ch.used != chunkFiles[ch] {
			p.arena.mu.Unlock()
			return PoolState{}, nil, fmt.Errorf("spool: export: an arena chunk has %d files and %d were given", ch.used, chunkFiles[ch])
		}
		st.Chunks[c] = ChunkState{
			FD:       chunkDescName(ch.id),
			ID:       ch.id,
			SlotSize: p.arena.classes[ch.class].slotSize,
			Next:     ch.next,
			Free:     append([]uint32(nil), ch.free...),
		}
	}
	p.arena.mu.Unlock()
	if int64(len(chunks)) != st.Counters.ArenaMemfds {
		return PoolState{}, nil, fmt.Errorf("spool: export: the arena has %d memfds and the files given use %d", st.Counters.ArenaMemfds, len(chunks))
	}
	// Read last: every id handed out above is at most this.
	st.LastDescriptorID = p.lastDescriptorID.Load()
	return st, descs, nil
}

// export describes f: its state, its arena chunk (nil if none; the caller fills in FileState.Chunk) and
// its own descriptor (Name "" if none).
func (f *File) export(accountIndex map[*Account]int) (FileState, *arenaChunk, Descriptor, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fs := FileState{Size: f.size, Account: -1, Chunk: -1}
	f.syncMu.Lock()
	fs.SyncSeq = uint64(f.syncSeq)
	if f.syncErr != nil {
		var errno syscall.Errno
		if !errors.As(f.syncErr, &errno) {
			errno = syscall.EIO // syncRange answers errnos only; a stranger is a writeback error all the same
		}
		fs.SyncErrno = int(errno)
	}
	f.syncMu.Unlock()

	var chunk *arenaChunk
	var desc Descriptor
	switch place := f.place.(type) {
	case emptyFile:
		fs.Where = WhereEmpty
		if f.closed {
			fs.Where, fs.ClosedOnDisk = WhereClosed, f.tier == Disk
		}
	case *arenaFile:
		fs.Where = WhereArena
		chunk = place.slot.chunk
		fs.SlotOffset = place.slot.off
		fs.FallocPages = place.fallocPages
		fs.Pages = place.pages.Load()
	case *memfdFile:
		fs.Where, fs.FD, fs.ID = WhereMemfd, memfdDescName(place.id), place.id
		desc = Descriptor{Name: fs.FD, FD: place.fd}
	case *diskFile:
		fs.Where, fs.FD, fs.ID = WhereDisk, diskDescName(place.id), place.id
		desc = Descriptor{Name: fs.FD, FD: place.fd}
	case *passthroughFile:
		fs.Where, fs.FD, fs.ID = WherePassthrough, diskDescName(place.id), place.id
		desc = Descriptor{Name: fs.FD, FD: place.fd}
		// The backing file is the truth for the size; read it without touching the counters (Export
		// changes nothing): the new process brings them up to date when it next looks, as this one would.
		var st unix.Stat_t
		if err := fstat(place.fd, &st); err != nil {
			return FileState{}, nil, Descriptor{}, fmt.Errorf("fstat of a passthrough file: %w", err)
		}
		fs.Size = st.Size
	default:
		return FileState{}, nil, Descriptor{}, fmt.Errorf("placement %T", f.place)
	}
	if f.closed && fs.Where != WhereClosed {
		return FileState{}, nil, Descriptor{}, fmt.Errorf("closed, yet its bytes are in a %s", fs.Where)
	}

	p := f.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	fs.Accounted = f.accounted
	if a := f.account; a != nil {
		j, ok := accountIndex[a]
		if !ok {
			return FileState{}, nil, Descriptor{}, errors.New("charged to an account that was not given")
		}
		fs.Account = j
	}
	return fs, chunk, desc, nil
}

// export describes the store and names its descriptors.
func (s *Store) export() (StoreState, []Descriptor, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return StoreState{}, nil, fmt.Errorf("spool: export: the store is closed: %w", ErrClosed)
	}
	st := StoreState{
		Parent:             s.parent,
		Path:               s.path,
		Name:               s.name,
		Generation:         s.generation,
		LastError:          s.lastError,
		TmpfileUnsupported: s.tmpfileUnsupported.Load(),
		Dir:                descStoreDir,
		Lock:               descStoreLock,
		ParentDir:          descStoreParent,
	}
	return st, []Descriptor{
		{Name: descStoreDir, FD: s.dirFd},
		{Name: descStoreLock, FD: s.lockFd},
		{Name: descStoreParent, FD: s.parentFd},
	}, nil
}

// ImportPool builds a pool from a state and its descriptors (by name, as received), with log for the pool's
// and its store's log lines (nil: slog.Default()). It returns the files and accounts in the state's order:
// files[i] is st.Files[i], accounts[j] is st.Accounts[j]. The pool uses the store's directory through the
// descriptor received, and Close of that Store (Config().Store) removes it at the end, as in the old process.
//
// Descriptors: ImportPool takes every descriptor the state names out of fds (deletes its entry), whether it
// succeeds or fails. On success the pool owns them (its files, arena and store close them); on failure
// ImportPool has closed them. It never touches the entries the state does not name: those stay in fds,
// the caller's (the FUSE connection's, say).
//
// It checks what it can, and fails with a clear error otherwise: every named descriptor present, each a
// different descriptor; the store directory a 0700 directory of ours whose ".lock" is the lock descriptor
// and whose flock that descriptor holds; arena chunks memfds of the arena's size, each slot held by one
// file at most; files' memfds and backing files (unlinked regular files) of the state's size, with the
// allocation the state charges them (memfd pages, backing file data blocks; a passthrough file's is taken
// as carried, since the kernel may write it meanwhile); and every counter that follows from the files, and
// every account's used bytes, recomputed equal to what the state says. It writes nothing to the
// descriptors, so the process that exported them can go on if this one refuses.
//
// The new pool's Stats equal the old one's at the export; none of its fields is per-process. What is not
// carried: the recycled copy buffers, and the order of the arena's lists of chunks with free slots (a new
// file may get another free slot than it would have in the old process).
func ImportPool(st PoolState, fds map[string]int, log *slog.Logger) (*Pool, []*File, []*Account, error) {
	return importPoolTaking(st, fds, log, false)
}

// importPoolTaking is ImportPool; recovered: the state comes from a crash record (see ImportRecoveredPool).
func importPoolTaking(st PoolState, fds map[string]int, log *slog.Logger, recovered bool) (*Pool, []*File, []*Account, error) {
	if log == nil {
		log = slog.Default()
	}
	names := st.descriptorNames()
	taken := make(map[string]int, len(names))
	var missing []string
	for _, name := range names {
		fd, ok := fds[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		taken[name] = fd
		delete(fds, name)
	}
	fail := func(err error) (*Pool, []*File, []*Account, error) {
		closed := make(map[int]bool, len(taken))
		for _, fd := range taken {
			if fd >= 0 && !closed[fd] {
				closed[fd] = true
				unix.Close(fd)
			}
		}
		return nil, nil, nil, err
	}
	if len(missing) > 0 {
		shown := missing
		if len(shown) > 5 {
			shown = shown[:5]
		}
		return fail(fmt.Errorf("spool: import: %d of the %d descriptors the state names were not received (%s)",
			len(missing), len(names), strings.Join(shown, ", ")))
	}
	byFd := make(map[int]string, len(taken))
	for _, name := range names {
		fd := taken[name]
		if other, dup := byFd[fd]; dup || fd < 0 {
			return fail(fmt.Errorf("spool: import: descriptor %s is %d, as is %q", name, fd, other))
		}
		byFd[fd] = name
	}
	p, files, accounts, err := importPool(st, taken, log, recovered)
	if err != nil {
		return fail(fmt.Errorf("spool: import: %w", err))
	}
	return p, files, accounts, nil
}

// descriptorNames lists, once each and sorted, the names of the descriptors the state refers to.
func (st *PoolState) descriptorNames() []string {
	set := map[string]struct{}{}
	add := func(name string) {
		if name != "" {
			set[name] = struct{}{}
		}
	}
	add(st.Store.Dir)
	add(st.Store.Lock)
	add(st.Store.ParentDir)
	for _, c := range st.Chunks {
		add(c.FD)
	}
	for _, f := range st.Files {
		add(f.FD)
	}
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// importPool is ImportPool once the descriptors are taken: it owns none of them until it succeeds.
func importPool(st PoolState, fds map[string]int, log *slog.Logger, recovered bool) (*Pool, []*File, []*Account, error) {
	store, err := importStore(st.Store, fds, log)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := NewPool(Config{MaxSize: st.MaxSize, MemoryCap: st.MemoryCap, DiskCap: st.DiskCap, Store: store, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
	if st.RAMCap <= 0 {
		return nil, nil, nil, fmt.Errorf("the memory cap in force is %d", st.RAMCap)
	}
	p.memoryCap.Store(st.RAMCap)
	p.lastDescriptorID.Store(st.LastDescriptorID)
	p.copyRangeUnsupported.Store(st.CopyRangeUnsupported)
	p.fiemapUnsupported.Store(st.FiemapUnsupported)
	p.descriptorLimitLogged.Store(st.DescriptorLimitLogged)
	p.descriptorLimitHits.Store(st.Counters.DescriptorLimitHits)
	ids := map[uint64]bool{}
	newID := func(id uint64) error {
		switch {
		case id == 0 || id > st.LastDescriptorID:
			return fmt.Errorf("descriptor id %d is not in 1..%d", id, st.LastDescriptorID)
		case ids[id]:
			return fmt.Errorf("descriptor id %d is given twice", id)
		}
		ids[id] = true
		return nil
	}

	chunks := make([]importedChunk, len(st.Chunks))
	for c, cs := range st.Chunks {
		ch, err := p.importChunk(cs, fds[cs.FD])
		if err == nil {
			err = newID(cs.ID)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("arena chunk %d (%s): %w", c, cs.FD, err)
		}
		chunks[c] = ch
	}

	accounts := make([]*Account, len(st.Accounts))
	for j, as := range st.Accounts {
		if as.Limit < 0 {
			return nil, nil, nil, fmt.Errorf("account %d has limit %d", j, as.Limit)
		}
		accounts[j] = p.NewAccount(as.Limit)
	}

	// The counters, recomputed from the files.
	var got PoolCounters
	files := make([]*File, len(st.Files))
	for i, fs := range st.Files {
		f, err := p.importFile(fs, fds[fs.FD], chunks, accounts, recovered)
		if err == nil && fs.FD != "" {
			err = newID(fs.ID)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("file %d (%s): %w", i, fs.Where, err)
		}
		files[i] = f
		if f.closed {
			continue
		}
		got.Files++
		switch f.place.(type) {
		case *arenaFile:
			got.ArenaFiles++
		case *memfdFile:
			got.OwnMemfds++
		}
		if f.tier == Disk {
			got.DiskFiles++
			got.DiskBytes += f.accounted
			if _, ok := f.place.(*passthroughFile); ok {
				p.noteExternal(f, true)
			}
			continue
		}
		got.MemoryFiles++
		got.RAMBytes += f.accounted
		if f.accounted > 0 {
			f.heapIndex = len(p.ramFiles)
			p.ramFiles = append(p.ramFiles, f)
		}
	}
	heap.Init(&p.ramFiles)

	for c, imported := range chunks {
		ch := imported.chunk
		if ch.used == 0 {
			return nil, nil, nil, fmt.Errorf("arena chunk %d (%s) holds no file", c, st.Chunks[c].FD)
		}
		if !ch.full(p.arena.classes[ch.class].slotSize) {
			ch.listed = true
			p.arena.classes[ch.class].open = append(p.arena.classes[ch.class].open, ch)
		}
	}
	p.arena.chunks = int64(len(chunks))
	got.ArenaMemfds = p.arena.chunks

	want := st.Counters
	if recovered {
		// A crash record keeps the files, not these counters: they are what the files make.
		want.Files, want.MemoryFiles, want.DiskFiles = got.Files, got.MemoryFiles, got.DiskFiles
		want.RAMBytes, want.DiskBytes, want.ArenaFiles = got.RAMBytes, got.DiskBytes, got.ArenaFiles
		want.ArenaMemfds, want.OwnMemfds = got.ArenaMemfds, got.OwnMemfds
		want.PeakRAMBytes, want.PeakDiskBytes = max(want.PeakRAMBytes, got.RAMBytes), max(want.PeakDiskBytes, got.DiskBytes)
	}
	for _, c := range []struct {
		what      string
		got, want int64
	}{
		{"live files", got.Files, want.Files},
		{"RAM files", got.MemoryFiles, want.MemoryFiles},
		{"disk files", got.DiskFiles, want.DiskFiles},
		{"RAM bytes", got.RAMBytes, want.RAMBytes},
		{"disk bytes", got.DiskBytes, want.DiskBytes},
		{"arena files", got.ArenaFiles, want.ArenaFiles},
		{"arena memfds", got.ArenaMemfds, want.ArenaMemfds},
		{"files with a memfd of their own", got.OwnMemfds, want.OwnMemfds},
	} {
		if c.got != c.want {
			return nil, nil, nil, fmt.Errorf("the files make %d %s, the state says %d", c.got, c.what, c.want)
		}
	}
	for j, a := range accounts {
		if a.used != st.Accounts[j].Used && !recovered {
			return nil, nil, nil, fmt.Errorf("account %d: its files allocate %d bytes, the state says %d", j, a.used, st.Accounts[j].Used)
		}
	}
	if want.PeakRAMBytes < want.RAMBytes || want.PeakDiskBytes < want.DiskBytes {
		return nil, nil, nil, fmt.Errorf("peaks %d/%d below the bytes now %d/%d", want.PeakRAMBytes, want.PeakDiskBytes, want.RAMBytes, want.DiskBytes)
	}

	p.files, p.memoryFiles, p.diskFiles = got.Files, got.MemoryFiles, got.DiskFiles
	p.ramBytes, p.diskBytes = got.RAMBytes, got.DiskBytes
	p.arenaFiles, p.ownMemfds = got.ArenaFiles, got.OwnMemfds
	p.peakRAMBytes, p.peakDiskBytes = want.PeakRAMBytes, want.PeakDiskBytes
	p.diskWrittenBytes = want.DiskWrittenBytes
	p.rollovers, p.spilledBytes = want.Rollovers, want.SpilledBytes
	return p, files, accounts, nil
}

// importStore makes the Store of st from its descriptors, checking that they are the store directory, its
// lock (holding the flock) and the parent that holds it.
func importStore(st StoreState, fds map[string]int, log *slog.Logger) (*Store, error) {
	dirFd, lockFd, parentFd := fds[st.Dir], fds[st.Lock], fds[st.ParentDir]
	switch {
	case st.Dir == "" || st.Lock == "" || st.ParentDir == "":
		return nil, errors.New("the state names no store directory, lock or parent")
	case st.Generation < 1:
		return nil, fmt.Errorf("store generation %d", st.Generation)
	case st.Parent == "" || st.Name == "" || strings.Contains(st.Name, "/"):
		return nil, fmt.Errorf("store %q in %q", st.Name, st.Parent)
	}
	var dir, lock, parent, named unix.Stat_t
	if err := fstat(dirFd, &dir); err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	euid := uint32(os.Geteuid())
	if dir.Mode&unix.S_IFMT != unix.S_IFDIR || dir.Uid != euid || dir.Mode&0o7777 != 0o700 {
		return nil, fmt.Errorf("store directory is not a 0700 directory of ours (mode %#o, uid %d)", dir.Mode, dir.Uid)
	}
	if err := fstat(parentFd, &parent); err != nil || parent.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("store parent is not a directory (mode %#o, err %v)", parent.Mode, err)
	}
	if err := fstat(lockFd, &lock); err != nil || lock.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("store lock is not a regular file (mode %#o, err %v)", lock.Mode, err)
	}
	if dir.Nlink > 0 { // a store deleted while mounted is made again at the next need, as in the old process
		if err := unix.Fstatat(dirFd, storeLockName, &named, unix.AT_SYMLINK_NOFOLLOW); err != nil || named.Dev != lock.Dev || named.Ino != lock.Ino {
			return nil, fmt.Errorf("the lock descriptor is not the store's %s (err %v)", storeLockName, err)
		}
		if err := unix.Fstatat(parentFd, st.Name, &named, unix.AT_SYMLINK_NOFOLLOW); err != nil || named.Dev != dir.Dev || named.Ino != dir.Ino {
			return nil, fmt.Errorf("the store directory is not %s in its parent's descriptor (err %v)", st.Name, err)
		}
	}
	// The lock belongs to the open file description: the one received holds it already, and this does
	// nothing. Another description of the same file would find it taken (EWOULDBLOCK).
	if err := flock(lockFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("the store lock descriptor does not hold the store's lock: %w", err)
	}
	s := &Store{
		parent:     st.Parent,
		logger:     log,
		path:       st.Path,
		name:       st.Name,
		parentFd:   parentFd,
		dirFd:      dirFd,
		lockFd:     lockFd,
		generation: st.Generation,
		lastError:  st.LastError,
	}
	s.tmpfileUnsupported.Store(st.TmpfileUnsupported)
	return s, nil
}

// importedChunk is an arena chunk being imported, with a bit set in free for each slot on its free list.
type importedChunk struct {
	chunk *arenaChunk
	free  []uint64
}

// importChunk makes an arena chunk of cs on fd, checking that fd is a memfd of the arena's size.
func (p *Pool) importChunk(cs ChunkState, fd int) (importedChunk, error) {
	class := -1
	for i := range p.arena.classes {
		if p.arena.classes[i].slotSize == cs.SlotSize {
			class = i
		}
	}
	if class < 0 {
		return importedChunk{}, fmt.Errorf("no arena class has slots of %d bytes", cs.SlotSize)
	}
	if err := checkMemfd(fd, arenaChunkBytes); err != nil {
		return importedChunk{}, err
	}
	slots := arenaChunkBytes / cs.SlotSize
	if int64(cs.Next) > slots {
		return importedChunk{}, fmt.Errorf("%d slots handed out of %d", cs.Next, slots)
	}
	ch := &arenaChunk{fd: fd, id: cs.ID, class: class, next: cs.Next, inUse: make([]uint64, (slots+63)/64)}
	free := make([]uint64, len(ch.inUse))
	for _, idx := range cs.Free {
		if idx >= cs.Next || free[idx/64]&(1<<(idx%64)) != 0 {
			return importedChunk{}, fmt.Errorf("free slot %d is out of range or listed twice", idx)
		}
		free[idx/64] |= 1 << (idx % 64)
	}
	ch.free = append([]uint32(nil), cs.Free...)
	return importedChunk{chunk: ch, free: free}, nil
}

// checkMemfd checks that fd is a memfd (it answers F_GET_SEALS) of size bytes.
func checkMemfd(fd int, size int64) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err != nil {
		return fmt.Errorf("not a memfd: %w", err)
	}
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		return err
	}
	if st.Size != size {
		return fmt.Errorf("the memfd has %d bytes, the state says %d", st.Size, size)
	}
	return nil
}

// importFile makes the File of fs, on fd if it has one, and charges it to its account.
func (p *Pool) importFile(fs FileState, fd int, chunks []importedChunk, accounts []*Account, recovered bool) (*File, error) {
	f := &File{pool: p, place: noBytes, heapIndex: -1, size: fs.Size, syncSeq: WritebackMark(fs.SyncSeq)}
	if fs.SyncErrno != 0 {
		f.syncErr = mapIOError("writeback", syscall.Errno(fs.SyncErrno))
	}
	switch {
	case fs.Size < 0 || fs.Size > MaxFileSize:
		return nil, fmt.Errorf("size %d", fs.Size)
	case fs.Accounted < 0:
		return nil, fmt.Errorf("accounted %d", fs.Accounted)
	case fs.Account < -1 || fs.Account >= len(accounts):
		return nil, fmt.Errorf("account %d of %d", fs.Account, len(accounts))
	case (fs.FD != "") != (fs.Where == WhereMemfd || fs.Where == WhereDisk || fs.Where == WherePassthrough):
		return nil, fmt.Errorf("descriptor %q", fs.FD)
	case (fs.Chunk >= 0) != (fs.Where == WhereArena):
		return nil, fmt.Errorf("arena chunk %d", fs.Chunk)
	case fs.ClosedOnDisk && fs.Where != WhereClosed:
		return nil, errors.New("closed on disk, yet not closed")
	}
	var st unix.Stat_t
	switch fs.Where {
	case WhereClosed, WhereEmpty:
		if fs.Accounted != 0 || (fs.Where == WhereClosed && fs.Account >= 0) {
			return nil, fmt.Errorf("charged %d bytes to account %d", fs.Accounted, fs.Account)
		}
		if fs.Where == WhereEmpty && fs.Size != 0 {
			return nil, fmt.Errorf("%d bytes and no place for them", fs.Size)
		}
		f.closed = fs.Where == WhereClosed
		if f.closed {
			if fs.ClosedOnDisk {
				f.tier = Disk
			}
			return f, nil
		}
	case WhereArena:
		if fs.Chunk >= len(chunks) {
			return nil, fmt.Errorf("arena chunk %d of %d", fs.Chunk, len(chunks))
		}
		ch := chunks[fs.Chunk].chunk
		slotSize := p.arena.classes[ch.class].slotSize
		idx := fs.SlotOffset / slotSize
		switch {
		case fs.SlotOffset < 0 || fs.SlotOffset%slotSize != 0 || idx >= int64(ch.next):
			return nil, fmt.Errorf("slot at %d: not one handed out of %d slots of %d bytes", fs.SlotOffset, ch.next, slotSize)
		case ch.inUse[idx/64]&(1<<(idx%64)) != 0:
			return nil, fmt.Errorf("slot at %d is another file's too", fs.SlotOffset)
		case fs.Size == 0 || fs.Size > slotSize:
			return nil, fmt.Errorf("%d bytes in a slot of %d", fs.Size, slotSize)
		case fs.Accounted != slotSize:
			return nil, fmt.Errorf("accounted %d for a slot of %d", fs.Accounted, slotSize)
		case fs.Pages < -1 || fs.Pages > 0xffff:
			return nil, fmt.Errorf("pages %#x", fs.Pages)
		}
		if chunks[fs.Chunk].free[idx/64]&(1<<(idx%64)) != 0 {
			return nil, fmt.Errorf("slot at %d is on the free list", fs.SlotOffset)
		}
		ch.inUse[idx/64] |= 1 << (idx % 64)
		ch.used++
		a := &arenaFile{slot: &arenaSlot{chunk: ch, off: fs.SlotOffset, size: slotSize}, fallocPages: fs.FallocPages}
		a.pages.Store(fs.Pages)
		f.place = a
	case WhereMemfd:
		if recovered {
			if err := cutToRecord(fd, fs.Size, &fs.Accounted, func(st *unix.Stat_t) (int64, error) { return st.Blocks * 512, nil }); err != nil {
				return nil, err
			}
		}
		if err := checkMemfd(fd, fs.Size); err != nil {
			return nil, err
		}
		if err := fstat(fd, &st); err != nil {
			return nil, err
		}
		if st.Blocks*512 != fs.Accounted {
			return nil, fmt.Errorf("the memfd allocates %d bytes, the state says %d", st.Blocks*512, fs.Accounted)
		}
		f.place = &memfdFile{ownFd{fd: fd, id: fs.ID}}
	case WhereDisk, WherePassthrough:
		if err := fstat(fd, &st); err != nil {
			return nil, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 0 {
			return nil, fmt.Errorf("not an unlinked regular file (mode %#o, %d links)", st.Mode, st.Nlink)
		}
		f.tier = Disk
		if fs.Where == WherePassthrough {
			// The kernel may write it directly, even now: its size and allocation are what they are, and the
			// pool catches up when it next looks, as the old process would have.
			f.place = &passthroughFile{ownFd{fd: fd, id: fs.ID}}
			break
		}
		if recovered {
			if err := cutToRecord(fd, fs.Size, &fs.Accounted, func(st *unix.Stat_t) (int64, error) { return p.diskAllocation(fd, fs.Size, st) }); err != nil {
				return nil, err
			}
			if err := fstat(fd, &st); err != nil {
				return nil, err
			}
		}
		if st.Size != fs.Size {
			return nil, fmt.Errorf("the backing file has %d bytes, the state says %d", st.Size, fs.Size)
		}
		allocated, err := p.diskAllocation(fd, fs.Size, &st)
		if err != nil {
			return nil, err
		}
		if allocated != fs.Accounted {
			return nil, fmt.Errorf("the backing file allocates %d bytes, the state says %d", allocated, fs.Accounted)
		}
		f.place = &diskFile{ownFd: ownFd{fd: fd, id: fs.ID}}
	default:
		return nil, fmt.Errorf("unknown placement %q", fs.Where)
	}
	f.accounted = fs.Accounted
	if fs.Account >= 0 {
		f.account = accounts[fs.Account]
		f.account.used += f.accounted
	}
	return f, nil
}

// countersLocked are the pool's counters; the caller holds p.mu.
func (p *Pool) countersLocked() PoolCounters {
	return PoolCounters{
		Files:               p.files,
		MemoryFiles:         p.memoryFiles,
		DiskFiles:           p.diskFiles,
		RAMBytes:            p.ramBytes,
		DiskBytes:           p.diskBytes,
		ArenaFiles:          p.arenaFiles,
		OwnMemfds:           p.ownMemfds,
		PeakRAMBytes:        p.peakRAMBytes,
		PeakDiskBytes:       p.peakDiskBytes,
		DiskWrittenBytes:    p.diskWrittenBytes,
		Rollovers:           p.rollovers,
		SpilledBytes:        p.spilledBytes,
		DescriptorLimitHits: p.descriptorLimitHits.Load(),
	}
}
