package fs

import (
	"bytes"
	"slices"
	"testing"
)

// The ACL rules against what the kernel's fs/posix_acl.c gives (values seen on a tmpfs with getfacl).
func TestACLRules(t *testing.T) {
	// user::rwx user:1000:rwx group::rwx mask::rwx other::--- as the default ACL of a directory.
	deflt := []aclEntry{{aclUserObj, 7, 0}, {aclUser, 7, 1000}, {aclGroupObj, 7, 0}, {aclMask, 7, 0}, {aclOther, 0, 0}}
	data := encodeACL(deflt)
	back, ok := parseACL(data)
	if !ok || !slices.Equal(back, deflt) || !bytes.Equal(encodeACL(back), data) {
		t.Fatalf("round trip: %v %v", back, ok)
	}
	if _, ok := parseACL(data[:len(data)-1]); ok {
		t.Error("a truncated ACL parsed")
	}

	// creat(0666) under it: user::rw- mask::rw- other::---, mode 0660, the ACL kept.
	entries := slices.Clone(deflt)
	mode, extended := aclCreateMasq(entries, 0o100666)
	if mode != 0o100660 || !extended {
		t.Errorf("create masq: mode %o extended %v", mode, extended)
	}
	want := []aclEntry{{aclUserObj, 6, 0}, {aclUser, 7, 1000}, {aclGroupObj, 7, 0}, {aclMask, 6, 0}, {aclOther, 0, 0}}
	if !slices.Equal(entries, want) {
		t.Errorf("create masq: %v, want %v", entries, want)
	}
	// Without a mask the owning group narrows; no named entry: not extended.
	minimal := []aclEntry{{aclUserObj, 7, 0}, {aclGroupObj, 5, 0}, {aclOther, 5, 0}}
	if mode, extended := aclCreateMasq(minimal, 0o4777); mode != 0o4755 || extended {
		t.Errorf("minimal create masq: mode %o extended %v", mode, extended)
	}

	// chmod 0640 sets owner, mask (not the owning group) and other.
	aclChmod(entries, 0o640)
	want = []aclEntry{{aclUserObj, 6, 0}, {aclUser, 7, 1000}, {aclGroupObj, 7, 0}, {aclMask, 4, 0}, {aclOther, 0, 0}}
	if !slices.Equal(entries, want) {
		t.Errorf("chmod: %v, want %v", entries, want)
	}
	if perm, extended := aclEquivMode(entries); perm != 0o640 || !extended {
		t.Errorf("equiv mode: %o %v", perm, extended)
	}
	if perm, extended := aclEquivMode(minimal); perm != 0o755 || extended {
		t.Errorf("equiv mode of a minimal ACL: %o %v", perm, extended)
	}
}
