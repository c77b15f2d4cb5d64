package owner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// procRoot is where the process table is read; tests never change it, it only names the path once.
const procRoot = "/proc/"

// procReads counts the files read under /proc, so that tests can check that a known process costs none.
var procReads atomic.Int64

func readProcFile(path string) ([]byte, error) {
	procReads.Add(1)
	return os.ReadFile(path)
}

// procStat is what tempfs needs from /proc/PID/stat.
type procStat struct {
	comm    string
	state   byte
	ppid    uint32
	pgrp    uint32
	session uint32
	start   uint64 // field 22, clock ticks since boot: with the pid, it names one process for good
}

func pidPath(pid uint32, file string) string {
	return procRoot + strconv.FormatUint(uint64(pid), 10) + "/" + file
}

// readStat reads /proc/PID/stat. The command name is in parentheses and may hold anything, ')' and spaces
// too, so the fields are parsed after the last ')'.
func readStat(pid uint32) (procStat, error) {
	data, err := readProcFile(pidPath(pid, "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(data)
}

var errBadStat = errors.New("malformed /proc/PID/stat")

func parseStat(data []byte) (procStat, error) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, errBadStat
	}
	// After ")": state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt(10) cminflt(11)
	// majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17) priority(18) nice(19)
	// num_threads(20) itrealvalue(21) starttime(22).
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, errBadStat
	}
	st := procStat{comm: string(data[open+1 : end]), state: fields[0][0]}
	var nums [3]uint64
	for i, f := range fields[1:4] {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return procStat{}, fmt.Errorf("%w: %v", errBadStat, err)
		}
		nums[i] = n
	}
	st.ppid, st.pgrp, st.session = uint32(nums[0]), uint32(nums[1]), uint32(nums[2])
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("%w: %v", errBadStat, err)
	}
	st.start = start
	return st, nil
}

// threadGroup returns the process (thread group) id of thread tid, read from the Tgid line of
// /proc/TID/status: ErrCallerGone when the thread has exited, or the error that kept the daemon from reading
// /proc (no descriptor left, say).
func threadGroup(tid uint32) (uint32, error) {
	data, err := readProcFile(pidPath(tid, "status"))
	if err != nil {
		return 0, procError(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %w", tid, err)
			}
			return uint32(n), nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no Tgid line", tid)
}

// procError tells a process that is gone (its /proc directory vanished: ENOENT, or ESRCH while it was being
// read) from a daemon that could not read /proc (EMFILE, ENFILE, ENOMEM), which is no reason to call a live
// caller gone.
func procError(err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return ErrCallerGone
	}
	return err
}

// isThreadOf reports whether tid is, right now, a thread of process tgid, so that a thread id reused by
// another process is never mapped to the old one. tgkill with signal 0 sends nothing and answers ESRCH
// unless tid is a thread of tgid (EPERM: it is, but the daemon may not signal it): one syscall, where a stat
// of /proc/TGID/task/TID walks procfs (~2.5 µs here) and reading /proc/TID/status costs ~30 µs.
func isThreadOf(tgid, tid uint32) bool {
	for {
		err := unix.Tgkill(int(tgid), int(tid), 0)
		if err != unix.EINTR {
			return err == nil || err == unix.EPERM
		}
	}
}

// readCgroup returns the cgroup v2 path of a process: the "0::/path" line of /proc/PID/cgroup.
func readCgroup(pid uint32) (string, error) {
	data, err := readProcFile(pidPath(pid, "cgroup"))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.TrimRight(p, "\n"), nil
		}
	}
	return "", fmt.Errorf("process %d has no cgroup v2 line in /proc/%d/cgroup", pid, pid)
}

// eachProcess calls fn with every process id in /proc, until fn returns false.
func eachProcess(fn func(pid uint32) bool) error {
	dir, err := os.Open(procRoot)
	if err != nil {
		return err
	}
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(256)
		for _, name := range names {
			if name[0] < '0' || name[0] > '9' {
				continue
			}
			n, perr := strconv.ParseUint(name, 10, 32)
			if perr == nil && !fn(uint32(n)) {
				return nil
			}
		}
		if err != nil {
			return nil // io.EOF: the whole table was read
		}
	}
}

// groupOrSession is the process group or session id of process pid now, by one syscall (no read of /proc):
// a process may change either at any time (setpgid, setsid). It is 0 when the group's or session's leader
// lives in a PID namespace the daemon cannot see.
func groupOrSession(scope Scope, pid uint32) (uint32, error) {
	var id int
	var err error
	for {
		if scope == Group {
			id, err = unix.Getpgid(int(pid))
		} else {
			id, err = unix.Getsid(int(pid))
		}
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, procError(err)
	}
	return uint32(id), nil
}
