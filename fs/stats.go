package fs

import (
	"encoding/json"
	"math"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/spool"
)

// Stats is what `tempfs status` shows; the JSON names are part of what users rely on (docs/guarantees.md, The command line).
type Stats struct {
	Entries         int64 `json:"entries"`
	Files           int64 `json:"files"`
	Dirs            int64 `json:"dirs"`
	Others          int64 `json:"others"`
	EphemeralFiles  int64 `json:"ephemeral_files"`
	TemplateEntries int64 `json:"template_entries"`
	EntriesCreated  int64 `json:"entries_created"`
	OpenHandles     int64 `json:"open_handles"`
	RAMBytes        int64 `json:"ram_bytes"`
	RAMCap          int64 `json:"ram_cap"`
	PeakRAMBytes    int64 `json:"peak_ram_bytes"`
	DiskBytes       int64 `json:"disk_bytes"`
	DiskCap         Cap   `json:"disk_cap"`
	MemoryFiles     int64 `json:"memory_files"`
	DiskFiles       int64 `json:"disk_files"`
	Rollovers       int64 `json:"rollovers"`
	SpilledBytes    int64 `json:"spilled_bytes"`
	BytesWritten    int64 `json:"bytes_written"`
	Passthrough     bool  `json:"passthrough"`
	// Log says where the daemon's log goes: a file, the journal, syslog, stderr.
	Log string `json:"log,omitempty"`
	// PassthroughOff says why passthrough was off from the start (a user's mount, a store on FUSE).
	PassthroughOff string `json:"passthrough_off,omitempty"`
	// PassthroughOpens counts the opens the kernel served from the backing file directly.
	PassthroughOpens int64   `json:"passthrough_opens"`
	DirectWrites     bool    `json:"direct_writes"`
	MaxSize          int64   `json:"max_size"`
	Store            string  `json:"store"`
	UptimeSeconds    float64 `json:"uptime_seconds"`
	// Activity adds bytes read, names removed by cause and FUSE requests by opcode.
	Activity
	// Owners (--owner): the scope, the owners alive now, those gone since the start, the entries removed
	// with their owner (files, directories and other nodes, each once however many hard links it had), and
	// the names removed with them (Removed["owner_gone"]: a file with three links counts three).
	OwnerScope              string `json:"owner_scope"`
	OwnersLive              int64  `json:"owners_live"`
	OwnersGone              int64  `json:"owners_gone"`
	EntriesRemovedWithOwner int64  `json:"entries_removed_with_owner"`
	NamesRemovedWithOwner   int64  `json:"names_removed_with_owner"`
	// Capacity. PeakDiskBytes is the most disk_bytes has been; DiskWrittenBytes every byte that
	// went to disk (rollover copies, later writes, passthrough growth): what --disk can be sized from.
	PeakDiskBytes    int64 `json:"peak_disk_bytes"`
	DiskWrittenBytes int64 `json:"disk_written_bytes"`
	// RAMCapSource says where ram_cap came from: --memory, or the default's host RAM or cgroup limit.
	RAMCapSource string `json:"ram_cap_source,omitempty"`
	// ArenaFiles are small RAM files kept together in ArenaMemfds shared memfds; Descriptors is every
	// descriptor the files hold, against DescriptorLimit (the daemon's RLIMIT_NOFILE).
	ArenaFiles      int64 `json:"arena_files"`
	ArenaMemfds     int64 `json:"arena_memfds"`
	Descriptors     int64 `json:"descriptors"`
	DescriptorLimit int64 `json:"descriptor_limit"`
	// DescriptorLimitHits counts operations answered ENOSPC because the daemon was out of descriptors.
	DescriptorLimitHits int64 `json:"descriptor_limit_hits"`
	// StoreRecreated counts store directories made again after being deleted while mounted; StoreError
	// is why the store cannot be used now ("" when it can).
	StoreRecreated int64  `json:"store_recreated"`
	StoreError     string `json:"store_error,omitempty"`
}

// Stats gathers the tree's and the spool's counters.
func (fsys *FS) Stats() Stats {
	fsys.pool.RefreshExternal()
	ps := fsys.pool.Stats()
	cfg := fsys.pool.Config()
	s := Stats{
		Files:               fsys.counts.files.Load(),
		Dirs:                fsys.counts.dirs.Load() - 1, // the root is not an entry
		Others:              fsys.counts.others.Load(),
		EphemeralFiles:      fsys.counts.ephemeralFiles.Load(),
		TemplateEntries:     fsys.counts.templateEntries.Load(),
		EntriesCreated:      fsys.counts.created.Load(),
		OpenHandles:         fsys.counts.openHandles.Load(),
		RAMBytes:            ps.RAMBytes,
		RAMCap:              ps.RAMCap,
		PeakRAMBytes:        ps.PeakRAMBytes,
		DiskBytes:           ps.DiskBytes,
		DiskCap:             Cap(ps.DiskCap),
		PeakDiskBytes:       ps.PeakDiskBytes,
		DiskWrittenBytes:    ps.DiskWrittenBytes,
		RAMCapSource:        fsys.memorySourceNow(),
		ArenaFiles:          ps.ArenaFiles,
		ArenaMemfds:         ps.ArenaMemfds,
		Descriptors:         ps.Descriptors,
		DescriptorLimit:     descriptorLimit(),
		DescriptorLimitHits: ps.DescriptorLimitHits,
		StoreRecreated:      ps.StoreRecreated,
		StoreError:          ps.StoreError,
		MemoryFiles:         ps.MemoryFiles,
		DiskFiles:           ps.DiskFiles,
		Rollovers:           ps.Rollovers,
		SpilledBytes:        ps.SpilledBytes,
		BytesWritten:        fsys.counts.bytesWritten.Load(),
		Passthrough:         fsys.passthrough.Load(),
		PassthroughOpens:    fsys.counts.passthroughOpens.Load(),
		PassthroughOff:      fsys.passthroughOff,
		Log:                 fsys.opts.LogWhere,
		DirectWrites:        fsys.directWrites.Load(),
		MaxSize:             cfg.MaxSize,
		UptimeSeconds:       time.Since(fsys.started).Seconds(),
	}
	if cfg.Store != nil {
		s.Store = cfg.Store.Path()
	}
	s.Entries = s.Files + s.Dirs + s.Others
	s.Activity = fsys.Activity()
	fsys.ownerStats(&s)
	return s
}

// Cap is a byte cap that may be absent: 0 means no cap, and JSON says null for it.
type Cap int64

// MarshalJSON writes null for no cap.
func (c Cap) MarshalJSON() ([]byte, error) {
	if c == 0 {
		return []byte("null"), nil
	}
	return json.Marshal(int64(c))
}

// UnmarshalJSON reads null as no cap.
func (c *Cap) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*c = 0
		return nil
	}
	return json.Unmarshal(data, (*int64)(c))
}

// StatsJSON is Stats as user.tempfs.stats answers it.
func (fsys *FS) StatsJSON() ([]byte, error) {
	return json.Marshal(fsys.Stats())
}

// descriptorLimit is the daemon's RLIMIT_NOFILE soft limit.
func descriptorLimit() int64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lim.Cur)
}

// descriptorReserve is what the daemon keeps for itself beyond the files' descriptors: /dev/fuse, its
// splice pipes, the store, the log.
const descriptorReserve = 64

// freeFiles is how many more files with data fit (statfs's f_ffree): as many small files as the free RAM
// holds arena slots, plus as many files of their own descriptor (disk files, larger RAM files) as there
// are descriptors and disk blocks left. Empty files cost no more than their node.
func freeFiles(ps spool.Stats, diskFree int64) int64 {
	ramFree := max(ps.RAMCap-ps.RAMBytes, 0)
	fdFree := max(descriptorLimit()-ps.Descriptors-descriptorReserve, 0)
	return ramFree/spool.ArenaMinSlot + min(fdFree, diskFree/4096)
}

// statfs reports what tempfs holds and can still hold, so that df's Used is tempfs's own data and its Avail what
// a writer can count on: used is the RAM and disk bytes of tempfs's files; free is the rest of the RAM cap plus
// what the disk store can still take (the rest of the disk cap, and never more than the store's filesystem has
// free for this user). Size is their sum. The host's own use of the store's filesystem is neither.
func (fsys *FS) statfs(out *fuse.StatfsOut) {
	const bsize = 4096
	fsys.pool.RefreshExternal()
	ps := fsys.pool.Stats()
	cfg := fsys.pool.Config()
	var diskFree int64
	if cfg.Store != nil {
		var st syscall.Statfs_t
		if err := syscall.Statfs(cfg.Store.Path(), &st); err == nil {
			diskFree = int64(st.Bavail) * st.Bsize
		}
	}
	if ps.DiskCap > 0 {
		diskFree = min(diskFree, max(ps.DiskCap-ps.DiskBytes, 0))
	}
	dataBytes := ps.RAMBytes + ps.DiskBytes
	free := max(ps.RAMCap-ps.RAMBytes, 0) + diskFree
	out.Bsize = bsize
	out.Frsize = bsize
	// Used rounds up to whole blocks, so that one byte of data shows as used.
	usedBlocks := (dataBytes + bsize - 1) / bsize
	out.Bfree = uint64(free / bsize)
	out.Blocks = uint64(usedBlocks) + out.Bfree
	out.Bavail = out.Bfree
	out.NameLen = 255
	used := fsys.counts.files.Load() + fsys.counts.dirs.Load() + fsys.counts.others.Load()
	ffree := freeFiles(ps, diskFree)
	out.Files = uint64(used + ffree)
	out.Ffree = uint64(ffree)
}
