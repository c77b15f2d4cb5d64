package fs

import (
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mount options as mount(8) and fstab pass them. The per-mount and superblock flags among them (ro, sync,
// dirsync, lazytime, noatime, nodiratime, relatime, strictatime, noexec, nosymfollow and their opposites)
// are the kernel's: a root mount passes them as mount(2) flags (the kernel refuses them as option strings);
// a user mount hands them to fusermount3, which does the same. fsname=SOURCE is the mount's source, as
// /proc/self/mountinfo and findmnt show it. The kernel does not move atime on a FUSE mount by itself: the
// daemon does, so it keeps the atime options too (atimePolicy).

// mountFlagOptions are the options that are mount(2) flags: set (true) or cleared (false).
var mountFlagOptions = map[string]struct {
	flag uintptr
	set  bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync":  {unix.MS_DIRSYNC, true},
	"lazytime": {unix.MS_LAZYTIME, true}, "nolazytime": {unix.MS_LAZYTIME, false},
	"noatime": {unix.MS_NOATIME, true}, "atime": {unix.MS_NOATIME, false},
	"nodiratime": {unix.MS_NODIRATIME, true}, "diratime": {unix.MS_NODIRATIME, false},
	"relatime": {unix.MS_RELATIME, true}, "norelatime": {unix.MS_RELATIME, false},
	"strictatime": {unix.MS_STRICTATIME, true}, "nostrictatime": {unix.MS_STRICTATIME, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"nosymfollow": {unix.MS_NOSYMFOLLOW, true}, "symfollow": {unix.MS_NOSYMFOLLOW, false},
	"nosuid": {unix.MS_NOSUID, true}, "nodev": {unix.MS_NODEV, true},
}

// MountFlagOptionNames are the names of the kernel's mount flags that tempfs passes on, sorted.
func MountFlagOptionNames() []string {
	return slices.Sorted(maps.Keys(mountFlagOptions))
}

// IsMountFlagOption reports whether opt is one of the kernel's mount flags that tempfs passes on.
func IsMountFlagOption(opt string) bool {
	_, ok := mountFlagOptions[opt]
	return ok
}

// atimePolicy is when reading a file or listing a directory moves its atime, from the mount's options:
// relatime unless told otherwise, as the kernel's default is.
type atimePolicy struct {
	never     bool // noatime
	neverDirs bool // nodiratime
	strict    bool // strictatime (or norelatime): every access
}

// mountOptions splits the -o options for go-fuse: the flags a root mount passes to mount(2), the options left
// as strings, the source (fsname=), and the atime policy the daemon keeps.
func mountOptions(opts []string) (flags uintptr, rest []string, source string, atime atimePolicy) {
	flags = unix.MS_NOSUID | unix.MS_NODEV // every tempfs mount
	direct := os.Geteuid() == 0
	for _, o := range opts {
		if src, ok := strings.CutPrefix(o, "fsname="); ok {
			source = src
			continue
		}
		switch o {
		case "noatime":
			atime.never = true
		case "atime":
			atime.never = false
		case "nodiratime":
			atime.neverDirs = true
		case "diratime":
			atime.neverDirs = false
		case "strictatime", "norelatime":
			atime.strict = true
		case "relatime", "nostrictatime":
			atime.strict = false
		}
		var ok bool
		if flags, ok = ApplyMountFlag(flags, o); !ok || !direct {
			rest = append(rest, o)
		}
	}
	return flags, rest, source, atime
}

// accessed moves a's atime for a read or a listing as the policy says: relatime moves it when it is older
// than mtime or ctime, or a day old.
func (p atimePolicy) accessed(a *attrs) {
	now, used := timeNow(), monoNow()
	a.mu.Lock()
	a.used = used // --max-age counts every use, whatever the atime options keep
	if p.never || p.neverDirs && a.mode&syscall.S_IFMT == syscall.S_IFDIR || a.flags&flagNoatime != 0 {
		a.mu.Unlock()
		return
	}
	if p.strict || !a.mtime.before(a.atime) || !a.ctime.before(a.atime) || now.sec-a.atime.sec > 24*60*60 {
		a.atime = now
	}
	a.mu.Unlock()
}

// ApplyMountFlag sets or clears in flags the mount(2) flag that opt names, and reports whether it names one.
func ApplyMountFlag(flags uintptr, opt string) (uintptr, bool) {
	f, ok := mountFlagOptions[opt]
	switch {
	case !ok:
		return flags, false
	case f.set:
		return flags | f.flag, true
	default:
		return flags &^ f.flag, true
	}
}
