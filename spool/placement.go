package spool

import "fmt"

// Placement is where a File's bytes live now: the one question the FUSE layer asks of a File's
// storage, so that it needs to know nothing of tiers, arenas or memfds.
type Placement int

const (
	// Empty: an empty RAM file, which holds no descriptor.
	Empty Placement = iota
	// Arena: a slot of an arena memfd shared with other small files.
	Arena
	// Memfd: a memfd of the file's own (past ArenaMaxFileSize; files never move back into the arena).
	Memfd
	// DiskFile: an unlinked backing file in the Store, written only by the daemon.
	DiskFile
	// DiskPassthrough: an unlinked backing file that the kernel may write directly (passthrough).
	DiskPassthrough
)

// Tier is the counter the placement is charged to: Memory for Empty, Arena and Memfd.
func (p Placement) Tier() Tier {
	if p >= DiskFile {
		return Disk
	}
	return Memory
}

// OnDisk says whether the bytes are in the Store, where the kernel may be handed the backing fd.
func (p Placement) OnDisk() bool { return p.Tier() == Disk }

func (p Placement) String() string {
	switch p {
	case Empty:
		return "empty"
	case Arena:
		return "arena"
	case Memfd:
		return "memfd"
	case DiskFile:
		return "disk"
	case DiskPassthrough:
		return "disk (passthrough)"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// Where says where the bytes are now.
func (f *File) Where() Placement {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f._where()
}

// _where is Where with f.mu held (for reading at least).
func (f *File) _where() Placement {
	switch {
	case f.tier == Disk && f.external:
		return DiskPassthrough
	case f.tier == Disk:
		return DiskFile
	case f.slot != nil:
		return Arena
	case f.fd >= 0:
		return Memfd
	}
	return Empty
}
