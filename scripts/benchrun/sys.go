package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/scripts/internal/procmem"
)

const blockSize = 4096

// freshDir makes an empty directory name under t and opens it; the workloads act relative to the returned fd.
func freshDir(t *target, name string) (string, int) {
	path := t.dir + "/" + name
	if err := unix.Mkdir(path, 0o755); err != nil {
		broken("%s: mkdir %s: %v", t.name, path, err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		broken("%s: open %s: %v", t.name, path, err)
	}
	return path, fd
}

// removeDir closes a fresh directory's fd and removes it, which fails (and breaks the run) unless it is empty.
func removeDir(t *target, path string, fd int) {
	unix.Close(fd)
	if err := unix.Rmdir(path); err != nil {
		broken("%s: rmdir %s: %v (entries: %d)", t.name, path, err, countEntries(t, path))
	}
}

func writeAll(t *target, fd int, buf []byte) {
	for len(buf) > 0 {
		n, err := unix.Write(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			broken("%s: write: %v", t.name, err)
		}
		if n == 0 {
			broken("%s: write returned 0", t.name)
		}
		buf = buf[n:]
	}
}

// readFull fills buf unless the file ends first, and returns how many bytes it read.
func readFull(t *target, fd int, buf []byte) int {
	got := 0
	for got < len(buf) {
		n, err := unix.Read(fd, buf[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			broken("%s: read: %v", t.name, err)
		}
		if n == 0 {
			break
		}
		got += n
	}
	return got
}

func closeFd(t *target, fd int) {
	if err := unix.Close(fd); err != nil {
		broken("%s: close: %v", t.name, err)
	}
}

// stamp writes the data pattern into buf, whose first block is block number first of its file: a counter word at
// the start and its complement at the end of every 4 KiB block, both mixed with the run's seed so that data left
// over from an earlier repetition cannot pass.
func stamp(buf []byte, seed, first uint64) {
	for off, n := 0, first; off+blockSize <= len(buf); off, n = off+blockSize, n+1 {
		binary.LittleEndian.PutUint64(buf[off:], seed^n)
		binary.LittleEndian.PutUint64(buf[off+blockSize-8:], ^(seed ^ n))
	}
}

// verify checks the pattern stamp wrote; it returns the index of the first wrong block in buf, or -1.
func verify(buf []byte, seed, first uint64) int {
	for off, n := 0, first; off+blockSize <= len(buf); off, n = off+blockSize, n+1 {
		if binary.LittleEndian.Uint64(buf[off:]) != seed^n ||
			binary.LittleEndian.Uint64(buf[off+blockSize-8:]) != ^(seed^n) {
			return off / blockSize
		}
	}
	return -1
}

// direntCount counts the entries other than . and .. in a getdents64 buffer, without allocating.
func direntCount(buf []byte) int {
	count := 0
	for len(buf) >= 19 {
		reclen := int(binary.LittleEndian.Uint16(buf[16:18]))
		if reclen == 0 || reclen > len(buf) {
			break
		}
		name := buf[19:reclen]
		if !(name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) {
			count++
		}
		buf = buf[reclen:]
	}
	return count
}

// readdirCount lists a directory with getdents64 and counts its entries.
func readdirCount(t *target, path string, buf []byte) int {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		broken("%s: open %s: %v", t.name, path, err)
	}
	count := 0
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			broken("%s: getdents %s: %v", t.name, path, err)
		}
		if n == 0 {
			break
		}
		count += direntCount(buf[:n])
	}
	closeFd(t, fd)
	return count
}

func countEntries(t *target, path string) int {
	return readdirCount(t, path, make([]byte, 64<<10))
}

// waitEmpty polls a directory until it has no entries (template files go after the asynchronous RELEASE), and
// breaks the run if it does not empty within d.
func waitEmpty(t *target, path string, d time.Duration) {
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(d)
	for {
		n := readdirCount(t, path, buf)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			broken("%s: %s still has %d entries %v after the last close: template files were not removed", t.name, path, n, d)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// dropCaches writes back dirty data and drops the page cache, so that the next read of a disk-backed file comes
// from the device (it cannot apply to tmpfs or other RAM-backed data).
func dropCaches() {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		broken("drop caches (needs root): %v", err)
	}
}

// memStatus is the daemon's memory from /proc/PID/status, in bytes.
type memStatus struct {
	rss, anon, file, shmem int64
}

func readMem(pid int) memStatus {
	m, err := procmem.Read(pid)
	if err != nil {
		broken("tempfs daemon %d: %v (did it die?)", pid, err)
	}
	return memStatus{rss: m.RSS, anon: m.Anon, file: m.File, shmem: m.Shmem}
}

// tempfsStats is part of what the mount's root answers for user.tempfs.stats.
type tempfsStats struct {
	Entries     int64 `json:"entries"`
	RAMBytes    int64 `json:"ram_bytes"`
	DiskBytes   int64 `json:"disk_bytes"`
	MemoryFiles int64 `json:"memory_files"`
	DiskFiles   int64 `json:"disk_files"`
	Passthrough bool  `json:"passthrough"`
	MaxSize     int64 `json:"max_size"`
	Requests    struct {
		ByOpcode map[string]struct {
			Count float64 `json:"count"`
		} `json:"by_opcode"`
	} `json:"requests"`
}

func readTempfsStats(dir string) (tempfsStats, error) {
	var s tempfsStats
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(dir, "user.tempfs.stats", buf)
	if err != nil {
		return s, err
	}
	err = json.Unmarshal(buf[:n], &s)
	return s, err
}
