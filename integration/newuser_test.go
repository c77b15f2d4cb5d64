package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNewUserStoreNotOnFUSE: with TMPDIR on a tempfs mount (the README's recipe of a tempfs /tmp), the default
// store search passes over it, for tempfs run and tempfs mount alike, so that spilled data goes through one
// daemon and passthrough stays possible; a --store that names a FUSE directory is allowed, with one warning at
// start, and status says why passthrough is off.
func TestNewUserStoreNotOnFUSE(t *testing.T) {
	outer := startMount(t)
	env := append(cliQuickExit(), "TMPDIR="+outer.Dir)
	notInOuter := func(what, store string) {
		t.Helper()
		if store == "" || strings.HasPrefix(store, outer.Dir+"/") {
			t.Errorf("%s: the store %q is inside the tempfs mount %s that TMPDIR names", what, store, outer.Dir)
		}
	}

	r := cliRun(t, env, t.TempDir(), "", tempfsBin, "run", "--", "sh", "-c", `exec "$0" status --json "$TMPDIR"`, tempfsBin)
	if r.code != 0 || strings.Contains(r.stderr, "WARN") {
		t.Errorf("tempfs run with TMPDIR on a tempfs: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json inside tempfs run printed %q: %v", r.stdout, err)
	}
	store, _ := st["store"].(string)
	notInOuter("tempfs run", store)

	mp := t.TempDir()
	r = cliRun(t, env, t.TempDir(), "", tempfsBin, "mount", "--daemon", mp)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("tempfs mount --daemon with TMPDIR on a tempfs: exit %d, stderr %q", r.code, r.stderr)
	}
	// Without a system log the daemon logs to a file beside its store, which is /tmp here: the test removes it
	// after the unmount (status names it: "PATH (rotated to .1 past 1 MiB)").
	logFile, _, _ := strings.Cut(fmt.Sprint(statusJSON(t, mp)["log"]), " ")
	t.Cleanup(func() {
		if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", mp); r.code != 0 {
			t.Errorf("unmount %s: exit %d, %s", mp, r.code, r.stderr)
		}
		if strings.HasSuffix(logFile, ".log") {
			_ = os.Remove(logFile)
			_ = os.Remove(logFile + ".1")
		}
	})
	store, _ = statusJSON(t, mp)["store"].(string)
	notInOuter("tempfs mount", store)

	// Asked for by name: allowed, one warning at start that says what it costs.
	m := startMountAt(t, t.TempDir(), outer.Dir)
	if got := strings.Count(m.LogWith("level=WARN"), "level=WARN"); got != 1 || !strings.Contains(m.Log(), "FUSE") {
		t.Errorf("--store on a FUSE filesystem: %d warnings in the log, want one that says FUSE:\n%s", got, m.Log())
	}
	// Under --daemon the daemon's log goes where the caller does not look: the warning reaches its stderr too.
	mpd := t.TempDir()
	r = cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "mount", "--daemon", "--store", outer.Dir, mpd)
	if r.code != 0 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "warning: the store is on a FUSE filesystem") {
		t.Errorf("mount --daemon --store on FUSE: exit %d, stderr %q; want 0 and the one warning", r.code, r.stderr)
	}
	if r.code == 0 {
		if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", mpd); r.code != 0 {
			t.Errorf("unmount %s: exit %d, %s", mpd, r.code, r.stderr)
		}
	}
	st = statusJSON(t, m.Dir)
	if store, _ := st["store"].(string); !strings.HasPrefix(store, outer.Dir+"/") {
		t.Errorf("--store %s: the store is %q", outer.Dir, store)
	}
	if off, _ := st["passthrough_off"].(string); st["passthrough"] != false || !strings.Contains(off, "FUSE") {
		t.Errorf("--store on FUSE: passthrough %v, passthrough_off %q; want off, saying the store is on FUSE", st["passthrough"], off)
	}
}

// nonRoot is an unprivileged user's view of the machine: /dev/fuse open to everyone (0666, as distributions ship
// it) for the test's duration, the setuid fusermount3, and directories of the user's own.
type nonRoot struct {
	uid, gid  uint32
	home, tmp string
	env       []string
}

// setupNonRoot makes an unprivileged user (fusermount3 wants a name for the uid) that Cleanup removes, makes
// /dev/fuse 0666 until the test ends (restoring its mode), checks fusermount3 is setuid, and gives the user a
// home and a TMPDIR.
func setupNonRoot(t *testing.T) *nonRoot {
	t.Helper()
	coreRequireRoot(t)
	requireFUSE(t)
	bin, err := exec.LookPath("fusermount3")
	var st os.FileInfo
	if err == nil {
		st, err = os.Stat(bin)
	}
	if err != nil || st.Mode()&os.ModeSetuid == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no setuid fusermount3 (%v), and CI=true forbids skipping: scripts/setup installs fuse3", err)
		}
		t.Skipf("no setuid fusermount3 (%v): apt-get install fuse3", err)
	}
	var dev syscall.Stat_t
	if err := syscall.Stat("/dev/fuse", &dev); err != nil {
		t.Fatal(err)
	}
	if mode := dev.Mode & 0o7777; mode&0o006 != 0o006 {
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.Chmod("/dev/fuse", os.FileMode(mode)); err != nil {
				t.Errorf("restoring /dev/fuse to %04o: %v", mode, err)
			}
		})
	}
	// The user runs the test's binary: its directory and the test's must be traversable.
	openPathTo(t, tempfsBin)
	u := &nonRoot{home: t.TempDir()}
	u.uid, u.gid = addUser(t)
	openPathTo(t, u.home)
	u.tmp = filepath.Join(u.home, "tmp")
	if err := os.Mkdir(u.tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{u.home, u.tmp} {
		if err := os.Chown(d, int(u.uid), int(u.gid)); err != nil {
			t.Fatal(err)
		}
	}
	u.env = append(cliQuickExit(), "HOME="+u.home, "TMPDIR="+u.tmp,
		"PATH="+filepath.Dir(tempfsBin)+":/usr/local/bin:/usr/bin:/bin")
	return u
}

// dir makes a directory of the user's in its home.
func (u *nonRoot) dir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(u.home, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, int(u.uid), int(u.gid)); err != nil {
		t.Fatal(err)
	}
	return d
}

// run runs a command as the user, in its home, from a process of its own.
func (u *nonRoot) run(t *testing.T, name string, args ...string) cliResult {
	t.Helper()
	return u.runEnv(t, nil, name, args...)
}

// runEnv is run with extra environment variables.
func (u *nonRoot) runEnv(t *testing.T, env []string, name string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = u.home
	cmd.Env = append(append([]string(nil), u.env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// unmountAtEnd makes sure nothing the user mounted outlives the test.
func (u *nonRoot) unmountAtEnd(t *testing.T, mp string) {
	t.Cleanup(func() {
		if isMounted(mp) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			t.Errorf("%s was still mounted at the end", mp)
		}
	})
}

// TestNewUserNonRoot: an ordinary user with a usual /dev/fuse (0666) and the setuid fusermount3 mounts in the
// background, makes a kept file with mktemp, reads status, unmounts, and runs programs with tempfs run (also
// with --owner session); a foreground mount serves a disk-resident file with passthrough off from the start
// (the kernel grants it to root alone), without a warning; -o allow_other without user_allow_other and a
// mountpoint fusermount3 refuses give one line with the cause and exit status 2, also under --daemon.
func TestNewUserNonRoot(t *testing.T) {
	u := setupNonRoot(t)

	t.Run("mount mktemp status unmount", func(t *testing.T) {
		// A TMPDIR of its own: without a system log, the daemon's log file goes beside its store.
		mp, tmp := u.dir(t, "mp"), u.dir(t, "tmp-daemon")
		u.unmountAtEnd(t, mp)
		r := u.runEnv(t, []string{"TMPDIR=" + tmp}, tempfsBin, "mount", "--daemon", mp)
		if r.code != 0 || r.stderr != "" || !isMounted(mp) {
			t.Fatalf("mount --daemon as a user: exit %d, stderr %q, mounted %v", r.code, r.stderr, isMounted(mp))
		}
		// Without allow_other, the mount is the user's alone (root included): the user looks.
		r = u.run(t, tempfsBin, "mktemp", "-p", mp)
		name := strings.TrimSpace(r.stdout)
		if r.code != 0 || filepath.Dir(name) != mp {
			t.Errorf("mktemp -p as a user: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
		if r := u.run(t, "stat", "-c", "%u %F", name); r.stdout != strconv.Itoa(int(u.uid))+" regular empty file\n" {
			t.Errorf("the file mktemp made: %q %q; want an empty file of the user's", r.stdout, r.stderr)
		}
		r = u.run(t, tempfsBin, "status", mp)
		if r.code != 0 || !strings.Contains(r.stdout, "entries") || !strings.Contains(cliLineWith(r.stdout, "passthrough"), "a user's mount") {
			t.Errorf("status as a user: exit %d, stdout:\n%s\nstderr %q; want passthrough off for a user's mount", r.code, r.stdout, r.stderr)
		}
		r = u.run(t, tempfsBin, "unmount", mp)
		if r.code != 0 || isMounted(mp) {
			t.Errorf("unmount as a user: exit %d, %q, still mounted %v", r.code, r.stderr, isMounted(mp))
		}
	})

	// CMD checks that TMPDIR is a tempfs mount, writes there, and exits 3, which tempfs run passes back.
	const cmd = `awk -v d="$TMPDIR" '$5 == d && / - fuse.tempfs /' /proc/self/mountinfo | grep -q . && echo data > "$TMPDIR/f" && exec 3<>"$TMPDIR/jobXXXXXX" && exit 3`
	for _, args := range [][]string{{"run", "--", "sh", "-c", cmd}, {"run", "--owner", "session", "--", "sh", "-c", cmd}} {
		t.Run(strings.Join(args[:len(args)-4], " "), func(t *testing.T) {
			r := u.run(t, tempfsBin, args...)
			if r.code != 3 || r.stderr != "" {
				t.Errorf("tempfs %s as a user: exit %d, stderr %q; want 3 from CMD on a tempfs TMPDIR", strings.Join(args[:len(args)-1], " "), r.code, r.stderr)
			}
			cliNothingLeft(t, u.tmp)
		})
	}

	t.Run("passthrough refused to a user", func(t *testing.T) {
		mp, store := u.dir(t, "mp-fg"), u.dir(t, "store-fg")
		m := launchMount(t, mp, store, u.env, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}, "--max-size", "64KiB")
		r := u.run(t, "sh", "-c", `head -c 1000000 /dev/zero > "$0/big" && cat "$0/big" | wc -c && cat "$0/big" > /dev/null`, mp)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "1000000" {
			t.Errorf("a disk-resident file as a user: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		r = u.run(t, tempfsBin, "status", "--json", mp)
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json as a user: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		if off, _ := st["passthrough_off"].(string); st["passthrough"] != false || !strings.Contains(off, "user") || cliNumber(t, st, "disk_files") != 1 {
			t.Errorf("passthrough %v, passthrough_off %q, disk_files %v; want off for a user's mount, with the file on disk", st["passthrough"], off, st["disk_files"])
		}
		if strings.Contains(m.Log(), "level=WARN") {
			t.Errorf("the user's daemon warned:\n%s", m.Log())
		}
	})

	for _, daemon := range []bool{false, true} {
		mode := "foreground"
		if daemon {
			mode = "--daemon"
		}
		t.Run("allow_other without user_allow_other, "+mode, func(t *testing.T) {
			requireTools(t, "unshare", "setpriv")
			// fusermount3 reads /etc/fuse.conf: the test's own, without the line, replaces it in a mount
			// namespace of the command's, whatever the machine's says.
			conf := filepath.Join(t.TempDir(), "fuse.conf")
			if err := os.WriteFile(conf, []byte("#user_allow_other\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			mp := u.dir(t, "mp-ao-"+strings.TrimPrefix(mode, "--"))
			u.unmountAtEnd(t, mp)
			args := []string{"mount", "-o", "allow_other", mp}
			if daemon {
				args = append([]string{"mount", "--daemon"}, args[1:]...)
			}
			r := cliRun(t, u.env, u.home, "", "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c",
				`mount --bind "$0" /etc/fuse.conf && exec setpriv --reuid=` + strconv.Itoa(int(u.uid)) + ` --regid=` + strconv.Itoa(int(u.gid)) + ` --clear-groups "$@"`,
				conf, tempfsBin}, args...)...)
			if r.code != 2 {
				t.Errorf("a user's -o allow_other, %s: exit %d, want 2", mode, r.code)
			}
			oneLine(t, "a user's -o allow_other without user_allow_other", r.stderr, "user_allow_other in /etc/fuse.conf")
		})
		t.Run("fusermount3 refuses, "+mode, func(t *testing.T) {
			// A mountpoint the user may not write: fusermount3 refuses it, in its own words.
			mp := filepath.Join(u.home, "roots-"+strings.TrimPrefix(mode, "--"))
			if err := os.Mkdir(mp, 0o755); err != nil {
				t.Fatal(err)
			}
			u.unmountAtEnd(t, mp)
			args := []string{"mount", mp}
			if daemon {
				args = []string{"mount", "--daemon", mp}
			}
			r := u.run(t, tempfsBin, args...)
			if r.code != 2 {
				t.Errorf("mount on a root-owned mountpoint as a user, %s: exit %d, want 2", mode, r.code)
			}
			oneLine(t, "fusermount3's refusal", r.stderr, "fusermount3: user has no write access to mountpoint")
		})
	}
}

// addUser adds a system user with a group of its own, without a home or a shell, and removes both in Cleanup.
func addUser(t *testing.T) (uid, gid uint32) {
	t.Helper()
	name := fmt.Sprintf("tfs%d", time.Now().UnixNano()%1e9)
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	usr, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u, err1 := strconv.ParseUint(usr.Uid, 10, 32)
	g, err2 := strconv.ParseUint(usr.Gid, 10, 32)
	if err1 != nil || err2 != nil || u == 0 {
		t.Fatalf("user %s: uid %q, gid %q", name, usr.Uid, usr.Gid)
	}
	return uint32(u), uint32(g)
}

// TestNewUserStatusAfterQuickStart: after what the README's first command does (a private file from a template,
// ls -l, close), status reads 0 failed, with the normal answers (ENOENT to lookups, ENODATA to getxattrs, a
// first ENOSYS) counted apart; its exit status is 0 for a live mount, 1 for a dead one, 2 for a plain directory.
func TestNewUserStatusAfterQuickStart(t *testing.T) {
	m := startMount(t)
	sh(t, m.Dir, `exec 3<>"$PWD/jobXXXXXX" && ls -l "$PWD" >/dev/null && exec 3>&-`)
	cliWaitNoHandles(t, m.Dir)
	r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", m.Dir)
	line := cliLineWith(r.stdout, "requests")
	if r.code != 0 || !strings.Contains(line, " 0 failed;") || !strings.Contains(line, "expected answers") {
		t.Errorf("status after the quick start: exit %d, requests line %q; want 0 failed, the normal answers apart", r.code, line)
	}
	st := statusJSON(t, m.Dir)
	req, _ := st["requests"].(map[string]any)
	if errs, _ := req["errors"].(float64); errs == 0 || req["expected_errors"] != errs {
		t.Errorf("status --json: errors %v, expected_errors %v; want them equal and non-zero", req["errors"], req["expected_errors"])
	}
	if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", t.TempDir()); r.code != 2 {
		t.Errorf("status of a plain directory: exit %d, want 2", r.code)
	}
	m.crash(t)
	if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", m.Dir); r.code != 1 || !strings.Contains(r.stderr, "dead mount") {
		t.Errorf("status of a dead mount: exit %d, %q; want 1", r.code, r.stderr)
	}
}
