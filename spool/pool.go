// Package spool owns the bytes of tempfs's regular files, the way Python's SpooledTemporaryFile
// does for one file: a file's data lives in kernel memory (a memfd) until it grows past
// Config.MaxSize, then it is rolled over to an unlinked file in a private disk store. A Pool adds
// what a filesystem of many such files needs: one memory budget for all RAM-resident data (a file
// that would pass it pushes the largest other RAM files to disk first), a cap on disk bytes, and
// the counters that `tempfs status` reports.
//
// Small RAM files (up to ArenaMaxFileSize) share memfds, cut into slots (see arena.go): the number
// of files is then bounded by memory, not by the daemon's descriptors. Larger RAM files have a memfd
// each, and disk files an unlinked backing file each (at least MaxSize or pushed out by the memory
// budget, so they are few). Caps count allocated bytes (holes are free, as on tmpfs), MaxSize the size.
// An Account (account.go) caps the allocated bytes of the files attached to it the same way, inside the
// same operations: the FUSE layer gives each owner one for its quota.
//
// Data is kept in memfds rather than Go slices because file data in the Go heap was measured as
// the slowest option (page faults on fresh anonymous memory), and because a memfd can be copied
// to disk with its holes intact. Both tiers use the same pread/pwrite path on a descriptor.
//
// Lock order (for pool.go and file.go):
//
//	File.mu  →  Pool.mu
//	File.mu  →  arena.mu
//	File.mu  →  Store.mu
//	File.mu  →  File.syncMu (a leaf: the writeback errors Sync collected)
//
// Pool.mu also guards the Accounts' used bytes.
//
// A goroutine takes at most one File.mu by blocking: the File it operates on. While holding it,
// it may take other Files' locks only with TryLock (memory-budget victims, see
// File.reserveRAMLocked), so two writers that want each other's files never wait on each other.
// Pool.mu is a leaf for blocking purposes: nothing blocks while holding it (TryLock never
// blocks), and no I/O larger than a stat is done under it. Functions whose names end in "Locked"
// need the receiver File's mu held for writing, unless their comment says otherwise.
package spool

import (
	"container/heap"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Tier says where a File's bytes live.
type Tier int

const (
	// Memory: in a memfd (or nowhere yet, for an empty file); counted in Stats.RAMBytes.
	Memory Tier = iota
	// Disk: in an unlinked file in the Store; counted in Stats.DiskBytes. Files never come back.
	Disk
)

// String gives the names used by the user.tempfs.spool xattr.
func (t Tier) String() string {
	switch t {
	case Memory:
		return "memory"
	case Disk:
		return "disk"
	}
	return fmt.Sprintf("Tier(%d)", int(t))
}

// MaxFileSize is the largest size, and the largest end offset of a write, truncate or allocate,
// that a File accepts (1 PiB). It refuses nothing real: it is far above any RAM or disk this
// daemon will see, and above ext4's own limit (16 TiB with 4 KiB blocks, which answers EFBIG and
// so ErrTooLarge itself). What it buys is arithmetic safety: once an end offset is checked
// against it, off+len, sizes, and sums of a few thousand sizes in the pool's counters can never
// overflow int64, whatever offsets a client sends.
const MaxFileSize = 1 << 50

// The errors a caller maps to errno values. Each wraps the errno it stands for, so both
// errors.Is(err, ErrNoSpace) and errors.Is(err, syscall.ENOSPC) hold (and errors.As finds it).
var (
	// ErrNoSpace: the disk cap would be passed, or the store's filesystem is full.
	ErrNoSpace = fmt.Errorf("spool: no space left in the disk store: %w", syscall.ENOSPC)
	// ErrTooLarge: an end offset overflows int64 or passes MaxFileSize (or the store's own limit).
	ErrTooLarge = fmt.Errorf("spool: file would be too large: %w", syscall.EFBIG)
	// ErrClosed: the File (or Store) was used after Close.
	ErrClosed = fmt.Errorf("spool: file already closed: %w", syscall.EBADF)

	errInvalid     = fmt.Errorf("spool: invalid argument: %w", syscall.EINVAL)
	errNoData      = fmt.Errorf("spool: no data or hole at or after offset: %w", syscall.ENXIO)
	errUnsupported = fmt.Errorf("spool: fallocate mode not supported: %w", syscall.EOPNOTSUPP)
)

// Config is what a Pool is built from; see NewPool for the rules.
type Config struct {
	// MaxSize: a file rolls over to disk once its size would exceed it; 0 means never by size
	// (as Python's max_size=0). The memory budget can still move a file to disk.
	MaxSize int64
	// MemoryCap caps the bytes allocated to all RAM-resident files together (a small file's arena
	// slot, a larger file's memfd pages; holes are free); must be > 0.
	MemoryCap int64
	// DiskCap caps the bytes allocated to all disk-resident files together (the data blocks of their
	// backing files, see Pool.diskAllocation: holes and the filesystem's metadata are free); 0 means no
	// cap beyond the store's free space.
	DiskCap int64
	// Store is the private directory that holds rolled-over files; required.
	Store *Store
	// Logger receives rollover events (Debug) and unexpected failures (Warn); nil means
	// slog.Default().
	Logger *slog.Logger
}

// Stats is a consistent snapshot of a Pool's counters.
type Stats struct {
	// Files, MemoryFiles, DiskFiles count live (not closed) files, in all and by tier.
	Files, MemoryFiles, DiskFiles int64
	// RAMBytes is the bytes allocated to Memory-tier files: a small file's arena slot, a larger
	// file's memfd pages (holes are free, as on tmpfs); RAMCap is the cap in force (Config.MemoryCap, or
	// what SetMemoryCap set since); PeakRAMBytes is
	// the highest RAMBytes seen.
	RAMBytes, RAMCap, PeakRAMBytes int64
	// DiskBytes is the bytes allocated to Disk-tier files (their backing files' data blocks, see
	// Pool.diskAllocation: `du` may show a few KiB more, the filesystem's metadata); DiskCap is
	// Config.DiskCap; PeakDiskBytes is the highest DiskBytes seen. A file whose backing fd the kernel
	// writes directly (passthrough, see File.NoteExternalWrite) counts its st_blocks, which the daemon
	// learns only when it next looks (Stat, Size, a write, Close), so DiskBytes may lag until then. The FUSE layer uses passthrough only when DiskCap is 0, so the cap itself is
	// always exact.
	DiskBytes, DiskCap, PeakDiskBytes int64
	// Rollovers counts files moved to disk; SpilledBytes counts the data bytes they copied
	// (holes are not copied).
	Rollovers    int64
	SpilledBytes int64
	// DiskWrittenBytes is every byte that went to disk: rollover copies, writes through the daemon to
	// disk files, and growth of passthrough files' allocation seen since (a lower bound for those).
	DiskWrittenBytes int64
	// ArenaFiles counts Memory-tier files in the small-file arena, ArenaMemfds its shared memfds.
	ArenaFiles, ArenaMemfds int64
	// Descriptors counts the descriptors the pool holds: arena memfds, memfds of larger RAM files and
	// backing files of disk files.
	Descriptors int64
	// DescriptorLimitHits counts operations refused with ErrNoSpace because the daemon could not make a
	// descriptor (EMFILE, ENFILE).
	DescriptorLimitHits int64
	// StoreRecreated counts store directories made again after the store was deleted or became
	// unusable while mounted; StoreError is the last failure to make a backing file there ("" once one
	// succeeds again).
	StoreRecreated int64
	StoreError     string
}

// Pool is the set of Files that share one memory budget, one disk cap and one Store.
// All its methods are safe for concurrent use.
type Pool struct {
	cfg Config
	log *slog.Logger
	// watcher learns of descriptors made and closed (watch.go); nil for none.
	watcher Watcher

	// copyRangeUnsupported remembers that copy_file_range refused memfd → store copies
	// (cross-filesystem copies answer EXDEV on current kernels), so rollovers go straight to
	// pread/pwrite.
	copyRangeUnsupported atomic.Bool
	// fiemapUnsupported remembers that the store's filesystem has no FIEMAP (tmpfs), so that disk
	// allocation is st_blocks (see diskAllocation).
	fiemapUnsupported atomic.Bool
	// measuredExtents counts the extents FIEMAP has read, for tests that check that an operation
	// measures its own range only.
	measuredExtents atomic.Int64
	// copyBuffers recycles the 1 MiB buffers of the pread/pwrite copy, so that a rollover does
	// not fault in fresh memory each time.
	copyBuffers sync.Pool

	arena arena

	// memoryCap is the memory budget in force: Config.MemoryCap until SetMemoryCap moves it.
	memoryCap atomic.Int64

	descriptorLimitHits   atomic.Int64
	descriptorLimitLogged atomic.Bool

	// lastDescriptorID is the last id given to a descriptor the pool made (newDescriptorID).
	lastDescriptorID atomic.Uint64

	mu sync.Mutex
	// The counters behind Stats; each File's share is File.accounted.
	files, memoryFiles, diskFiles int64
	ramBytes, peakRAMBytes        int64
	diskBytes, peakDiskBytes      int64
	diskWrittenBytes              int64
	arenaFiles                    int64
	ownMemfds                     int64 // Memory-tier files with a memfd of their own
	// external holds the files whose backing fd the kernel may write directly, so that
	// RefreshExternal can bring DiskBytes up to date without waiting for a request on each.
	external                map[*File]struct{}
	rollovers, spilledBytes int64
	// ramFiles holds the non-empty Memory-tier files as a max-heap by accounted size, so the
	// memory budget finds its largest victims without scanning a million files.
	ramFiles fileHeap
}

// NewPool checks cfg and makes an empty pool.
func NewPool(cfg Config) (*Pool, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("spool: Config.Store is required")
	case cfg.MemoryCap <= 0:
		return nil, fmt.Errorf("spool: Config.MemoryCap must be > 0, got %d", cfg.MemoryCap)
	case cfg.MaxSize < 0:
		return nil, fmt.Errorf("spool: Config.MaxSize must be >= 0, got %d", cfg.MaxSize)
	case cfg.DiskCap < 0:
		return nil, fmt.Errorf("spool: Config.DiskCap must be >= 0, got %d", cfg.DiskCap)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pool{cfg: cfg, log: log}
	p.memoryCap.Store(cfg.MemoryCap)
	p.arena.init(p)
	return p, nil
}

// SetMemoryCap moves the memory budget while the pool is in use: the daemon's memory limit was lowered (or
// raised) under it. A lower cap than the RAM files hold rolls the largest of them over to disk until they
// fit, as a write over the cap would; files busy right now are skipped and the rest reported in the error,
// for the caller to try again (ShrinkToCap). A raised cap lets files that come later stay in RAM; files
// already on disk stay there.
func (p *Pool) SetMemoryCap(size int64) error {
	if size <= 0 {
		return fmt.Errorf("spool: memory cap must be > 0, got %d: %w", size, errInvalid)
	}
	p.memoryCap.Store(size)
	return p.ShrinkToCap()
}

// ShrinkToCap rolls RAM files over to disk, largest first, until they fit the memory cap in force. It fails
// when RAM is still over the cap: the disk refused a file, or every file left was busy.
func (p *Pool) ShrinkToCap() error {
	for {
		p.mu.Lock()
		over := p.ramBytes - p.memoryCap.Load()
		if over <= 0 {
			p.mu.Unlock()
			return nil
		}
		victim := p.lockLargestVictim(nil)
		p.mu.Unlock()
		if victim == nil {
			return fmt.Errorf("spool: RAM files hold %d bytes over the memory cap, and none could be moved now", over)
		}
		err := victim.rolloverLocked(victim.ramDataBoundLocked(), "memory cap lowered", false)
		if err == nil {
			victim.refreshAllocationLocked()
		}
		victim.mu.Unlock()
		if err != nil {
			return fmt.Errorf("spool: RAM files hold %d bytes over the memory cap: %w", over, err)
		}
	}
}

// Config returns the configuration the pool was built with.
func (p *Pool) Config() Config { return p.cfg }

// NewFile returns an empty Memory-tier file. It holds no descriptor until it first grows, so a
// million empty files cost only their structs.
func (p *Pool) NewFile() *File {
	f := &File{pool: p, place: noBytes, heapIndex: -1}
	p.mu.Lock()
	p.files++
	p.memoryFiles++
	p.mu.Unlock()
	return f
}

// Stats returns a snapshot of the counters, taken under one lock so that they agree.
func (p *Pool) Stats() Stats {
	memfds := p.arena.chunkCount()
	recreated, storeErr := p.cfg.Store.health()
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Files:               p.files,
		MemoryFiles:         p.memoryFiles,
		DiskFiles:           p.diskFiles,
		RAMBytes:            p.ramBytes,
		RAMCap:              p.memoryCap.Load(),
		PeakRAMBytes:        p.peakRAMBytes,
		DiskBytes:           p.diskBytes,
		DiskCap:             p.cfg.DiskCap,
		PeakDiskBytes:       p.peakDiskBytes,
		Rollovers:           p.rollovers,
		SpilledBytes:        p.spilledBytes,
		DiskWrittenBytes:    p.diskWrittenBytes,
		ArenaFiles:          p.arenaFiles,
		ArenaMemfds:         memfds,
		Descriptors:         memfds + p.ownMemfds + p.diskFiles,
		DescriptorLimitHits: p.descriptorLimitHits.Load(),
		StoreRecreated:      recreated,
		StoreError:          storeErr,
	}
}

// newDescriptorID names a descriptor the pool makes (an arena chunk, a file's memfd or backing file) for
// as long as the pool lives, also in the process that takes it over (Export, ImportPool): a name is
// never given to another descriptor, so a receiver that was sent a pool's descriptors ahead of a
// hand-over knows which of them it still needs.
func (p *Pool) newDescriptorID() uint64 { return p.lastDescriptorID.Add(1) }

// descriptorError is the error for a descriptor the pool could not make (memfd_create, a backing file).
// When the cause is a descriptor limit (EMFILE: the daemon's table is full, ENFILE: the system's), the
// operation fails with ErrNoSpace, as tmpfs does when it runs out of inodes: EMFILE would tell the
// client that its own table is full. The first such refusal is logged with its cause; all are counted.
func (p *Pool) descriptorError(what string, err error) error {
	if err != unix.EMFILE && err != unix.ENFILE {
		return mapIOError(what, err)
	}
	p.descriptorLimitHits.Add(1)
	if p.descriptorLimitLogged.CompareAndSwap(false, true) {
		var lim unix.Rlimit
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		p.log.Error("spool: out of descriptors: files that need one more (RAM files over the arena size, disk files) get ENOSPC; raise the daemon's RLIMIT_NOFILE (logged once, counted in status)",
			"op", what, "err", err, "nofile_soft", lim.Cur, "nofile_hard", lim.Max)
	}
	return fmt.Errorf("spool: %s: %v: %w", what, err, ErrNoSpace)
}

// setAccounted moves f's share of its tier's counter, and its account's charge, to size, keeping the heap
// of RAM files in order. It needs p.mu held (and f's tier stable, which f.mu guarantees). It checks no cap:
// callers that grow a file check them first, under the same hold of p.mu.
func (p *Pool) setAccounted(f *File, size int64) {
	delta := size - f.accounted
	f.accounted = size
	if f.account != nil {
		f.account.used += delta
	}
	if f.tier == Disk {
		p.diskBytes += delta
		if p.diskBytes > p.peakDiskBytes {
			p.peakDiskBytes = p.diskBytes
		}
		return
	}
	p.ramBytes += delta
	if p.ramBytes > p.peakRAMBytes {
		p.peakRAMBytes = p.ramBytes
	}
	switch {
	case f.heapIndex < 0 && size > 0:
		heap.Push(&p.ramFiles, f)
	case f.heapIndex >= 0 && size == 0:
		heap.Remove(&p.ramFiles, f.heapIndex)
	case f.heapIndex >= 0:
		heap.Fix(&p.ramFiles, f.heapIndex)
	}
}

// account is setAccounted under p.mu; f.mu must be held.
func (p *Pool) account(f *File, size int64) {
	p.mu.Lock()
	p.setAccounted(f, size)
	p.mu.Unlock()
}

// accountExternal sets a passthrough file's disk share to what its backing file allocates now; growth
// seen this way was written by the kernel behind the daemon's back, and counts as written to disk.
// f.mu is held, possibly for reading only: pool.mu guards accounted.
func (p *Pool) accountExternal(f *File, allocated int64) {
	p.mu.Lock()
	if f.tier == Disk {
		if grown := allocated - f.accounted; grown > 0 {
			p.diskWrittenBytes += grown
		}
		p.setAccounted(f, allocated)
	}
	p.mu.Unlock()
}

// diskAllocation is what the disk cap counts for a backing file of the given size: the bytes of its data
// blocks below the end of its last page (diskDataIn). Where the store has no FIEMAP (tmpfs, whose
// st_blocks counts data pages only), or FIEMAP fails, it is st_blocks × 512 (st when the caller has
// it, else an fstat, whose failure is the error). A passthrough file is counted by st_blocks, from the
// fstat that tells its size: it is never under a disk cap, and FIEMAP at every getattr would cost too
// much for a file of many extents.
func (p *Pool) diskAllocation(fd int, size int64, st *unix.Stat_t) (int64, error) {
	if data, ok := p.diskDataIn(fd, 0, roundUpPage(size)); ok {
		return data, nil
	}
	if st == nil {
		st = new(unix.Stat_t)
		if err := fstat(fd, st); err != nil {
			return 0, err
		}
	}
	return st.Blocks * 512, nil
}

// diskDataIn is the bytes of [from, to) that a backing file allocates to data (fiemapDataBytes), or
// false where FIEMAP cannot tell. Not st_blocks, which also counts the store filesystem's metadata:
// ext4 allocates an extent tree block when a write, fallocate or punched hole leaves a file with more
// than four extents, or at writeback seconds later, so st_blocks can grow past what the daemon
// reserved under the cap, and change while nobody touches the file. Data blocks change only by what
// the daemon does. Callers leave out blocks past the size: reads never see them, and some filesystems
// preallocate there while a file grows (XFS) and trim it later.
func (p *Pool) diskDataIn(fd int, from, to int64) (int64, bool) {
	if p.fiemapUnsupported.Load() {
		return 0, false
	}
	data, extents, err := fiemapDataBytes(fd, from, to)
	p.measuredExtents.Add(int64(extents))
	switch {
	case err == nil:
		return data, true
	case err == unix.EOPNOTSUPP || err == unix.ENOTTY || err == unix.ENOSYS || err == unix.EINVAL:
		p.fiemapUnsupported.Store(true)
	default:
		p.log.Warn("spool: FIEMAP of a backing file failed; counting its st_blocks", "err", err)
	}
	return 0, false
}

// roomFor reports whether f's RAM share can grow to need bytes as they are now: RAM has that many bytes
// free (counting f's own share as taken) and f's account has room for the growth.
func (p *Pool) roomFor(f *File, need int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return need <= p.memoryCap.Load()-p.ramBytes && f.account.hasRoomLocked(need-f.accounted)
}

// addDiskWritten counts bytes written to disk through the daemon.
func (p *Pool) addDiskWritten(n int64) {
	p.mu.Lock()
	p.diskWrittenBytes += n
	p.mu.Unlock()
}

// noteOwnMemfds counts memfds of larger RAM files made (+1) or closed (-1).
func (p *Pool) noteOwnMemfds(delta int64) {
	p.mu.Lock()
	p.ownMemfds += delta
	p.mu.Unlock()
}

// noteExternal adds f to (or removes it from) the files RefreshExternal looks at.
func (p *Pool) noteExternal(f *File, external bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !external {
		delete(p.external, f)
		return
	}
	if p.external == nil {
		p.external = map[*File]struct{}{}
	}
	p.external[f] = struct{}{}
}

// RefreshExternal brings DiskBytes up to date with the files the kernel writes by passthrough (their
// backing files' st_blocks), for a status or statfs that must not lag behind those writes.
func (p *Pool) RefreshExternal() {
	p.mu.Lock()
	files := make([]*File, 0, len(p.external))
	for f := range p.external {
		files = append(files, f)
	}
	p.mu.Unlock()
	for _, f := range files { // File.mu before Pool.mu: never under p.mu
		f.Refresh()
	}
}

// noteArenaFiles counts files entering (+1) or leaving (-1) the arena.
func (p *Pool) noteArenaFiles(delta int64) {
	p.mu.Lock()
	p.arenaFiles += delta
	p.mu.Unlock()
}

// reserveDisk grows f's disk share to size if that fits f's account (else ErrOverQuota) and DiskCap (else
// ErrNoSpace). f is Disk-tier, f.mu held.
func (p *Pool) reserveDisk(f *File, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.accountRoomLocked(f, size); err != nil {
		return err
	}
	if p.cfg.DiskCap > 0 && size-f.accounted > p.cfg.DiskCap-p.diskBytes {
		return fmt.Errorf("spool: disk cap %d reached: %w", p.cfg.DiskCap, ErrNoSpace)
	}
	p.setAccounted(f, size)
	return nil
}

// accountRoomLocked answers ErrOverQuota when growing f's allocated bytes to size would take its account past
// the limit. p.mu is held.
func (p *Pool) accountRoomLocked(f *File, size int64) error {
	if a := f.account; !a.hasRoomLocked(size - f.accounted) {
		return fmt.Errorf("spool: %d bytes more in an account of %d of %d: %w", size-f.accounted, a.used, a.limit, ErrOverQuota)
	}
	return nil
}

// sizeFitsAccount answers ErrOverQuota when f's account has no room for f grown to size bytes, all of them
// allocated: a truncate up allocates nothing, but a file its owner's quota could never hold full is refused
// when it is made that large, not at some later write. f.mu is held by the caller.
func (p *Pool) sizeFitsAccount(f *File, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !f.account.hasRoomLocked(size - f.accounted) {
		return fmt.Errorf("spool: a file of %d bytes in an account of %d of %d: %w", size, f.account.used, f.account.limit, ErrOverQuota)
	}
	return nil
}

// maxVictimTries bounds how many busy files the budget skips before it gives up on others and
// moves the writing file itself, so a pool whose large files are all in use cannot stall a write.
const maxVictimTries = 64

// lockLargestVictim returns the largest non-empty Memory-tier file other than self whose lock it
// could take without waiting (busy files are skipped), locked for writing; or nil. It walks the
// heap best-first without changing it. p.mu must be held; self.mu is held by the caller.
func (p *Pool) lockLargestVictim(self *File) *File {
	h := p.ramFiles
	if len(h) == 0 {
		return nil
	}
	frontier := []int{0}
	for tries := 0; len(frontier) > 0 && tries < maxVictimTries; {
		best := 0
		for i := range frontier {
			if h[frontier[i]].accounted > h[frontier[best]].accounted {
				best = i
			}
		}
		idx := frontier[best]
		frontier[best] = frontier[len(frontier)-1]
		frontier = frontier[:len(frontier)-1]
		for _, child := range [2]int{2*idx + 1, 2*idx + 2} {
			if child < len(h) {
				frontier = append(frontier, child)
			}
		}
		candidate := h[idx]
		if candidate == self {
			continue
		}
		tries++
		if candidate.mu.TryLock() {
			return candidate
		}
	}
	return nil
}

// fileHeap is a max-heap of Memory-tier files by accounted size; each File knows its index.
type fileHeap []*File

func (h fileHeap) Len() int           { return len(h) }
func (h fileHeap) Less(i, j int) bool { return h[i].accounted > h[j].accounted }
func (h fileHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *fileHeap) Push(x any) {
	f := x.(*File)
	f.heapIndex = len(*h)
	*h = append(*h, f)
}
func (h *fileHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	f.heapIndex = -1
	return f
}
