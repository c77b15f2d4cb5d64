package main

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	tempfs "github.com/tempfs/tempfs/fs"
)

// tempfs can be mount(8)'s helper, so that an fstab line or a systemd .mount unit can mount it:
//
//	/sbin/mount.tempfs -> tempfs     fstab:  tempfs  /scratch  tempfs       max_size=4M,allow_other  0 0
//	through mount.fuse3 (fuse3)      fstab:  tempfs  /scratch  fuse.tempfs  max_size=4M,allow_other  0 0
//
// mount(8) runs "mount.tempfs SOURCE MOUNTPOINT -o OPTIONS"; mount.fuse3 runs "tempfs SOURCE MOUNTPOINT -o
// OPTIONS". Both become "tempfs mount --daemon [flags] MOUNTPOINT": the helper must return once the mount is
// ready, with a non-zero status if it is not.

// helperFlags maps the -o names of an fstab line to `tempfs mount` flags (mountflags.go derives them from the
// mount command's own flags).
var helperFlags = fstabOptions()

// helperIgnored are options of mount(8) and fstab that mean nothing to tempfs. suid and dev are among them:
// mount.fuse3 adds both to every mount by root that does not say nosuid or nodev, and every tempfs mount stays
// nosuid and nodev (`tempfs mount` itself refuses them).
var helperIgnored = map[string]bool{"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true,
	"nouser": true, "users": true, "_netdev": true, "nofail": true, "exec": true, "suid": true, "dev": true}

// mountHelperArgs recognises a mount-helper invocation and returns the equivalent `tempfs mount` arguments.
func mountHelperArgs(argv0 string, args []string, isCommand func(string) bool) ([]string, bool) {
	asHelper := strings.HasPrefix(filepath.Base(argv0), "mount.")
	if !asHelper {
		// mount.fuse3 style: SOURCE MOUNTPOINT [-o OPTIONS], where SOURCE is no tempfs command.
		if len(args) < 2 || strings.HasPrefix(args[0], "-") || isCommand(args[0]) || !filepath.IsAbs(args[1]) {
			return nil, false
		}
	}
	var positional, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, strings.Split(args[i+1], ",")...)
			i++
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-n" || a == "-s" || a == "-f" || a == "-v":
			// mount(8)'s helper flags: no mtab, sloppy, fake, verbose. Nothing to do for them here.
		default:
			positional = append(positional, a)
		}
	}
	out := []string{"mount", "--daemon"}
	var kernel []string
	if slices.Contains(opts, "remount") && len(positional) > 0 {
		// A remount: every option counts (rw above all); remount reads them.
		return append(out, "-o", strings.Join(opts, ","), positional[len(positional)-1]), true
	}
	for _, o := range opts {
		name, value, hasValue := strings.Cut(o, "=")
		switch {
		case o == "" || helperIgnored[o] || strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment="):
		case hasValue && helperFlags[name].value:
			out = append(out, "--"+helperFlags[name].flag+"="+value)
		case !hasValue && helperFlags[name].flag != "" && !helperFlags[name].value:
			out = append(out, "--"+helperFlags[name].flag)
		default:
			kernel = append(kernel, o)
		}
	}
	if len(positional) == 2 {
		// fstab's SOURCE field: the mount shows it as its source (mountinfo, findmnt), as tmpfs does. A
		// source with a comma cannot go through -o: the mount then shows "tempfs".
		if src := positional[0]; src != "" && !strings.ContainsAny(src, ",\"") {
			kernel = append(kernel, "fsname="+src)
		}
		positional = positional[1:]
	}
	if len(kernel) > 0 {
		out = append(out, "-o", strings.Join(kernel, ","))
	}
	return append(out, positional...), true
}

// remountRequest recognises, in the arguments mountHelperArgs made, a remount (mount -o remount,ro DIR runs the
// helper too): it returns the mountpoint and the options.
func remountRequest(helper []string) (dir string, opts []string, ok bool) {
	i := slices.Index(helper, "-o")
	if i < 0 || i+1 >= len(helper) || len(helper) == 0 {
		return "", nil, false
	}
	opts = strings.Split(helper[i+1], ",")
	if !slices.Contains(opts, "remount") {
		return "", nil, false
	}
	return helper[len(helper)-1], opts, true
}

// statfsMountFlags are the mount(2) flags statfs reports of a mount, by their ST_ bit.
var statfsMountFlags = []struct{ st, ms uintptr }{
	{unix.ST_RDONLY, unix.MS_RDONLY}, {unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
	{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_SYNCHRONOUS, unix.MS_SYNCHRONOUS},
	{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME},
	{unix.ST_RELATIME, unix.MS_RELATIME}, {0x2000 /* ST_NOSYMFOLLOW */, unix.MS_NOSYMFOLLOW},
}

// fuseSuperOptions are the FUSE superblock's options that mountinfo shows, which mount(8) passes back at a
// remount: they cannot change, and are the same.
var fuseSuperOptions = map[string]bool{"user_id": true, "group_id": true, "max_read": true, "blksize": true,
	"rootmode": true, "fd": true, "fsname": true, "subtype": true}

// remount changes a tempfs mount's flags (ro, rw, noexec, the atime options, ...) as mount -o remount does:
// the mount keeps every flag it has that the options do not change (a remount sets them all anew). The
// daemon keeps serving; its atime handling stays what the mount started with. It returns the exit status.
func remount(dir string, opts []string, stderr io.Writer) int {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		fmt.Fprintf(stderr, "tempfs: remount %s: %v\n", dir, err)
		return 32 // mount(8)'s "mount failure"
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	for _, f := range statfsMountFlags {
		if uintptr(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	if st.Flags&(unix.ST_NOATIME|unix.ST_RELATIME) == 0 {
		flags |= unix.MS_STRICTATIME // else the kernel makes a remount relatime
	}
	for _, o := range opts {
		switch o {
		case "remount", "", "allow_other", "default_permissions":
			// mount(8) passes the mount's present options along (also the FUSE ones below): kept as they are.
		case "bind":
			flags |= unix.MS_BIND // this mount's flags alone, not the filesystem's
		default:
			if name, _, ok := strings.Cut(o, "="); ok && fuseSuperOptions[name] {
				continue
			}
			// The atime modes exclude each other: the last one given wins, as mount(8) reads them.
			switch o {
			case "noatime", "relatime":
				flags &^= unix.MS_STRICTATIME
			case "strictatime":
				flags &^= unix.MS_NOATIME | unix.MS_RELATIME
			}
			var ok bool
			if flags, ok = tempfs.ApplyMountFlag(flags, o); !ok {
				fmt.Fprintf(stderr, "tempfs: remount %s: option %q cannot change on a mounted tempfs\n", dir, o)
				return 32
			}
		}
	}
	flags |= unix.MS_NOSUID | unix.MS_NODEV
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		fmt.Fprintf(stderr, "tempfs: remount %s: %v\n", dir, err)
		return 32
	}
	return 0
}
