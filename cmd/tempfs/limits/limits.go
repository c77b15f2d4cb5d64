// Package limits reads and raises the host limits that size a tempfs daemon: its descriptor limit, and
// the memory it may use (the host's RAM and the cgroup v1 or v2 memory limit it runs under). It knows
// nothing of FUSE or of files' bytes.
package limits

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/mountinfo"
	"github.com/tempfs/tempfs/naming"
)

// RaiseDescriptors lifts RLIMIT_NOFILE as far as the process may: with the privilege to raise the hard
// limit (root), soft and hard to fs.nr_open, the kernel's ceiling; otherwise the soft limit to the hard
// one. It returns the limit before and after. Every disk file and every RAM file larger than the small-
// file arena holds a descriptor, so this is how many of those a daemon can hold.
func RaiseDescriptors() (before, after unix.Rlimit, err error) {
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &before); err != nil {
		return before, before, err
	}
	after = before
	if ceiling, err := readUint("/proc/sys/fs/nr_open"); err == nil && ceiling > before.Max {
		want := unix.Rlimit{Cur: ceiling, Max: ceiling}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &want) == nil {
			return before, want, nil
		}
		// EPERM without CAP_SYS_RESOURCE: a user raises the soft limit only.
	}
	if after.Cur < after.Max {
		after.Cur = after.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &after); err != nil {
			return before, before, err
		}
	}
	return before, after, nil
}

// RestoreDescriptorsOf sets the descriptor limit of process pid (a child that inherited the raised one)
// back to lim, so that a program run by tempfs gets the limit tempfs started with.
func RestoreDescriptorsOf(pid int, lim unix.Rlimit) error {
	return unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil)
}

// DefaultMemoryCap is the default of --memory: a quarter of the smaller of the host's RAM and the cgroup
// memory limit of this process (v1 or v2, the tightest of its cgroup and their parents). source says
// which, for status and the mount's log line.
func DefaultMemoryCap() (bytes int64, source string) {
	host := hostRAM()
	limit, where, ok := cgroupMemoryLimit(osFiles{})
	if ok && limit < host {
		return limit / 4, fmt.Sprintf("a quarter of the cgroup memory limit %s (%s)", naming.FormatSize(limit), where)
	}
	return host / 4, fmt.Sprintf("a quarter of host RAM %s", naming.FormatSize(host))
}

func hostRAM() int64 {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 1 << 30
	}
	return int64(info.Totalram) * int64(info.Unit)
}

// files is what the cgroup search reads, so that tests can give it a made-up host.
type files interface {
	ReadFile(path string) ([]byte, error)
}

type osFiles struct{}

func (osFiles) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// cgroupMemoryLimit finds the memory limit of this process's cgroups: for each memory hierarchy it is in
// (the cgroup v2 one, the v1 "memory" one), it finds where that hierarchy is mounted in
// /proc/self/mountinfo (never assuming /sys/fs/cgroup) and reads the limit of its cgroup and of each parent
// up to the mount's root. It returns the smallest limit found and the file it came from; ok is false when no
// limit is set anywhere.
func cgroupMemoryLimit(fsys files) (limit int64, where string, ok bool) {
	cgroups, err := fsys.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, "", false
	}
	table, err := fsys.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, "", false
	}
	mounts := parseCgroupMounts(table)
	for _, line := range strings.Split(string(cgroups), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var version, file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			version, file = "cgroup2", "memory.max"
		case hasController(parts[1], "memory"):
			version, file = "memory", "memory.limit_in_bytes"
		default:
			continue
		}
		for _, m := range mounts {
			if m.key != version {
				continue
			}
			dir, inside := m.dirOf(parts[2])
			if !inside {
				continue
			}
			for {
				if v, err := readLimit(fsys, filepath.Join(dir, file)); err == nil && (!ok || v < limit) {
					limit, where, ok = v, filepath.Join(dir, file), true
				}
				if dir == m.mountpoint {
					break
				}
				dir = filepath.Dir(dir)
			}
		}
	}
	return limit, where, ok
}

// cgroupMount is a mounted cgroup hierarchy: key is "cgroup2", or "memory" for a v1 memory hierarchy.
type cgroupMount struct {
	key        string
	root       string // the cgroup the mount shows at its mountpoint
	mountpoint string
}

// dirOf is the directory of cgroup path (as /proc/self/cgroup gives it) under this mount, if the mount
// shows it.
func (m cgroupMount) dirOf(path string) (string, bool) {
	rel, err := filepath.Rel(m.root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.Join(m.mountpoint, rel), true
}

// parseCgroupMounts picks the cgroup2 and v1 memory mounts out of /proc/self/mountinfo.
func parseCgroupMounts(table []byte) []cgroupMount {
	var mounts []cgroupMount
	for _, mi := range mountinfo.Parse(table) {
		m := cgroupMount{root: mi.Root, mountpoint: mi.Point}
		switch {
		case mi.FSType == "cgroup2":
			m.key = "cgroup2"
		case mi.FSType == "cgroup" && hasController(mi.SuperOptions, "memory"):
			m.key = "memory"
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// unlimited is the least value taken as "no limit" in cgroup v1 (which writes 2^63 rounded down to a page).
const unlimited = 1 << 62

// readLimit reads a memory limit file: a number of bytes, or "max" (v2) or a huge number (v1) for none.
func readLimit(fsys files, path string) (int64, error) {
	raw, err := fsys.ReadFile(path)
	if err != nil {
		return 0, err
	}
	text := strings.TrimSpace(string(raw))
	if text == "max" {
		return 0, fmt.Errorf("%s: no limit", path)
	}
	v, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0, err
	}
	if v >= unlimited {
		return 0, fmt.Errorf("%s: no limit", path)
	}
	return int64(v), nil
}

func readUint(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
}

// CgroupMemoryLimit is the tightest memory limit of this process's cgroups (v1 or v2, its own and their
// parents), with the file it was read from; ok is false when none is set. It is read afresh at each call:
// a limit may be changed while the daemon runs (systemctl set-property, a resized container).
func CgroupMemoryLimit() (limit int64, where string, ok bool) { return cgroupMemoryLimit(osFiles{}) }

// MemoryCeiling is the most the RAM tier may hold under a memory limit: three quarters of it. Files in RAM
// are memfd pages, which the kernel charges to the daemon's cgroup and can neither reclaim nor (without swap)
// swap out, so a tier that reached the limit would end in an OOM kill and the loss of every file. The last
// quarter is for the daemon's own heap, the store's page cache (charged to the same cgroup) and the other
// processes of the cgroup (a `tempfs run` job's own).
func MemoryCeiling(limit int64) int64 { return limit / 4 * 3 }
