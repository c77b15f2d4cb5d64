package integration

// Tests of the commands that drive tempfs from the outside (docs/guarantees.md, The command
// line): `tempfs run`, `tempfs mktemp`
// (against coreutils mktemp off a mount, through templates on one) and `tempfs status`. Every command runs as
// a separate process: the built binary.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliResult is what one command line did.
type cliResult struct {
	stdout, stderr string
	code           int // the exit status; -1 when killed by a signal
}

// cliRun runs the tempfs binary (or another program when bin is not tempfsBin) in dir with env added to the
// test's environment, and returns what it did. It fails the test only when the program cannot run at all.
func cliRun(t testing.TB, env []string, dir, stdin, bin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s %q: %v", bin, args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// cliQuickExit is the environment for short single-goroutine commands (mktemp, status): a binary built with
// -race otherwise sleeps a second at exit for other threads to report races, and these have none.
func cliQuickExit() []string {
	return []string{"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}

// cliNothingLeft fails the test if anything remains under dir (the parent given to --dir or --store, or the
// TMPDIR of a `tempfs run`): no mount directory, no store. mounted lists paths that must not be mountpoints.
func cliNothingLeft(t testing.TB, dir string, mounted ...string) {
	t.Helper()
	for _, mp := range mounted {
		if isMounted(mp) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
			t.Errorf("%s is still mounted after tempfs run exited", mp)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

// TestCLIRunExitStatus: `tempfs run` returns CMD's exit status (128+N for a signal), runs it with TMPDIR, TEMP
// and TMP on a FUSE mount and the rest of the environment and stdin/stdout kept, and leaves no mount, mount
// directory or store behind, also when CMD kills itself with SIGKILL.
func TestCLIRunExitStatus(t *testing.T) {
	requireFUSE(t)
	// The script prints what it saw, so that the test checks it from the outside after the mount is gone.
	const probe = `printf '%s\n' "$TMPDIR" "$TEMP" "$TMP" "$CLI_KEEP"; stat -f -c %T "$TMPDIR"; cat; `
	cases := []struct {
		name, tail string
		want       int
	}{
		{"exit 0", "exit 0", 0},
		{"exit 3", "exit 3", 3},
		{"SIGKILL", "kill -9 $$", 128 + int(syscall.SIGKILL)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			// No --dir and no --store: both default to TMPDIR, so everything tempfs makes is under tmp.
			r := cliRun(t, []string{"TMPDIR=" + tmp, "TEMP=", "TMP=", "CLI_KEEP=kept"}, t.TempDir(), "from stdin\n",
				tempfsBin, "run", "--", "sh", "-c", probe+tc.tail)
			if r.code != tc.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", r.code, tc.want, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			if len(lines) != 6 {
				t.Fatalf("CMD printed %q; want TMPDIR, TEMP, TMP, CLI_KEEP, the fs type and stdin", r.stdout)
			}
			mp := lines[0]
			if filepath.Dir(mp) != tmp {
				t.Errorf("TMPDIR=%s is not a fresh directory under the TMPDIR tempfs run was given (%s)", mp, tmp)
			}
			if lines[1] != mp || lines[2] != mp {
				t.Errorf("TEMP=%q TMP=%q, want both %q", lines[1], lines[2], mp)
			}
			if lines[3] != "kept" {
				t.Errorf("CLI_KEEP=%q: the rest of the environment was not passed on", lines[3])
			}
			if lines[4] != "fuseblk" && lines[4] != "fuse" {
				t.Errorf("stat -f says TMPDIR is on %q, not a FUSE mount", lines[4])
			}
			if lines[5] != "from stdin" {
				t.Errorf("CMD read %q from stdin, want %q", lines[5], "from stdin")
			}
			cliNothingLeft(t, tmp, mp)
		})
	}
}

// TestCLIRunCleanStderr: the in-process daemon logs nothing below warning level, so CMD's stderr is its own.
func TestCLIRunCleanStderr(t *testing.T) {
	requireFUSE(t)
	parent, store := t.TempDir(), t.TempDir()
	r := cliRun(t, nil, t.TempDir(), "", tempfsBin, "run", "--dir", parent, "--store", store, "--",
		"sh", "-c", `echo data > "$TMPDIR/f"; cat "$TMPDIR/f" >&2`)
	if r.code != 0 || r.stderr != "data\n" {
		t.Errorf("exit %d, stderr %q; want 0 and exactly CMD's own %q", r.code, r.stderr, "data\n")
	}
	cliNothingLeft(t, parent)
	cliNothingLeft(t, store)
}

// TestCLIRunCannotStart: a missing CMD exits 127 and one that cannot be executed 126, each with one line, as a
// shell does; nothing is left behind.
func TestCLIRunCannotStart(t *testing.T) {
	requireFUSE(t)
	plain := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cmd  string
		want int
	}{
		{"not in PATH", "tempfs-cli-test-no-such-command", 127},
		{"no such path", filepath.Join(t.TempDir(), "missing"), 127},
		{"not executable", plain, 126},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The shell's own answer is the reference for the status.
			shell := cliRun(t, nil, t.TempDir(), "", "sh", "-c", `"$0"`, tc.cmd)
			if shell.code != tc.want {
				t.Fatalf("sh gives %d for %s, the test expected %d", shell.code, tc.cmd, tc.want)
			}
			parent, store := t.TempDir(), t.TempDir()
			r := cliRun(t, nil, t.TempDir(), "", tempfsBin, "run", "--dir", parent, "--store", store, "--", tc.cmd)
			if r.code != tc.want {
				t.Errorf("exit status %d, want %d (as sh)", r.code, tc.want)
			}
			if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.Contains(r.stderr, tc.cmd) {
				t.Errorf("stderr %q: want one line naming the command", r.stderr)
			}
			cliNothingLeft(t, parent)
			cliNothingLeft(t, store)
		})
	}
}

// TestCLIRunReport: --report lists what CMD left behind with its size, and counts what it wrote, spilled to disk
// and made from templates.
func TestCLIRunReport(t *testing.T) {
	requireFUSE(t)
	const size = 12345 // more than --max-size: the file rolls over to disk
	parent, store := t.TempDir(), t.TempDir()
	script := fmt.Sprintf(`mkdir "$TMPDIR/out"
head -c %d /dev/zero > "$TMPDIR/out/data.bin"
exec 3>"$TMPDIR/jobXXXXXX"
echo done`, size)
	r := cliRun(t, nil, t.TempDir(), "", tempfsBin, "run", "--report", "--max-size", "4KiB", "--dir", parent, "--store", store,
		"--", "sh", "-c", script)
	if r.code != 0 || r.stdout != "done\n" {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	line := cliLineWith(r.stderr, "out/data.bin")
	if line == "" || !strings.Contains(line, strconv.Itoa(size)) {
		t.Errorf("the report does not list out/data.bin with its size %d:\n%s", size, r.stderr)
	}
	if cliLineWith(r.stderr, "out/") == "" {
		t.Errorf("the report does not list the directory out/:\n%s", r.stderr)
	}
	if n := cliReportNumber(t, r.stderr, `entries created\s+\d+ in total, (\d+) from templates`); n != 1 {
		t.Errorf("report says %d entries from templates, CMD made 1:\n%s", n, r.stderr)
	}
	if n := cliReportNumber(t, r.stderr, `entries created\s+(\d+) in total`); n != 3 {
		t.Errorf("report says %d entries created in total, CMD made 3 (out/, out/data.bin, the template file):\n%s", n, r.stderr)
	}
	if n := cliReportNumber(t, r.stderr, `bytes written\s+.*?\((\d+) bytes\)`); n < size {
		t.Errorf("report says %d bytes written, CMD wrote %d:\n%s", n, size, r.stderr)
	}
	if n := cliReportNumber(t, r.stderr, `spilled to disk.* in (\d+) rollovers?`); n < 1 {
		t.Errorf("report says %d rollovers; a %d-byte file passed --max-size 4KiB:\n%s", n, size, r.stderr)
	}
	cliNothingLeft(t, parent)
	cliNothingLeft(t, store)
}

// cliLineWith is the first line of out that contains s.
func cliLineWith(out, s string) string {
	for line := range strings.Lines(out) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

func cliReportNumber(t testing.TB, report, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("report has no match for %s:\n%s", re, report)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCLIRunForwardsSignals: every forwardable signal sent to `tempfs run` reaches CMD, whose exit status comes
// back, and the mount is cleaned up (an earlier build swallowed SIGUSR1, SIGUSR2 and SIGHUP).
func TestCLIRunForwardsSignals(t *testing.T) {
	requireFUSE(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
	}{
		{syscall.SIGTERM, "TERM"},
		{syscall.SIGINT, "INT"},
		{syscall.SIGHUP, "HUP"},
		{syscall.SIGQUIT, "QUIT"},
		{syscall.SIGUSR1, "USR1"},
		{syscall.SIGUSR2, "USR2"},
		{syscall.SIGALRM, "ALRM"},
		{syscall.SIGWINCH, "WINCH"},
	} {
		// CMD exits with a status of its own only from its trap: if tempfs run did not forward the signal, CMD
		// would go on waiting and the test would time out; if tempfs run died of the signal, the status would
		// be -1.
		script := `trap 'kill $p; echo got-` + tc.name + `; exit 7' ` + tc.name + `
sleep 1000 </dev/null >/dev/null 2>&1 & p=$!
echo "ready $TMPDIR"
wait $p`
		const want = 7
		echo := "got-" + tc.name
		t.Run(tc.sig.String(), func(t *testing.T) {
			parent, store := t.TempDir(), t.TempDir()
			cmd := exec.Command(tempfsBin, "run", "--dir", parent, "--store", store, "--", "sh", "-c", script)
			// Its own process group, so that a terminal the test runs from sends it nothing
			// (TestOpsRunUnderTerminal is the test with a terminal).
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var stderr syncBuffer
			cmd.Stderr = &stderr
			stdout := startReading(t, cmd, cmd.StdoutPipe)
			exited := make(chan struct{})
			defer func() {
				select {
				case <-exited:
				default:
					_ = cmd.Process.Kill()
				}
			}()
			out := bufio.NewReader(stdout)
			lines := make(chan string, 1)
			go func() {
				line, _ := out.ReadString('\n')
				lines <- line
			}()
			var ready string
			select {
			case ready = <-lines:
			case <-time.After(60 * time.Second):
				t.Fatalf("CMD did not start within 60s; stderr:\n%s", stderr.String())
			}
			mp, ok := strings.CutPrefix(strings.TrimSpace(ready), "ready ")
			if !ok {
				t.Fatalf("CMD did not start: %q; stderr:\n%s", ready, stderr.String())
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			var rest []byte
			go func() {
				rest, _ = io.ReadAll(out)
				_ = cmd.Wait()
				close(exited)
			}()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("tempfs run still running 30s after %v; stderr:\n%s", tc.sig, stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != want || strings.TrimSpace(string(rest)) != echo {
				t.Errorf("exit %d, CMD printed %q; want %d and %q; stderr:\n%s", code, rest, want, echo, stderr.String())
			}
			cliNothingLeft(t, parent, mp)
			cliNothingLeft(t, store)
		})
	}
}

// TestCLIRunBusyDetaches: a background process that CMD left holding a file in the scratch dir does not keep
// tempfs run from returning: the mount is detached, and the store and the mount directory are removed anyway.
func TestCLIRunBusyDetaches(t *testing.T) {
	requireFUSE(t)
	parent, store, state := t.TempDir(), t.TempDir(), t.TempDir()
	pidFile := filepath.Join(state, "pid")
	// CMD exits only once the holder has the file open (creating it is part of that open): otherwise the
	// unmount could win the race and the holder would create the file in the bare mount directory.
	script := `sleep 1000 3>"$TMPDIR/held" </dev/null >/dev/null 2>&1 &
echo $! > "$0"
while [ ! -e "$TMPDIR/held" ]; do :; done
echo "$TMPDIR"`
	r := cliRun(t, nil, t.TempDir(), "", tempfsBin, "run", "--dir", parent, "--store", store, "--", "sh", "-c", script, pidFile)
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("no pid from CMD: %v; stderr:\n%s", err, r.stderr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	// tempfs run has returned; the holder must still be alive, or the test proves nothing about waiting.
	alive := syscall.Kill(pid, 0) == nil
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !alive {
		t.Fatalf("the background holder %d was gone when tempfs run returned; the test cannot tell whether tempfs run waited", pid)
	}
	if r.code != 0 {
		t.Errorf("exit status %d, want CMD's 0; stderr:\n%s", r.code, r.stderr)
	}
	cliNothingLeft(t, parent, strings.TrimSpace(r.stdout))
	cliNothingLeft(t, store)
}

// cliMktempCase is one command line given to coreutils mktemp and to tempfs mktemp.
type cliMktempCase struct {
	name string
	args []string
	// xs is the number of characters that may differ between two runs: the X replaced.
	xs int
}

// TestCLIMktempLikeCoreutils: off a tempfs mount, tempfs mktemp gives coreutils mktemp's exit status, name shape
// (directory, prefix, length, suffix) and file type and mode for the same flags; only the random characters
// differ.
func TestCLIMktempLikeCoreutils(t *testing.T) {
	coreutils, err := exec.LookPath("mktemp")
	if err != nil {
		t.Skip("no coreutils mktemp")
	}
	other := t.TempDir()
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []cliMktempCase{
		{"default", nil, 10},
		{"-d", []string{"-d"}, 10},
		{"-u", []string{"-u"}, 10},
		{"-q bad dir", []string{"-q", "-p", missing}, 0},
		{"bad dir", []string{"-p", missing}, 0},
		{"-p", []string{"-p", other, "fooXXX"}, 3},
		{"-p -d", []string{"-d", "-p", other, "dirXXXXXXXX"}, 8},
		{"-t", []string{"-t", "barXXXX"}, 4},
		{"-t with -p", []string{"-t", "-p", other, "barXXXX"}, 4},
		{"--tmpdir", []string{"--tmpdir", "tdXXXXX"}, 5},
		{"--tmpdir=DIR", []string{"--tmpdir=" + other, "tdXXXXX"}, 5},
		{"relative", []string{"relXXXXX"}, 5},
		{"--suffix", []string{"--suffix", ".txt", "bazXXXXX"}, 5},
		{"implied suffix", []string{"-p", other, "aXXXXb.c"}, 4},
		{"too few X", []string{"fooXX"}, 0},
		{"too few X, quiet", []string{"-q", "fooXX"}, 0},
		{"--suffix needs a final X", []string{"--suffix", ".x", "fooXXXa"}, 0},
		{"-t with a slash", []string{"-t", "a/bXXX"}, 0},
		{"--tmpdir with an absolute template", []string{"--tmpdir", "/abs/XXXX"}, 0},
		{"too many templates", []string{"aXXX", "bXXX"}, 0},
		{"unknown flag", []string{"--no-such-flag"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			env := append(cliQuickExit(), "TMPDIR="+tmp)
			cwd := t.TempDir()
			want := cliRun(t, env, cwd, "", coreutils, tc.args...)
			got := cliRun(t, env, cwd, "", tempfsBin, append([]string{"mktemp"}, tc.args...)...)
			if got.code != want.code {
				t.Fatalf("exit status %d, coreutils %d (stderr %q, coreutils %q)", got.code, want.code, got.stderr, want.stderr)
			}
			if (got.stderr == "") != (want.stderr == "") || strings.Count(got.stderr, "\n") > 1 {
				t.Errorf("stderr %q; coreutils %q: want a message exactly when coreutils gives one, on one line", got.stderr, want.stderr)
			}
			if want.code != 0 {
				if got.stdout != "" {
					t.Errorf("failed but printed %q", got.stdout)
				}
				return
			}
			cliSameShape(t, strings.TrimSuffix(got.stdout, "\n"), strings.TrimSuffix(want.stdout, "\n"), tc.xs, cwd)
		})
	}
}

// cliSameShape checks that name (tempfs mktemp's) looks like ref (coreutils'): the same directory, length,
// and characters outside a window of at most xs that differs, random characters from tempfs's alphabet in
// that window, and the same file type and mode on disk (or both absent, for -u).
func cliSameShape(t *testing.T, name, ref string, xs int, cwd string) {
	t.Helper()
	if filepath.Dir(name) != filepath.Dir(ref) || len(name) != len(ref) || filepath.IsAbs(name) != filepath.IsAbs(ref) {
		t.Fatalf("name %q, coreutils %q: want the same directory and length", name, ref)
	}
	p := 0
	for p < len(name) && name[p] == ref[p] {
		p++
	}
	s := 0
	for s < len(name)-p && name[len(name)-1-s] == ref[len(ref)-1-s] {
		s++
	}
	if window := len(name) - p - s; window > xs {
		t.Errorf("name %q and coreutils %q differ in %d characters, more than the %d X", name, ref, window, xs)
	}
	for _, c := range name[p : len(name)-s] {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789_", c) {
			t.Errorf("name %q has %q, outside tempfs's alphabet", name, c)
		}
	}
	abs := func(n string) string {
		if filepath.IsAbs(n) {
			return n
		}
		return filepath.Join(cwd, n)
	}
	gotInfo, gotErr := os.Lstat(abs(name))
	wantInfo, wantErr := os.Lstat(abs(ref))
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Errorf("%s exists: %v; coreutils' %s exists: %v", name, gotErr == nil, ref, wantErr == nil)
	case gotErr == nil && gotInfo.Mode() != wantInfo.Mode():
		t.Errorf("%s has mode %v, coreutils' %v", name, gotInfo.Mode(), wantInfo.Mode())
	}
}

func cliNumber(t testing.TB, st map[string]any, key string) int64 {
	t.Helper()
	v, ok := st[key].(float64)
	if !ok {
		t.Fatalf("status field %q is %v (%T), not a number", key, st[key], st[key])
	}
	return int64(v)
}

// cliWaitNoHandles waits until the daemon has served the release of every handle: an entry that was to go
// at its last close is gone by then.
func cliWaitNoHandles(t testing.TB, dir string) {
	t.Helper()
	eventually(t, 10*time.Second, "open handles drain to 0", func() bool { return cliNumber(t, daemonStats(t, dir), "open_handles") == 0 })
}

// TestCLIMktempOnMount: on a tempfs mount, mktemp makes its entry through a template (the daemon counts it), and
// the file outlives the command (it is not a close-lifetime template file), 0600; -d makes a 0700 directory.
// A run of 3 X is padded to tempfs's 6.
func TestCLIMktempOnMount(t *testing.T) {
	m := startMount(t)
	if err := os.Mkdir(m.Path("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		dir    string
		prefix string
		suffix string
		run    int
		mode   os.FileMode
	}{
		{"default template", []string{"-p", m.Dir}, m.Dir, "tmp.", "", 10, 0o600},
		{"3 X padded to 6", []string{"-p", m.Dir, "jobXXX"}, m.Dir, "job", "", 6, 0o600},
		{"suffix", []string{"-p", m.Dir, "--suffix", ".json", "rXXXXXXX"}, m.Dir, "r", ".json", 7, 0o600},
		{"subdirectory", []string{"-p", m.Path("sub"), "sXXXXXX"}, m.Path("sub"), "s", "", 6, 0o600},
		{"TMPDIR", []string{"-t", "tXXXXXX"}, m.Dir, "t", "", 6, 0o600},
		{"-d", []string{"-d", "-p", m.Dir, "dXXXX"}, m.Dir, "d", "", 6, 0o700 | os.ModeDir},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := cliNumber(t, daemonStats(t, m.Dir), "template_entries")
			r := cliRun(t, append(cliQuickExit(), "TMPDIR="+m.Dir), t.TempDir(), "", tempfsBin, append([]string{"mktemp"}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d; stderr %q", r.code, r.stderr)
			}
			name := strings.TrimSuffix(r.stdout, "\n")
			base := filepath.Base(name)
			if filepath.Dir(name) != tc.dir || !strings.HasPrefix(base, tc.prefix) || !strings.HasSuffix(base, tc.suffix) ||
				len(base) != len(tc.prefix)+tc.run+len(tc.suffix) {
				t.Errorf("name %q: want %s/%s + %d random + %s", name, tc.dir, tc.prefix, tc.run, tc.suffix)
			}
			if after := cliNumber(t, daemonStats(t, m.Dir), "template_entries"); after != before+1 {
				t.Errorf("the daemon counted %d entries made from templates, want 1", after-before)
			}
			// Once the command's handle is released, a file with the close lifetime would be gone.
			cliWaitNoHandles(t, m.Dir)
			info, err := os.Lstat(name)
			if err != nil {
				t.Fatalf("%s is gone after mktemp exited: %v", name, err)
			}
			if info.Mode() != tc.mode {
				t.Errorf("%s: mode %v, want %v", name, info.Mode(), tc.mode)
			}
			buf := make([]byte, 16)
			n, err := syscall.Getxattr(name, "user.tempfs.lifetime", buf)
			if err != nil || string(buf[:n]) != "keep" {
				t.Errorf("%s: user.tempfs.lifetime = %q, %v; want keep", name, buf[:n], err)
			}
		})
	}
}

// TestCLIStatus: status --json reports what the test did on the mount, with the contract's fields; the human
// table shows the same mount; a plain directory or a directory inside a mount is refused with exit status 2.
func TestCLIStatus(t *testing.T) {
	const memory, maxSize = 64 << 20, 64 << 10
	m := startMount(t, "--memory", "64MiB", "--max-size", "64KiB")
	sizes := map[string]int{"a": 1000, "b": 20000, "c": 3}
	ram := 0
	for name, n := range sizes {
		if err := os.WriteFile(m.Path(name), bytes.Repeat([]byte{'x'}, n), 0o644); err != nil {
			t.Fatal(err)
		}
		ram += n
	}
	const big = 3 * maxSize // past --max-size: rolled over to the disk store
	if err := os.Mkdir(m.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("d", "big"), bytes.Repeat([]byte{'y'}, big), 0o644); err != nil {
		t.Fatal(err)
	}
	cliWaitNoHandles(t, m.Dir)

	r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", "--json", m.Dir)
	if r.code != 0 {
		t.Fatalf("status --json: exit %d, stderr %q", r.code, r.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json printed %q: %v", r.stdout, err)
	}
	for _, key := range []string{"entries", "files", "dirs", "open_handles", "ram_bytes", "ram_cap", "disk_bytes", "disk_cap", "rollovers", "passthrough", "uptime_seconds"} {
		if _, ok := st[key]; !ok {
			t.Errorf("status --json lacks %q: %s", key, r.stdout)
		}
	}
	if _, ok := st["passthrough"].(bool); !ok {
		t.Errorf("passthrough is %v, not a boolean", st["passthrough"])
	}
	if v, ok := st["disk_cap"]; !ok || v != nil {
		t.Errorf("disk_cap is %v without --disk, want null (no cap)", v)
	}
	for key, want := range map[string]int64{"files": 4, "dirs": 1, "entries": 5, "open_handles": 0, "ram_cap": memory} {
		if got := cliNumber(t, st, key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
	if got := cliNumber(t, st, "ram_bytes"); got < int64(ram) {
		t.Errorf("ram_bytes = %d, less than the %d bytes written to files under --max-size", got, ram)
	}
	if got := cliNumber(t, st, "disk_bytes"); got < big {
		t.Errorf("disk_bytes = %d, less than the %d-byte file past --max-size", got, big)
	}
	if got := cliNumber(t, st, "rollovers"); got < 1 {
		t.Errorf("rollovers = %d; a file passed --max-size", got)
	}
	if up, ok := st["uptime_seconds"].(float64); !ok || up <= 0 {
		t.Errorf("uptime_seconds = %v", st["uptime_seconds"])
	}

	human := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", m.Dir)
	if human.code != 0 || !strings.Contains(human.stdout, m.Dir) || !strings.Contains(cliLineWith(human.stdout, "entries"), "5") {
		t.Errorf("status: exit %d, output:\n%s", human.code, human.stdout)
	}
	// No cap reads as no cap, not as "0 B of free space".
	if line := cliLineWith(human.stdout, "disk"); !strings.Contains(line, "no cap") || strings.Contains(line, "0 B of") {
		t.Errorf("status without --disk: %q, want it to say there is no cap", line)
	}

	for name, dir := range map[string]string{"plain directory": t.TempDir(), "inside a mount": m.Path("d")} {
		r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "status", dir)
		if r.code != 2 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "tempfs mount") {
			t.Errorf("status on a %s: exit %d, stdout %q, stderr %q; want 2 and one line saying it is not a tempfs mount", name, r.code, r.stdout, r.stderr)
		}
	}
}
