package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPosixACLs: setfacl and getfacl work on access and default ACLs as on a tmpfs; new files, directories,
// fifos and O_TMPFILE files take their directory's default ACL (and the umask does not apply under one);
// chmod and the ACL's mask move together; an ACL that the mode can say is not kept; setting one drops
// set-group-ID for a caller outside the file's group; and the kernel enforces
// the ACLs for other users, also right after a chmod or setfacl changed them. Each step runs beside a kernel
// tmpfs and the two outputs are compared.
func TestPosixACLs(t *testing.T) {
	coreRequireTool(t, "setfacl")
	coreRequireTool(t, "getfacl")
	coreRequireTool(t, "getfattr")
	ref := coreTmpfs(t)
	m := startMount(t, "-o", "allow_other")
	openPathTo(t, m.Dir)
	openPathTo(t, ref)
	// bob is the named user, carol is in the named group, alice is neither.
	const alice, bob, carol = 60001, 60002, 60003
	var outs [2]string
	for i, dir := range []string{ref, m.Dir} {
		work := filepath.Join(dir, "acl")
		if err := os.Mkdir(work, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(work, 0o777); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		root := func(script string) {
			t.Helper()
			out, code := coreRunScript(t, work, "umask 022\n"+script)
			if code != 0 {
				t.Fatalf("in %s: exit %d:\n%s", work, code, out)
			}
			b.WriteString(out)
		}
		as := func(uid uint32, script string) {
			t.Helper()
			out, err := asUser(t, uid, uid, work, script)
			if err != nil {
				t.Fatalf("as %d in %s: %v:\n%s", uid, work, err, out)
			}
			b.WriteString("as " + map[uint32]string{alice: "alice", bob: "bob", carol: "carol"}[uid] + ":\n" + out + "\n")
		}
		// try prints whether a command was allowed, without its message.
		const try = `try() { if "$@" >/dev/null 2>&1; then echo "$* ok"; else echo "$* denied"; fi; }`
		root(`
mkdir shared; chmod 0750 shared
setfacl -m u:60002:rwx,g:60003:rx shared
setfacl -d -m u:60002:rwx,g::rwx,o::- shared
getfacl -pn shared
stat -c '%n %a' shared
echo secret > shared/f
mkdir shared/sub; mknod shared/fifo p
python3 -c '
import ctypes, os
fd = os.open("shared", os.O_TMPFILE | os.O_WRONLY, 0o640)
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
if ctypes.CDLL(None).linkat(AT_FDCWD, b"/proc/self/fd/%d" % fd, AT_FDCWD, b"shared/tmp", AT_SYMLINK_FOLLOW):
    raise OSError("linkat")
'
stat -c '%n %a' shared/f shared/sub shared/fifo shared/tmp
getfacl -pn shared/f shared/sub shared/fifo shared/tmp
echo "--- outside a default ACL the umask applies"
touch plain; mkdir plaindir; stat -c '%n %a' plain plaindir
(umask 027; touch plain2; mkdir plaindir2; mknod plainfifo p; python3 -c '
import ctypes, os
fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o666)
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
if ctypes.CDLL(None).linkat(AT_FDCWD, b"/proc/self/fd/%d" % fd, AT_FDCWD, b"plaintmp", AT_SYMLINK_FOLLOW):
    raise OSError("linkat")
')
stat -c '%n %a' plain2 plaindir2 plainfifo plaintmp
echo "--- an ACL the mode can say is not kept"
setfacl -m u::rw,g::r,o::- plain; stat -c '%n %a' plain
getfattr -n system.posix_acl_access plain 2>&1 | grep -c 'No such attribute' || true
getfacl -pn plain
`)
		as(bob, try+`
umask 077
try ls shared; try cat shared/f; try sh -c 'echo bob >> shared/f'
echo bob > shared/bobfile; mkdir shared/bobdir
stat -c '%n %a' shared/bobfile shared/bobdir`)
		as(carol, try+`
try ls shared; try cat shared/f; try touch shared/carol`)
		as(alice, try+`
try ls shared; try cat shared/f`)
		// Setting an access ACL drops set-group-ID when the caller is outside the file's group.
		root(`
echo data > sgid; chown 60001:60003 sgid; chmod 2775 sgid
`)
		as(alice, `setfacl -m u:60002:rx sgid && stat -c '%n %a' sgid`)
		root(`
echo "--- chmod sets the mask"
chmod 0640 shared/f; getfacl -pn shared/f; stat -c '%n %a' shared/f
`)
		as(bob, try+`
try cat shared/f; try sh -c 'echo bob >> shared/f'`)
		root(`
chmod 0600 shared/f; getfacl -pn shared/f; stat -c '%n %a' shared/f
`)
		as(bob, try+`
try cat shared/f`)
		root(`
echo "--- setting the mask sets the group bits"
setfacl -m m::rw shared/f; stat -c '%n %a' shared/f
`)
		as(bob, try+`
try cat shared/f; try sh -c 'echo bob >> shared/f'`)
		root(`
echo "--- removing the ACLs"
setfacl -b shared/f; stat -c '%n %a' shared/f; getfacl -pn shared/f
setfacl -k shared; getfacl -pn shared
touch shared/after; stat -c '%n %a' shared/after; getfacl -pn shared/after
`)
		as(bob, try+`
try cat shared/f; try ls shared`)
		outs[i] = b.String()
	}
	t.Logf("tmpfs:\n%s", outs[0])
	if !strings.Contains(outs[0], "user:60002:rwx") || !strings.Contains(outs[0], "cat shared/f denied") {
		t.Fatalf("tmpfs does not show what the test expects:\n%s", outs[0])
	}
	if outs[0] != outs[1] {
		t.Errorf("tempfs differs from tmpfs:\ntmpfs:\n%s\ntempfs:\n%s", outs[0], outs[1])
	}
	coreNoDaemonComplaints(t, m.Log())
}
