package spool

// A crash record (fs) keeps each File as its FileState, written whenever the file changes, and rebuilds the
// pool from the last state of every file after the daemon was killed. Three things differ from a hand-over,
// where the pool was frozen whole:
//   - an arena file names its chunk by id (ChunkID, SlotSize), since there is no list of chunks to index;
//   - the chunks' free slots are not recorded: every slot below the highest one in use that no file holds is
//     free, and is punched before it is handed out again (an operation the record does not show may have
//     written it);
//   - an operation the daemon was applying when it died may have grown a memfd or a backing file beyond the
//     size the record holds: the file is cut back to that size (the kernel sends that operation again),
//     and what it allocates is taken as it is.
//
// Lock order: Record takes the File's mu for reading, then the pool's mu (as export does).

import (
	"fmt"
	"log/slog"
	"slices"

	"golang.org/x/sys/unix"
)

// Record describes f for a crash record: its FileState with Chunk -1 and, in the arena, ChunkID and SlotSize
// naming its chunk; Account is accounts' number for the account it is charged to (which must be there).
func (f *File) Record(accounts map[*Account]int) (FileState, error) {
	fs, chunk, _, err := f.export(accounts)
	if err != nil {
		return FileState{}, err
	}
	if chunk != nil {
		fs.ChunkID, fs.SlotSize = chunk.id, f.pool.arena.classes[chunk.class].slotSize
	}
	return fs, nil
}

// Counters are the pool's counters now.
func (p *Pool) Counters() PoolCounters {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.countersLocked()
	p.arena.mu.Lock()
	c.ArenaMemfds = p.arena.chunks
	p.arena.mu.Unlock()
	return c
}

// LastDescriptorID is the last id given to a descriptor.
func (p *Pool) LastDescriptorID() uint64 { return p.lastDescriptorID.Load() }

// RecoveredPoolState is the state of the pool a crash record describes: base (the record's snapshot) with
// its files replaced by files, in the form Record gives, the counters and the last descriptor id as last
// recorded. The arena chunks are those the files use; their free slots are punched in the chunks' descriptors
// (fds, by name). The result is for ImportRecoveredPool.
func RecoveredPoolState(base PoolState, files []FileState, counters PoolCounters, lastDescriptorID uint64, fds map[string]int) (PoolState, error) {
	st := base
	st.Counters = counters
	st.LastDescriptorID = max(lastDescriptorID, base.LastDescriptorID)
	st.Files = make([]FileState, len(files))
	st.Chunks = nil
	type chunkUse struct {
		index    int
		slotSize int64
		used     map[uint32]bool
	}
	chunks := map[uint64]*chunkUse{}
	for i, fs := range files {
		if fs.Where == WhereArena {
			if fs.SlotSize <= 0 || fs.ChunkID == 0 {
				return PoolState{}, fmt.Errorf("file %d: an arena file without its chunk", i)
			}
			c := chunks[fs.ChunkID]
			if c == nil {
				c = &chunkUse{index: len(st.Chunks), slotSize: fs.SlotSize, used: map[uint32]bool{}}
				chunks[fs.ChunkID] = c
				st.Chunks = append(st.Chunks, ChunkState{FD: chunkDescName(fs.ChunkID), ID: fs.ChunkID, SlotSize: fs.SlotSize})
			}
			if c.slotSize != fs.SlotSize {
				return PoolState{}, fmt.Errorf("file %d: slots of %d bytes in a chunk of %d", i, fs.SlotSize, c.slotSize)
			}
			c.used[uint32(fs.SlotOffset/fs.SlotSize)] = true
			fs.Chunk = c.index
		}
		fs.ChunkID, fs.SlotSize = 0, 0
		st.Files[i] = fs
	}
	for id, c := range chunks {
		cs := &st.Chunks[c.index]
		for idx := range c.used {
			cs.Next = max(cs.Next, idx+1)
		}
		fd, ok := fds[cs.FD]
		if !ok {
			return PoolState{}, fmt.Errorf("arena chunk %d: its descriptor %s was not kept", id, cs.FD)
		}
		for idx := uint32(0); idx < cs.Next; idx++ {
			if c.used[idx] {
				continue
			}
			if err := fallocate(fd, allocPunchHole, int64(idx)*c.slotSize, c.slotSize); err != nil {
				return PoolState{}, fmt.Errorf("arena chunk %d: punching a free slot: %w", id, err)
			}
			cs.Free = append(cs.Free, idx)
		}
		slices.Sort(cs.Free)
		slices.Reverse(cs.Free) // reused from the end: the lowest first
	}
	return st, nil
}

// ImportRecoveredPool is ImportPool for a state RecoveredPoolState made: the counters that follow from the
// files, and the accounts' use, are recomputed rather than checked, and each memfd or backing file is cut back
// to its recorded size.
func ImportRecoveredPool(st PoolState, fds map[string]int, log *slog.Logger) (*Pool, []*File, []*Account, error) {
	return importPoolTaking(st, fds, log, true)
}

// cutToRecord cuts fd back to size if an unrecorded operation grew it, and sets *accounted to what it
// allocates then.
func cutToRecord(fd int, size int64, accounted *int64, allocation func(*unix.Stat_t) (int64, error)) error {
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		return err
	}
	if st.Size != size {
		if err := ftruncate(fd, size); err != nil {
			return fmt.Errorf("cutting back to the recorded %d bytes: %w", size, err)
		}
		if err := fstat(fd, &st); err != nil {
			return err
		}
	}
	n, err := allocation(&st)
	if err != nil {
		return err
	}
	*accounted = n
	return nil
}
