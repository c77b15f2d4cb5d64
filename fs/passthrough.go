package fs

// Passthrough lets the kernel read and write a disk-resident file's backing file directly, without a request
// to the daemon (docs/kernel.md, Passthrough). The rule for a mount is decided here, from the caps and the
// facts the mount is given, so that no caller restates it.

// passthroughRule decides whether a mount may offer passthrough, and says why not for status. The kernel
// registers a backing file only for a daemon with CAP_SYS_ADMIN (privileged), and never one on a FUSE
// filesystem (storeOnFUSE). A cap that counts written bytes (the disk cap, the owner quota) needs the daemon to
// see every write, and passthrough writes never reach it. off is "" when passthrough is on, and for the disk cap,
// which status tells from the cap itself.
func passthroughRule(diskCap, ownerQuota int64, storeOnFUSE, privileged bool) (on bool, off string) {
	switch {
	case storeOnFUSE:
		return false, "the store is on a FUSE filesystem"
	case !privileged:
		return false, "a user's mount: the kernel grants passthrough only to a daemon with CAP_SYS_ADMIN"
	case diskCap > 0:
		return false, ""
	case ownerQuota > 0:
		return false, ownerQuotaOff
	}
	return true, ""
}

// ownerQuotaOff is why a mount with --owner-quota (and no --disk) has no passthrough.
const ownerQuotaOff = "--owner-quota is set: the daemon must see every write to keep the cap"
