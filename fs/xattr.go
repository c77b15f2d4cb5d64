package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Extended attributes. Stored ones (user.*, trusted.*, security.*) live in memory with the node. The
// user.tempfs.* names are answered by tempfs itself (docs/guarantees.md: names, lifetimes, owners, the spool):
//
//	user.tempfs.path      every entry: its absolute path in the mount
//	user.tempfs.lifetime  "close" for a file that goes at its last close, else "keep"; set "keep" to persist
//	user.tempfs.spool     regular files: "memory" or "disk"
//	user.tempfs.rollover  regular files, set only: move the data to disk now (SpooledTemporaryFile.rollover)
//	user.tempfs.created   directories: the last name the calling process made here from a template
//	user.tempfs.stats     the root: the daemon's status as JSON (tempfs status reads it)
//	user.tempfs.owner     every entry: its owner in words, "kept" or "none"; set "parent" to hand it to the
//	                      owner of the caller's parent process (see owners.go)
//	user.tempfs.owners    the root: the live owners with their entries and bytes, as JSON (status --owners)
//
// These names are the one list: the commands (mktemp, status) use the exported ones.
const (
	XattrPath     = "user.tempfs.path"
	XattrLifetime = "user.tempfs.lifetime"
	XattrSpool    = "user.tempfs.spool"
	XattrRollover = "user.tempfs.rollover"
	XattrCreated  = "user.tempfs.created"
	XattrStats    = "user.tempfs.stats"
	XattrOwner    = "user.tempfs.owner"
	XattrOwners   = "user.tempfs.owners"

	xattrPrefix     = "user.tempfs."
	xattrPanicProbe = "user.tempfs.test.panic" // see Options.PanicProbe
)

// storableNamespace reports whether attr may be stored as given. Of system.*, only the POSIX ACL names are
// kept, with ACLs on, by setxattr (see acl.go).
func storableNamespace(attr string) bool {
	return strings.HasPrefix(attr, "user.") || strings.HasPrefix(attr, "trusted.") || strings.HasPrefix(attr, "security.")
}

// virtualXattr answers a user.tempfs.* name; ok is false when the name means nothing for this node.
func virtualXattr(ctx context.Context, n node, attr string) (value []byte, ok bool, errno syscall.Errno) {
	fsys := fsOf(n)
	switch attr {
	case XattrPath:
		p := nodePath(n)
		if p == "" {
			return nil, false, 0
		}
		return []byte(p), true, 0
	case XattrLifetime:
		lifetime := "keep"
		if f, isFile := n.(*File); isFile {
			f.stateMu.Lock()
			if f.ephemeralLocked() {
				lifetime = "close"
			}
			f.stateMu.Unlock()
		}
		return []byte(lifetime), true, 0
	case XattrOwner:
		return []byte(fsys.ownerXattr(n)), true, 0
	case XattrSpool:
		if f, isFile := n.(*File); isFile {
			return []byte(f.data.Where().Tier().String()), true, 0
		}
	case XattrCreated:
		if d, isDir := n.(*Dir); isDir {
			if name := d.createdFor(ctx); name != "" {
				return []byte(name), true, 0
			}
		}
	case XattrOwners:
		if d, isDir := n.(*Dir); isDir && d == fsys.root {
			js, err := json.Marshal(fsys.OwnersReport())
			if err != nil {
				return nil, false, toErrno(fsys.log, "owners", err)
			}
			return js, true, 0
		}
	case XattrStats:
		if d, isDir := n.(*Dir); isDir && d == fsys.root {
			js, err := fsys.StatsJSON()
			if err != nil {
				return nil, false, toErrno(fsys.log, "stats", err)
			}
			return js, true, 0
		}
	}
	return nil, false, 0
}

func fsOf(n node) *FS {
	switch n := n.(type) {
	case *Dir:
		return n.fs
	case *File:
		return n.fs
	case *Symlink:
		return n.fs
	case *Special:
		return n.fs
	}
	panic("fs: unknown node type")
}

// nodePath is a node's absolute path in the mount, "" when it has no name.
func nodePath(n node) string {
	switch n := n.(type) {
	case *Dir:
		if n.removed.Load() {
			return ""
		}
		return n.path()
	case leafNode:
		return n.leafPart().path()
	}
	return ""
}

// copyOut answers a get/list request: the size when dest is empty, ERANGE when it is too small.
func copyOut(value, dest []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(value)), 0
	}
	if len(dest) < len(value) {
		return uint32(len(value)), syscall.ERANGE
	}
	return uint32(copy(dest, value)), 0
}

func getxattr(ctx context.Context, n node, attr string, dest []byte) (uint32, syscall.Errno) {
	if strings.HasPrefix(attr, xattrPrefix) {
		if attr == xattrPanicProbe && fsOf(n).opts.PanicProbe {
			panic("user.tempfs.test.panic: test probe")
		}
		value, ok, errno := virtualXattr(ctx, n, attr)
		if errno != 0 {
			return 0, errno
		}
		if !ok {
			return 0, syscall.ENODATA
		}
		return copyOut(value, dest)
	}
	a := n.base()
	a.mu.Lock()
	value, ok := a.xattrs[attr]
	a.mu.Unlock()
	if !ok {
		return 0, syscall.ENODATA
	}
	return copyOut(value, dest)
}

func setxattr(ctx context.Context, n node, attr string, data []byte, flags uint32) syscall.Errno {
	if strings.HasPrefix(attr, xattrPrefix) {
		return setVirtualXattr(ctx, n, attr, data)
	}
	acl := attr == xattrACLAccess || attr == xattrACLDefault
	if acl && !fsOf(n).acl.Load() || !acl && !storableNamespace(attr) {
		return syscall.EOPNOTSUPP
	}
	if errno := n.base().protectedErrno(); errno != 0 {
		return errno
	}
	a := n.base()
	a.mu.Lock()
	if attr == xattrACLAccess {
		errno := a.setAccessACLLocked(ctx, data)
		a.mu.Unlock()
		if errno == 0 {
			a.touchChanged()
		}
		return errno
	}
	_, exists := a.xattrs[attr]
	switch {
	case flags&unix.XATTR_CREATE != 0 && exists:
		a.mu.Unlock()
		return syscall.EEXIST
	case flags&unix.XATTR_REPLACE != 0 && !exists:
		a.mu.Unlock()
		return syscall.ENODATA
	}
	if a.xattrs == nil {
		a.xattrs = make(map[string][]byte)
	}
	a.xattrs[attr] = bytes.Clone(data)
	a.mu.Unlock()
	a.touchChanged()
	return 0
}

// setVirtualXattr performs the user.tempfs.* actions; the read-only names answer EPERM.
func setVirtualXattr(ctx context.Context, n node, attr string, data []byte) syscall.Errno {
	f, isFile := n.(*File)
	fsys := fsOf(n)
	value := strings.TrimRight(string(data), "\x00\n")
	switch {
	case attr == XattrOwner && value == "parent":
		return fsys.handToParent(ctx, n)
	case attr == XattrOwner:
		return syscall.EINVAL // "parent" is the one owner a caller may name
	case attr == XattrLifetime && isFile:
		switch value {
		case "keep":
			// A file whose last name went (its last close removed the generated name while this request
			// was on its way, or it was unlinked) has nothing left to keep: say so instead of answering 0
			// for a file that is gone.
			f.stateMu.Lock()
			defer f.stateMu.Unlock()
			if len(f.links) == 0 {
				return syscall.ENOENT
			}
			f.persistLocked()
			f.fs.keep(f)
			return 0
		case "close":
			f.stateMu.Lock()
			ephemeral := f.ephemeralLocked()
			f.stateMu.Unlock()
			if ephemeral {
				return 0
			}
		}
		return syscall.EINVAL
	case attr == XattrLifetime && value == "keep":
		// Directories and other entries have no last close: keep only takes them from their owner.
		fsys.keep(n)
		return 0
	case attr == XattrRollover && isFile:
		if err := f.data.Rollover(); err != nil {
			return toErrno(f.fs.log, "rollover", err)
		}
		return 0
	}
	return syscall.EPERM
}

func removexattr(ctx context.Context, n node, attr string) syscall.Errno {
	if strings.HasPrefix(attr, xattrPrefix) {
		return syscall.ENODATA // nothing stored under these names: they are answered, not kept
	}
	if errno := n.base().protectedErrno(); errno != 0 {
		return errno
	}
	a := n.base()
	a.mu.Lock()
	_, ok := a.xattrs[attr]
	delete(a.xattrs, attr)
	if len(a.xattrs) == 0 {
		a.xattrs = nil
	}
	a.mu.Unlock()
	if !ok {
		return syscall.ENODATA
	}
	a.touchChanged()
	return 0
}

// listxattr lists the stored attributes only. The user.tempfs.* names are answered by getxattr but not
// listed, as CephFS hides its virtual ceph.* attributes: tools that copy every listed attribute (cp -a,
// rsync -X, tar --xattrs) would otherwise write them as stale real attributes on other filesystems, and fail
// copying into a mount, where they cannot be set.
func listxattr(ctx context.Context, n node, dest []byte) (uint32, syscall.Errno) {
	a := n.base()
	a.mu.Lock()
	stored := make([]string, 0, len(a.xattrs))
	for k := range a.xattrs {
		stored = append(stored, k)
	}
	a.mu.Unlock()
	slices.Sort(stored)
	var buf bytes.Buffer
	for _, name := range stored {
		buf.WriteString(name)
		buf.WriteByte(0)
	}
	return copyOut(buf.Bytes(), dest)
}

// createdFor answers user.tempfs.created for the calling process: the record is kept by process id, so
// any thread of the process that made the entry gets the answer, also after the making thread ended.
func (d *Dir) createdFor(ctx context.Context) string {
	_, _, tid := caller(ctx)
	pid := d.fs.processOf(tid)
	if pid == 0 {
		return ""
	}
	d.entriesMu.RLock()
	defer d.entriesMu.RUnlock()
	return d.created[pid].name
}
