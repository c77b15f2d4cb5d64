package fs

import "testing"

// TestPassthroughRule: passthrough is on only for a privileged daemon whose store is not on FUSE and that keeps
// no cap needing every write; the reason status shows names the first of these that turned it off.
func TestPassthroughRule(t *testing.T) {
	for _, tc := range []struct {
		name                string
		diskCap, ownerQuota int64
		storeOnFUSE, priv   bool
		on                  bool
		off                 string
	}{
		{name: "root, no cap", priv: true, on: true},
		{name: "disk cap", diskCap: 1 << 30, priv: true},
		{name: "owner quota", ownerQuota: 1 << 20, priv: true, off: ownerQuotaOff},
		{name: "owner quota and disk cap", ownerQuota: 1 << 20, diskCap: 1 << 30, priv: true},
		{name: "user's mount", off: "a user's mount: the kernel grants passthrough only to a daemon with CAP_SYS_ADMIN"},
		{name: "user's mount with a disk cap", diskCap: 1 << 30, off: "a user's mount: the kernel grants passthrough only to a daemon with CAP_SYS_ADMIN"},
		{name: "store on FUSE", storeOnFUSE: true, priv: true, off: "the store is on a FUSE filesystem"},
		{name: "store on FUSE, user's mount", storeOnFUSE: true, off: "the store is on a FUSE filesystem"},
	} {
		on, off := passthroughRule(tc.diskCap, tc.ownerQuota, tc.storeOnFUSE, tc.priv)
		if on != tc.on || off != tc.off {
			t.Errorf("%s: passthrough %v, off %q; want %v, %q", tc.name, on, off, tc.on, tc.off)
		}
	}
}
