package main

import (
	"path/filepath"
	"strings"
)

// tempfs can be mount(8)'s helper, so that an fstab line or a systemd .mount unit can mount it:
//
//	/sbin/mount.tempfs -> tempfs     fstab:  tempfs  /scratch  tempfs       max_size=4M,allow_other  0 0
//	through mount.fuse3 (fuse3)      fstab:  tempfs  /scratch  fuse.tempfs  max_size=4M,allow_other  0 0
//
// mount(8) runs "mount.tempfs SOURCE MOUNTPOINT -o OPTIONS"; mount.fuse3 runs "tempfs SOURCE MOUNTPOINT -o
// OPTIONS". Both become "tempfs mount --daemon [flags] MOUNTPOINT": the helper must return once the mount is
// ready, with a non-zero status if it is not.

// helperFlags maps -o options with a value to `tempfs mount` flags; both spellings are accepted.
var helperFlags = map[string]string{
	"max_size": "--max-size", "max-size": "--max-size",
	"memory":  "--memory",
	"disk":    "--disk",
	"store":   "--store",
	"mode":    "--mode",
	"max_age": "--max-age", "max-age": "--max-age",
	"metrics":     "--metrics",
	"owner":       "--owner",
	"owner_quota": "--owner-quota", "owner-quota": "--owner-quota",
	"log": "--log",
}

// helperIgnored are options of mount(8) and fstab that mean nothing to tempfs. suid and dev are not among them:
// `tempfs mount` refuses them, since every tempfs mount is nosuid and nodev.
var helperIgnored = map[string]bool{"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true,
	"nouser": true, "users": true, "_netdev": true, "nofail": true, "exec": true}

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
	for _, o := range opts {
		name, value, hasValue := strings.Cut(o, "=")
		switch {
		case o == "" || helperIgnored[o] || strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment="):
		case hasValue && helperFlags[name] != "":
			out = append(out, helperFlags[name]+"="+value)
		case o == "debug":
			out = append(out, "--debug")
		default:
			kernel = append(kernel, o)
		}
	}
	if len(kernel) > 0 {
		out = append(out, "-o", strings.Join(kernel, ","))
	}
	if len(positional) == 2 {
		positional = positional[1:] // the SOURCE field of fstab means nothing to tempfs
	}
	return append(out, positional...), true
}
