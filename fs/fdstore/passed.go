package fdstore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first passed descriptor, as systemd's SD_LISTEN_FDS_START.
const listenFDsStart = 3

// environment is what Passed reads and changes of the process, a variable so that tests can pass
// descriptors at numbers of their own choosing without replacing the Go runtime's fds 3 and 4.
type environment struct {
	lookup func(string) (string, bool)
	unset  func(string)
	pid    int
	ppid   int
	start  int
}

func processEnvironment() environment {
	return environment{
		lookup: os.LookupEnv,
		unset:  func(k string) { _ = os.Unsetenv(k) },
		pid:    os.Getpid(),
		ppid:   os.Getppid(),
		start:  listenFDsStart,
	}
}

// Passed returns the descriptors this process was started with by a store, by name: LISTEN_FDS of them
// from fd 3 on, named by LISTEN_FDNAMES (colon-separated; "unknown" each when it is unset, as systemd
// does). They are this process's when LISTEN_PID is its pid, or, from a holder, when LISTEN_PID is unset
// and TEMPFS_HOLDER_PID is its parent's pid; otherwise (a descendant that inherited the variables) there
// are none. An empty map and no error when nothing was passed.
//
// It unsets LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES and TEMPFS_HOLDER_PID in every case, so that the
// processes this one starts never take the descriptors for theirs, and sets close-on-exec on each
// descriptor. A count that does not match the names, a name given twice, or a descriptor that is not open
// is an error; the descriptors are then left open (the store still holds its own references).
func Passed() (map[string]int, error) { return passed(processEnvironment()) }

func passed(env environment) (map[string]int, error) {
	pidStr, havePID := env.lookup("LISTEN_PID")
	holderStr, haveHolder := env.lookup(HolderPIDEnv)
	countStr, haveCount := env.lookup("LISTEN_FDS")
	namesStr, haveNames := env.lookup("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HolderPIDEnv} {
		env.unset(k)
	}
	fds := map[string]int{}
	if !haveCount {
		return fds, nil
	}
	switch {
	case havePID:
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("LISTEN_PID=%q is not a pid", pidStr)
		}
		if pid != env.pid {
			return fds, nil // for another process, inherited
		}
	case haveHolder:
		pid, err := strconv.Atoi(holderStr)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s=%q is not a pid", HolderPIDEnv, holderStr)
		}
		if pid != env.ppid {
			return fds, nil // the holder is not this process's parent: inherited, or the holder is gone
		}
	default:
		return fds, nil // nobody said whose they are
	}
	n, err := strconv.Atoi(countStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a count", countStr)
	}
	if n == 0 {
		return fds, nil
	}
	names := make([]string, n)
	if haveNames {
		names = strings.Split(namesStr, ":")
		if len(names) != n {
			return nil, fmt.Errorf("LISTEN_FDS=%d but LISTEN_FDNAMES has %d names", n, len(names))
		}
	} else {
		for i := range names {
			names[i] = "unknown"
		}
	}
	for i, name := range names {
		if err := ValidName(name); err != nil {
			return nil, fmt.Errorf("LISTEN_FDNAMES: %w", err)
		}
		if _, dup := fds[name]; dup {
			return nil, fmt.Errorf("LISTEN_FDNAMES names %q twice", name)
		}
		fds[name] = env.start + i
	}
	for i := range n {
		fd := env.start + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("passed descriptor %d (%s): %w", fd, names[i], err)
		}
	}
	for i := range n {
		unix.CloseOnExec(env.start + i)
	}
	return fds, nil
}
