// Package procmem reads a process's resident memory from /proc/PID/status, for the bench and stress tools
// that watch the daemon.
package procmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mem is a process's resident memory in bytes: VmRSS, its peak VmHWM, and the resident pages split into
// anonymous (RssAnon), file (RssFile) and shared memory (RssShmem, where memfd pages count).
type Mem struct {
	RSS, HWM, Anon, File, Shmem int64
}

// Read reads pid's figures. It fails when the file cannot be read, or has no VmRSS (a zombie, a kernel
// thread).
func Read(pid int) (Mem, error) {
	var m Mem
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File, "RssShmem": &m.Shmem}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		field := fields[key]
		if !ok || field == nil {
			continue
		}
		if words := strings.Fields(val); len(words) > 0 {
			if kb, err := strconv.ParseInt(words[0], 10, 64); err == nil {
				*field = kb << 10
			}
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}
