package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// asUser runs a shell script as uid:gid in dir and returns its output and error.
func asUser(t testing.TB, uid, gid uint32, dir, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	// A clean PATH: root's may point into /root, which other users cannot enter.
	cmd.Env = []string{"HOME=/", "PATH=/usr/local/bin:/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// openPathTo lets other users traverse the directories above dir (t.TempDir makes them 0700).
func openPathTo(t testing.TB, dir string) {
	t.Helper()
	for p := filepath.Dir(dir); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOtherUsers checks multi-user safety (docs/guarantees.md): with -o allow_other the kernel's permission checks apply, and one
// user cannot read, list, open, rename, unlink or read the xattrs of another's private entries.
func TestOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as two other users")
	}
	m := startMount(t, "-o", "allow_other")
	openPathTo(t, m.Dir)
	const alice, bob = 60001, 60002
	// Alice makes a private file and a private directory from templates in the shared 1777 root, and
	// persists the file so that it outlives her shell.
	out, err := asUser(t, alice, alice, m.Dir, `
		exec 3<>"$PWD/aliceXXXXXX"
		echo secret >&3
		name=$(python3 -c 'import os; print(os.getxattr("/proc/self/fd/3", "user.tempfs.path").decode())')
		python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.tempfs.lifetime", b"keep")' "$name"
		d=$(python3 -c 'import os; os.mkdir("adirXXXXXX"); print(os.getxattr(".", "user.tempfs.created").decode())')
		echo inside > "$d/note"
		echo "$name $PWD/$d"`)
	if err != nil {
		t.Fatalf("alice: %v: %s", err, out)
	}
	fields := strings.Fields(out)
	if len(fields) != 2 {
		t.Fatalf("alice printed %q", out)
	}
	file, dir := fields[0], fields[1]
	for _, p := range []string{file, dir} {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != alice || st.Gid != alice {
			t.Errorf("%s owned by %d:%d, want alice's %d:%d", p, st.Uid, st.Gid, alice, alice)
		}
	}
	// Bob can do none of these.
	for _, tc := range []struct{ what, script string }{
		{"read alice's file", `cat "` + file + `"`},
		{"write alice's file", `echo x >> "` + file + `"`},
		{"list alice's directory", `ls "` + dir + `"`},
		{"read inside alice's directory", `cat "` + dir + `/note"`},
		{"unlink alice's file in the sticky root", `rm -f "` + file + `"`},
		{"rename alice's file in the sticky root", `mv "` + file + `" "$PWD/stolen"`},
		{"remove alice's directory", `rm -rf "` + dir + `"; test ! -e "` + dir + `"`},
		{"read xattrs of alice's file", `python3 -c 'import os,sys; os.getxattr(sys.argv[1], "user.tempfs.path")' "` + file + `"`},
		{"chmod alice's file", `chmod 666 "` + file + `"`},
	} {
		if out, err := asUser(t, bob, bob, m.Dir, tc.script); err == nil {
			t.Errorf("bob could %s: %s", tc.what, out)
		}
	}
	// Alice still has everything.
	if out, err := asUser(t, alice, alice, m.Dir, `cat "`+file+`" "`+dir+`/note"`); err != nil || out != "secret\ninside" {
		t.Errorf("alice reads back %q, %v", out, err)
	}
}
