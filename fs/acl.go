package fs

import (
	"context"
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// POSIX ACLs, as tmpfs keeps them. With FUSE_POSIX_ACL negotiated the kernel enforces ACLs itself (it turns
// default_permissions on) and caches them, fetching them with GETXATTR and storing them with SETXATTR of the
// two names below; the filesystem stores them, keeps the mode in step with the access ACL (both ways: setting
// an access ACL sets the mode, chmod sets the ACL's owner, mask and other entries), and gives new entries
// their directory's default ACL. The rules are the kernel's own (fs/posix_acl.c: posix_acl_update_mode,
// posix_acl_chmod, posix_acl_create), so that getfacl shows what it shows on tmpfs.
//
// The values are the kernel's xattr form: a little-endian u32 version (2), then per entry u16 tag, u16
// permission bits, u32 id (for named users and groups; ids as the daemon's user namespace sees them).
//
// Locking: ACL values live in attrs.xattrs under attrs.mu, like every stored attribute.
const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

const (
	aclVersion   = 2
	aclUserObj   = 0x01
	aclUser      = 0x02
	aclGroupObj  = 0x04
	aclGroup     = 0x08
	aclMask      = 0x10
	aclOther     = 0x20
	aclEntrySize = 8
)

// aclEntry is one entry of an ACL.
type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

// parseACL decodes an ACL xattr value. The kernel has validated it (posix_acl_valid) before sending it, so
// only the framing is checked here.
func parseACL(data []byte) ([]aclEntry, bool) {
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != aclVersion || (len(data)-4)%aclEntrySize != 0 {
		return nil, false
	}
	entries := make([]aclEntry, 0, (len(data)-4)/aclEntrySize)
	for p := data[4:]; len(p) > 0; p = p[aclEntrySize:] {
		entries = append(entries, aclEntry{
			tag:  binary.LittleEndian.Uint16(p),
			perm: binary.LittleEndian.Uint16(p[2:]),
			id:   binary.LittleEndian.Uint32(p[4:]),
		})
	}
	return entries, true
}

func encodeACL(entries []aclEntry) []byte {
	data := make([]byte, 4, 4+len(entries)*aclEntrySize)
	binary.LittleEndian.PutUint32(data, aclVersion)
	for _, e := range entries {
		data = binary.LittleEndian.AppendUint16(data, e.tag)
		data = binary.LittleEndian.AppendUint16(data, e.perm)
		data = binary.LittleEndian.AppendUint32(data, e.id)
	}
	return data
}

// aclEquivMode is the permission bits an access ACL stands for (the mask stands for the group class when there
// is one), and whether the ACL says more than those bits can (named entries or a mask): posix_acl_equiv_mode.
func aclEquivMode(entries []aclEntry) (perm uint32, extended bool) {
	for _, e := range entries {
		p := uint32(e.perm & 7)
		switch e.tag {
		case aclUserObj:
			perm |= p << 6
		case aclGroupObj:
			perm |= p << 3
		case aclOther:
			perm |= p
		case aclMask:
			perm = perm&^0o070 | p<<3
			extended = true
		case aclUser, aclGroup:
			extended = true
		}
	}
	return perm, extended
}

// aclChmod sets the owner, group class (the mask if there is one, else the owning group) and other entries
// to mode's bits, as chmod does to an access ACL: posix_acl_chmod.
func aclChmod(entries []aclEntry, mode uint32) {
	groupClass := -1
	for i := range entries {
		switch entries[i].tag {
		case aclUserObj:
			entries[i].perm = uint16(mode>>6) & 7
		case aclOther:
			entries[i].perm = uint16(mode) & 7
		case aclGroupObj:
			if groupClass < 0 {
				groupClass = i
			}
		case aclMask:
			groupClass = i
		}
	}
	if groupClass >= 0 {
		entries[groupClass].perm = uint16(mode>>3) & 7
	}
}

// aclCreateMasq narrows a new entry's inherited access ACL by the mode it was created with, and the mode by
// the ACL, as posix_acl_create_masq does; extended reports whether the ACL must be kept (it says more than
// the mode bits).
func aclCreateMasq(entries []aclEntry, mode uint32) (newMode uint32, extended bool) {
	perm := mode & 0o777
	groupObj, mask := -1, -1
	for i := range entries {
		e := &entries[i]
		switch e.tag {
		case aclUserObj:
			e.perm &= uint16(perm>>6) & 7
			perm &= uint32(e.perm)<<6 | ^uint32(0o700)
		case aclUser, aclGroup:
			extended = true
		case aclGroupObj:
			groupObj = i
		case aclOther:
			e.perm &= uint16(perm) & 7
			perm &= uint32(e.perm) | ^uint32(0o007)
		case aclMask:
			mask = i
			extended = true
		}
	}
	class := mask
	if class < 0 {
		class = groupObj
	}
	if class >= 0 {
		e := &entries[class]
		e.perm &= uint16(perm>>3) & 7
		perm &= uint32(e.perm)<<3 | ^uint32(0o070)
	}
	return mode&^0o777 | perm&0o777, extended
}

// setAccessACL stores an access ACL the way tmpfs does (posix_acl_update_mode): the mode takes the ACL's
// bits, an ACL that says no more than the mode is not kept, and set-group-ID goes when the caller is neither
// in the file's group nor root. The caller holds a.mu.
func (a *attrs) setAccessACLLocked(ctx context.Context, data []byte) syscall.Errno {
	entries, ok := parseACL(data)
	if !ok {
		return syscall.EINVAL
	}
	perm, extended := aclEquivMode(entries)
	mode := a.mode&^0o777 | perm
	if mode&syscall.S_ISGID != 0 {
		if uid, gid, pid := caller(ctx); uid != 0 && !inGroup(gid, pid, a.gid) {
			mode &^= syscall.S_ISGID
		}
	}
	a.mode = mode
	if extended {
		a.setXattrLocked(xattrACLAccess, encodeACL(entries))
	} else {
		a.deleteXattrLocked(xattrACLAccess)
	}
	return 0
}

// chmodACLLocked keeps a stored access ACL in step with a new mode. The caller holds a.mu.
func (a *attrs) chmodACLLocked(mode uint32) {
	data, ok := a.xattrs[xattrACLAccess]
	if !ok {
		return
	}
	entries, ok := parseACL(data)
	if !ok {
		return
	}
	aclChmod(entries, mode)
	a.xattrs[xattrACLAccess] = encodeACL(entries)
}

// setXattrLocked stores an attribute. The caller holds a.mu.
func (a *attrs) setXattrLocked(attr string, value []byte) {
	if a.xattrs == nil {
		a.xattrs = make(map[string][]byte)
	}
	a.xattrs[attr] = value
}

// deleteXattrLocked drops an attribute. The caller holds a.mu.
func (a *attrs) deleteXattrLocked(attr string) {
	delete(a.xattrs, attr)
	if len(a.xattrs) == 0 {
		a.xattrs = nil
	}
}

// inheritedACL is what a new entry takes from its directory: its permission bits, and the ACLs to store on it.
type inheritedACL struct {
	access, deflt []byte
}

// inheritACL decides a new entry's permission bits from the bits it was created with (perm, the kernel does
// not apply the umask when ACLs are on) and its directory's default ACL, as posix_acl_create does: without a
// default ACL the umask applies; with one the umask does not, the bits are narrowed by the ACL, the entry gets
// the ACL as its access ACL when that says more than the bits, and a directory gets it as its default ACL too.
// A template's fixed bits (0600, 0700) are not umasked, as before ACLs (the kernel's umask went to the bits
// the template replaced): umask is false for them.
func (d *Dir) inheritACL(ctx context.Context, perm uint32, isDir, umask bool) (uint32, inheritedACL) {
	if !d.fs.acl.Load() {
		return perm, inheritedACL{}
	}
	d.attrs.mu.Lock()
	deflt, ok := d.attrs.xattrs[xattrACLDefault]
	d.attrs.mu.Unlock()
	var entries []aclEntry
	if ok {
		entries, ok = parseACL(deflt)
	}
	if !ok || len(entries) == 0 {
		if umask {
			perm &^= umaskOf(ctx)
		}
		return perm, inheritedACL{}
	}
	var inh inheritedACL
	if isDir {
		inh.deflt = deflt // never changed in place: every store replaces the slice
	}
	perm, extended := aclCreateMasq(entries, perm)
	if extended {
		inh.access = encodeACL(entries)
	}
	return perm, inh
}

// apply stores the inherited ACLs on a new node's attributes, before the node is visible to anyone.
func (inh inheritedACL) apply(a *attrs) {
	if inh.access != nil {
		a.setXattrLocked(xattrACLAccess, inh.access)
	}
	if inh.deflt != nil {
		a.setXattrLocked(xattrACLDefault, inh.deflt)
	}
}

// The umask of a create. With ACLs on tempfs negotiates FUSE_DONT_MASK, so the kernel sends the mode as the
// caller gave it and the caller's umask beside it, and the filesystem applies the umask unless a default ACL
// rules (see inheritACL). go-fuse's node API passes the mode but not the umask, so umaskFS, between the kernel
// and go-fuse's node layer, keeps each create's umask here for the duration of the request, keyed by the
// request's cancel channel: go-fuse makes one per request buffer and hands it to the node as the context's
// Cancel, so no two requests in flight share one.
var requestUmasks sync.Map // <-chan struct{} → uint32

// umaskOf is the umask of the create that ctx belongs to; 0 when there is none to apply (the kernel applied
// it already, or the request did not come through umaskFS).
func umaskOf(ctx context.Context) uint32 {
	fc, ok := ctx.(*fuse.Context)
	if !ok || fc.Cancel == nil {
		return 0
	}
	if v, ok := requestUmasks.Load(fc.Cancel); ok {
		return v.(uint32) & 0o777
	}
	return 0
}

// umaskFS passes every request on, keeping the umask of creates for umaskOf.
type umaskFS struct {
	fuse.RawFileSystem
}

func (u umaskFS) withUmask(c <-chan struct{}, umask uint32, f func() fuse.Status) fuse.Status {
	requestUmasks.Store(c, umask)
	defer requestUmasks.Delete(c)
	return f()
}

func (u umaskFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.withUmask(c, in.Umask, func() fuse.Status { return u.RawFileSystem.Mknod(c, in, name, out) })
}

func (u umaskFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.withUmask(c, in.Umask, func() fuse.Status { return u.RawFileSystem.Mkdir(c, in, name, out) })
}

func (u umaskFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return u.withUmask(c, in.Umask, func() fuse.Status { return u.RawFileSystem.Create(c, in, name, out) })
}

func (u umaskFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return u.withUmask(c, in.Umask, func() fuse.Status { return u.RawFileSystem.Tmpfile(c, in, out) })
}
