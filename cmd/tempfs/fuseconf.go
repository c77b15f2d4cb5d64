package main

import (
	"bufio"
	"errors"
	"os"
	"strings"
)

// fuseConfPath is fusermount3's configuration, a variable so that a unit test can point it at its own.
var fuseConfPath = "/etc/fuse.conf"

// checkUserAllowOther refuses a user's -o allow_other, before anything is made, when fusermount3 would refuse it:
// without a user_allow_other line in its configuration. The message says the line to add. A configuration this
// user cannot read is left to fusermount3 (setuid root, it can), whose own words then reach stderr.
func checkUserAllowOther(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return usageErrorf("-o allow_other as a user needs the line user_allow_other in %s, which does not exist: as root, echo user_allow_other >> %s (or mount as root)", path, path)
	case err != nil:
		return nil
	}
	defer f.Close()
	if userAllowOther(f) {
		return nil
	}
	return usageErrorf("-o allow_other as a user needs the line user_allow_other in %s: as root, echo user_allow_other >> %s (or mount as root)", path, path)
}

// userAllowOther reports whether a fuse.conf enables user_allow_other, read as fusermount3 reads it: on each
// line, everything from '#' on is a comment, blanks around are dropped, and the rest must be the bare word.
func userAllowOther(f *os.File) bool {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}
