package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tempfs/tempfs/cmd/tempfs/limits"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

// memoryLimitPoll is how often a mounted daemon reads its memory cgroup limit again. Neither cgroup v1 nor v2
// signals a change of the limit; reading a few small files each second costs nothing worth measuring.
const memoryLimitPoll = time.Second

// memoryCap is the cap of the RAM tier settled against the daemon's memory cgroup limit.
type memoryCap struct {
	bytes  int64
	source string // for status and the log
	// clamped: --memory did not fit under the limit and bytes is the ceiling below it instead; warning says
	// so in one line.
	clamped bool
	warning string
}

// fitMemoryCap settles the RAM cap: --memory (explicit > 0) or the default, kept under the memory cgroup
// limit as it is now. The default, a quarter of the limit, always fits and follows the limit when it moves.
// An explicit --memory that the limit cannot hold is clamped with a warning rather than refused: the mount
// stays useful (files spill to the disk store sooner, which the spool does anyway), a limit lowered while
// mounted needs the same clamp, and a job run where the operator does not know the container's limit
// (tempfs run in CI) still runs.
func fitMemoryCap(explicit int64) memoryCap {
	want, source := explicit, "--memory"
	if explicit == 0 {
		want, source = limits.DefaultMemoryCap()
	}
	limit, where, ok := limits.CgroupMemoryLimit()
	if !ok || want <= limits.MemoryCeiling(limit) {
		return memoryCap{bytes: want, source: source}
	}
	ceiling := limits.MemoryCeiling(limit)
	return memoryCap{
		bytes:   ceiling,
		source:  fmt.Sprintf("three quarters of the cgroup memory limit %s (%s), under %s %s", naming.FormatSize(limit), where, source, naming.FormatSize(want)),
		clamped: true,
		warning: fmt.Sprintf("--memory %s does not fit under this daemon's memory cgroup limit %s (%s): RAM files are kept under %s and the rest spills to the disk store; raise the limit, or give --memory %s or less",
			naming.FormatSize(want), naming.FormatSize(limit), where, naming.FormatSize(ceiling), naming.FormatSize(ceiling)),
	}
}

// watchMemoryLimit follows the memory cgroup limit while mounted: when it moves, the RAM cap moves with it
// (fitMemoryCap), and a cap lowered under what RAM files hold rolls the largest over to disk at once, so that
// a lowered limit ends in spilled files rather than an OOM kill. It returns a function that stops it.
func watchMemoryLimit(fsys *tempfs.FS, explicit int64, current memoryCap, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		ticker := time.NewTicker(memoryLimitPoll)
		defer ticker.Stop()
		behind := false // RAM files still hold more than the cap: some were busy at the last try
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			next := fitMemoryCap(explicit)
			if next.bytes == current.bytes && !behind {
				continue
			}
			if next.bytes != current.bytes {
				if next.clamped {
					log.Warn(next.warning)
				} else {
					log.Info("the RAM cap follows the memory cgroup limit", "memory", naming.FormatSize(next.bytes), "memory_from", next.source)
				}
				current = next
			}
			err := fsys.SetMemoryCap(current.bytes, current.source)
			if behind = err != nil; behind {
				log.Warn("RAM files are over the lowered cap; trying again", "err", err)
			}
		}
	}()
	return cancel
}
