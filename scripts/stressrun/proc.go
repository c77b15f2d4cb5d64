package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/scripts/internal/procmem"
)

// fdCounts classifies the daemon's open descriptors by what they point at.
type fdCounts struct {
	total int
	memfd int // memfd: RAM-resident file data
	store int // the store directory, its lock and its (unlinked) backing files
	pipe  int // pipes: go-fuse keeps splice pipe pairs in a pool for reuse
	other int // /dev/fuse, the log, epoll, ...
}

func (c fdCounts) String() string {
	return fmt.Sprintf("%d fds (memfd %d, store %d, pipe %d, other %d)", c.total, c.memfd, c.store, c.pipe, c.other)
}

// snapshotFDs reads /proc/PID/fd. A descriptor closed between the listing and its readlink is skipped.
func snapshotFDs(pid int, storeDir string) (fdCounts, error) {
	var c fdCounts
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return c, err
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		c.total++
		switch {
		case strings.HasPrefix(target, "/memfd:"):
			c.memfd++
		case target == storeDir || strings.HasPrefix(target, storeDir+"/"):
			c.store++
		case strings.HasPrefix(target, "pipe:"):
			c.pipe++
		default:
			c.other++
		}
	}
	return c, nil
}

// mem is the daemon's memory as /proc/PID/status shows it.
type mem struct {
	rss, hwm, anon, file, shmem int64
}

func readMem(pid int) (mem, error) {
	m, err := procmem.Read(pid)
	return mem{rss: m.RSS, hwm: m.HWM, anon: m.Anon, file: m.File, shmem: m.Shmem}, err
}

// stats is what the mount's root answers for user.tempfs.stats (the fields of `tempfs status --json`).
type stats = tempfs.Stats

func readStats(mnt string) (stats, error) {
	var s stats
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(mnt, tempfs.XattrStats, buf)
	if err != nil {
		return s, fmt.Errorf("getxattr user.tempfs.stats: %w", err)
	}
	if err := json.Unmarshal(buf[:n], &s); err != nil {
		return s, fmt.Errorf("user.tempfs.stats: %w: %q", err, buf[:n])
	}
	return s, nil
}

// samples are the peaks the monitor saw during the load.
type samples struct {
	n            int
	maxRSS       int64
	maxRSSAt     time.Duration
	maxRSSMem    mem // the breakdown at the peak
	maxFDs       fdCounts
	maxRAMBytes  int64
	maxHandles   int64
	maxEntries   int64
	ramOverCap   int // samples with ram_bytes > ram_cap
	statsErrors  int
	firstStatErr string
	lastMem      mem
}

type monitor struct {
	quit chan struct{}
	done chan *samples
}

// startMonitor samples the daemon every half second during the load: its memory, descriptors, and the stats'
// ram_bytes against ram_cap (the cap must hold at every moment, not only at the end).
func startMonitor(o options, storeDir string) *monitor {
	m := &monitor{quit: make(chan struct{}), done: make(chan *samples, 1)}
	go func() {
		s := &samples{}
		start := time.Now()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		deadAt := time.Duration(-1)
		for {
			select {
			case <-m.quit:
				m.done <- s
				return
			case <-tick.C:
			}
			if !alive(o.pid) {
				if deadAt < 0 {
					deadAt = time.Since(start)
					fail("the daemon (pid %d) died %v into the load", o.pid, deadAt.Round(time.Second))
				}
				continue
			}
			s.n++
			if mm, err := readMem(o.pid); err == nil {
				s.lastMem = mm
				if mm.rss > s.maxRSS {
					s.maxRSS, s.maxRSSAt, s.maxRSSMem = mm.rss, time.Since(start), mm
				}
			}
			if c, err := snapshotFDs(o.pid, storeDir); err == nil && c.total > s.maxFDs.total {
				s.maxFDs = c
			}
			st, err := readStats(o.mnt)
			if err != nil {
				s.statsErrors++
				if s.firstStatErr == "" {
					s.firstStatErr = err.Error()
				}
				continue
			}
			s.maxRAMBytes = max(s.maxRAMBytes, st.RAMBytes)
			s.maxHandles = max(s.maxHandles, st.OpenHandles)
			s.maxEntries = max(s.maxEntries, st.Entries)
			if st.RAMBytes > st.RAMCap {
				if s.ramOverCap == 0 {
					fail("during the load: user.tempfs.stats ram_bytes %d > ram_cap %d", st.RAMBytes, st.RAMCap)
				}
				s.ramOverCap++
			}
		}
	}()
	return m
}

func (m *monitor) stop() *samples {
	close(m.quit)
	return <-m.done
}
