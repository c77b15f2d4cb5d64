package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exampleComment is the comment after an example command line, which says what it does.
var exampleComment = regexp.MustCompile(`\s+#\s.*$`)

// helpExamples returns every command line of the Examples sections of tempfs's --help texts (the root's and
// each command's), comments dropped, with the command whose help shows it.
func helpExamples(t *testing.T) map[string]string {
	t.Helper()
	help := func(args ...string) string {
		r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, append(args, "--help")...)
		if r.code != 0 {
			t.Fatalf("tempfs %v --help: exit %d, %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	section := func(text, title string) []string {
		var lines []string
		in := false
		for line := range strings.Lines(text) {
			line = strings.TrimRight(line, "\n")
			switch {
			case line == title:
				in = true
			case in && strings.TrimSpace(line) == "":
				return lines
			case in:
				lines = append(lines, strings.TrimSpace(line))
			}
		}
		return lines
	}
	examples := map[string]string{}
	root := help()
	texts := map[string]string{"tempfs": root}
	for _, line := range section(root, "Available Commands:") {
		name := strings.Fields(line)[0]
		if name == "help" {
			continue
		}
		texts["tempfs "+name] = help(name)
		for _, sub := range section(texts["tempfs "+name], "Available Commands:") {
			subName := strings.Fields(sub)[0]
			texts["tempfs "+name+" "+subName] = help(name, subName)
		}
	}
	for command, text := range texts {
		for _, line := range section(text, "Examples:") {
			examples[exampleComment.ReplaceAllString(line, "")] = command
		}
	}
	return examples
}

// exampleEnv is where one example runs: a working directory with stand-in inputs, TMPDIR a plain directory
// of its own, and tempfs first on PATH, so that the line runs exactly as printed but for the paths that
// replace /scratch and the like.
type exampleEnv struct {
	work, tmp, scratch string
	env                []string
	replace            []string // old, new pairs applied to the line
}

func newExampleEnv(t *testing.T) *exampleEnv {
	t.Helper()
	// Short paths: a notify socket's name must fit in 108 bytes.
	base, err := os.MkdirTemp("", "ex")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &exampleEnv{work: filepath.Join(base, "w"), tmp: filepath.Join(base, "tmp"), scratch: filepath.Join(base, "scratch")}
	for _, d := range []string{e.work, e.tmp, e.scratch} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMPDIR=") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	e.env = append(env, cliQuickExit()...)
	e.env = append(e.env, "TMPDIR="+e.tmp, "PATH="+filepath.Dir(tempfsBin)+":"+os.Getenv("PATH"))
	e.replace = []string{"/scratch", e.scratch}
	return e
}

// line is the example as it runs here.
func (e *exampleEnv) line(example string) string {
	return strings.NewReplacer(e.replace...).Replace(example)
}

// run runs the example (with a shell script around it, where given: "%s" stands for the line) in bash.
func (e *exampleEnv) run(t *testing.T, example, around string, extraEnv ...string) cliResult {
	t.Helper()
	script := e.line(example)
	if around != "" {
		script = strings.ReplaceAll(around, "%s", script)
	}
	return cliRun(t, append(e.env, extraEnv...), e.work, "", "bash", "-c", script)
}

// start runs a foreground example (a daemon) and returns once it told systemd's NOTIFY_SOCKET protocol it is
// ready; Cleanup stops it with SIGTERM and wants exit status 0.
func (e *exampleEnv) start(t *testing.T, example string) *exec.Cmd {
	t.Helper()
	sockPath := filepath.Join(e.work, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	cmd := exec.Command("bash", "-c", "exec "+e.line(example))
	cmd.Dir = e.work
	cmd.Env = append(e.env, "NOTIFY_SOCKET="+sockPath)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after stopAtCleanup's, which runs first
		if isMounted(e.scratch) {
			_ = syscall.Unmount(e.scratch, syscall.MNT_DETACH)
			t.Errorf("%s: %s still mounted after it exited", example, e.scratch)
		}
	})
	stopAtCleanup(t, cmd, example, stderr.String)
	_ = sock.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256)
	for {
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("%s: no READY=1 on NOTIFY_SOCKET (%v); stderr:\n%s", example, err, stderr)
		}
		if string(buf[:n]) == "READY=1" {
			return cmd
		}
	}
}

// daemonMount mounts a tempfs at dir in the background for an example that acts on one; Cleanup unmounts it.
func (e *exampleEnv) daemonMount(t *testing.T, dir string, args ...string) {
	t.Helper()
	r := cliRun(t, e.env, e.work, "", tempfsBin, append(append([]string{"mount", "--daemon"}, args...), dir)...)
	if r.code != 0 {
		t.Fatalf("mount --daemon %s: exit %d, %s", dir, r.code, r.stderr)
	}
	e.unmountAtEnd(t, dir)
}

// unmountAtEnd unmounts dir in Cleanup if it is still mounted.
func (e *exampleEnv) unmountAtEnd(t *testing.T, dir string) {
	t.Cleanup(func() {
		if isMounted(dir) {
			if r := cliRun(t, cliQuickExit(), e.work, "", tempfsBin, "unmount", dir); r.code != 0 {
				t.Errorf("unmount %s: exit %d, %s", dir, r.code, r.stderr)
			}
		}
	})
}

// requireTools skips a test whose example runs a program this machine lacks (scripts/setup --tests installs them
// all); with CI=true that is a failure instead.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("no %s (scripts/setup --tests installs it), and CI=true forbids skipping", name)
			}
			t.Skipf("no %s: scripts/setup --tests installs it", name)
		}
	}
}

func wantExit0(t *testing.T, example string, r cliResult) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d; stdout %q; stderr %q", example, r.code, r.stdout, r.stderr)
	}
}

// exampleChecks runs each --help example and checks that it does what its line (and comment) says.
var exampleChecks = map[string]func(t *testing.T, e *exampleEnv, ex string){
	// tempfs --help
	"tempfs mount --daemon /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.unmountAtEnd(t, e.scratch)
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		if !isMounted(e.scratch) || r.stderr != "" {
			t.Errorf("%s: returned with %s mounted %v, stderr %q; want it serving in the background", ex, e.scratch, isMounted(e.scratch), r.stderr)
		}
	},
	"exec 3<>/scratch/jobXXXXXX": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch)
		r := e.run(t, ex, `%s && ls "`+e.scratch+`" && exec 3>&-`)
		wantExit0(t, ex, r)
		if !regexp.MustCompile(`^job[a-z0-9_]{6}\n$`).MatchString(r.stdout) {
			t.Errorf("%s: the mount listed %q while fd 3 was open; want one private file job??????", ex, r.stdout)
		}
		eventually(t, 10*time.Second, "the file gone once fd 3 closed", func() bool { return len(listDir(t, e.scratch)) == 0 })
	},
	"tempfs unmount /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch)
		wantExit0(t, ex, e.run(t, ex, ""))
		if isMounted(e.scratch) {
			t.Errorf("%s: still mounted", ex)
		}
	},
	"source <(tempfs completion bash)": func(t *testing.T, e *exampleEnv, ex string) {
		r := e.run(t, ex, `%s && complete -p tempfs`)
		wantExit0(t, ex, r)
		if !strings.Contains(r.stdout, "tempfs") {
			t.Errorf("%s: no completion registered for tempfs: %q", ex, r.stdout)
		}
	},
	// version, gettempdir, gettempprefix
	"tempfs version": func(t *testing.T, e *exampleEnv, ex string) {
		if r := e.run(t, ex, ""); r.code != 0 || !strings.HasPrefix(r.stdout, "tempfs ") {
			t.Errorf("%s: exit %d, %q", ex, r.code, r.stdout)
		}
	},
	"tempfs --version": func(t *testing.T, e *exampleEnv, ex string) {
		if r := e.run(t, ex, ""); r.code != 0 || !strings.HasPrefix(r.stdout, "tempfs ") {
			t.Errorf("%s: exit %d, %q", ex, r.code, r.stdout)
		}
	},
	"tempfs gettempdir": func(t *testing.T, e *exampleEnv, ex string) {
		if r := e.run(t, ex, ""); r.code != 0 || r.stdout != e.tmp+"\n" {
			t.Errorf("%s with TMPDIR=%s: exit %d, %q", ex, e.tmp, r.code, r.stdout)
		}
	},
	"TMPDIR=/scratch tempfs gettempdir": func(t *testing.T, e *exampleEnv, ex string) {
		if r := e.run(t, ex, ""); r.code != 0 || r.stdout != e.scratch+"\n" {
			t.Errorf("%s: exit %d, %q; want %s", ex, r.code, r.stdout, e.scratch)
		}
	},
	"tempfs gettempprefix": func(t *testing.T, e *exampleEnv, ex string) {
		if r := e.run(t, ex, ""); r.code != 0 || r.stdout != "tmp\n" {
			t.Errorf("%s: exit %d, %q", ex, r.code, r.stdout)
		}
	},
	// mktemp
	"tempfs mktemp": func(t *testing.T, e *exampleEnv, ex string) {
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		name := strings.TrimSuffix(r.stdout, "\n")
		if st, err := os.Stat(name); err != nil || !st.Mode().IsRegular() || !regexp.MustCompile(`^`+regexp.QuoteMeta(e.tmp)+`/tmp\.[a-zA-Z0-9_]{10}$`).MatchString(name) {
			t.Errorf("%s: printed %q (%v); want a file tmp.XXXXXXXXXX in TMPDIR", ex, name, err)
		}
	},
	"tempfs mktemp -d": func(t *testing.T, e *exampleEnv, ex string) {
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		name := strings.TrimSuffix(r.stdout, "\n")
		if st, err := os.Stat(name); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: printed %q (%v); want a 0700 directory", ex, name, err)
		}
	},
	"tempfs mktemp -p /scratch job.XXXXXX": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch)
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		name := strings.TrimSuffix(r.stdout, "\n")
		buf := make([]byte, 64)
		n, err := syscall.Getxattr(name, "user.tempfs.lifetime", buf)
		if filepath.Dir(name) != e.scratch || err != nil || string(buf[:n]) != "keep" {
			t.Errorf("%s: printed %q, lifetime %q (%v); want a kept file on the mount", ex, name, buf[:max(n, 0)], err)
		}
	},
	"tempfs mktemp --suffix .json -t reportXXXX": func(t *testing.T, e *exampleEnv, ex string) {
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		name := strings.TrimSuffix(r.stdout, "\n")
		if _, err := os.Stat(name); err != nil || !regexp.MustCompile(`^`+regexp.QuoteMeta(e.tmp)+`/report[a-zA-Z0-9_]{4}\.json$`).MatchString(name) {
			t.Errorf("%s: printed %q (%v)", ex, name, err)
		}
	},
	`dir=$(tempfs mktemp -d) && trap 'rm -rf "$dir"' EXIT`: func(t *testing.T, e *exampleEnv, ex string) {
		r := e.run(t, ex, `%s && test -d "$dir" && echo "$dir"`)
		wantExit0(t, ex, r)
		dir := strings.TrimSuffix(r.stdout, "\n")
		if !strings.HasPrefix(dir, e.tmp+"/") {
			t.Fatalf("%s: dir %q", ex, dir)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s: %s is still there after the shell exited (%v)", ex, dir, err)
		}
	},
	// mount
	"tempfs mount /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.start(t, ex)
		if !isMounted(e.scratch) {
			t.Errorf("%s: ready, but %s is not mounted", ex, e.scratch)
		}
	},
	"tempfs mount --max-size 4MiB --memory 2GiB --disk 20GiB /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.start(t, ex)
		st := statusJSON(t, e.scratch)
		for key, want := range map[string]int64{"max_size": 4 << 20, "ram_cap": 2 << 30, "disk_cap": 20 << 30} {
			if got := cliNumber(t, st, key); got != want {
				t.Errorf("%s: %s = %d, want %d", ex, key, got, want)
			}
		}
	},
	"tempfs mount -o allow_other --mode 1777 /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.start(t, ex)
		var st syscall.Stat_t
		if err := syscall.Stat(e.scratch, &st); err != nil || st.Mode&0o7777 != 0o1777 {
			t.Errorf("%s: root mode %o (%v), want 1777", ex, st.Mode&0o7777, err)
		}
		openPathTo(t, e.scratch)
		// Shared: another user makes a file there.
		if out, err := asUser(t, 60231, 60231, "/", `echo shared > "`+e.scratch+`/other" && cat "`+e.scratch+`/other"`); err != nil || out != "shared" {
			t.Errorf("%s: another user could not use it: %v %s", ex, err, out)
		}
	},
	"tempfs mount --daemon --log /var/log/tempfs.log /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		logFile := filepath.Join(e.work, "tempfs.log")
		e.replace = append(e.replace, "/var/log/tempfs.log", logFile)
		e.unmountAtEnd(t, e.scratch)
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		data, err := os.ReadFile(logFile)
		if !isMounted(e.scratch) || err != nil || !strings.Contains(string(data), "msg=mounted") {
			t.Errorf("%s: mounted %v, log %q (%v)", ex, isMounted(e.scratch), data, err)
		}
	},
	"tempfs mount --daemon --takeover /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch, "--max-size", "64KiB")
		name := filepath.Join(e.scratch, "kept")
		data := bytes.Repeat([]byte("taken over "), 10000) // past --max-size: on disk
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		held, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		before := daemonStats(t, e.scratch)
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		got := make([]byte, len(data))
		if n, err := held.ReadAt(got, 0); n != len(data) || err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: the file held open across it reads %d bytes, %v", ex, n, err)
		}
		if again, err := os.ReadFile(name); err != nil || !bytes.Equal(again, data) {
			t.Errorf("%s: the file read afresh: %d bytes, %v", ex, len(again), err)
		}
		after := daemonStats(t, e.scratch)
		if after["max_size"] != before["max_size"] || after["entries_created"] != before["entries_created"] {
			t.Errorf("%s: settings or counters changed: max_size %v then %v, entries_created %v then %v", ex,
				before["max_size"], after["max_size"], before["entries_created"], after["entries_created"])
		}
	},
	"tempfs mount --owner session -o allow_other /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.start(t, ex)
		f := filepath.Join(e.scratch, "made-by-a-session")
		if r := cliRun(t, e.env, e.work, "", "setsid", "-w", "sh", "-c", `echo x > "$0" && test -s "$0"`, f); r.code != 0 {
			t.Fatalf("a session writing %s: exit %d, %s", f, r.code, r.stderr)
		}
		eventually(t, 10*time.Second, "the session's entry gone after the session ended", func() bool {
			_, err := os.Lstat(f)
			return os.IsNotExist(err)
		})
	},
	// run
	"tempfs run -- make test": func(t *testing.T, e *exampleEnv, ex string) {
		requireTools(t, "make", "awk")
		// Stand-in: a test target that says whether TMPDIR is a tempfs mount, and writes a file there.
		makefile := "test:\n\t@awk -v d=\"$$TMPDIR\" '$$5 == d && / - fuse.tempfs /' /proc/self/mountinfo | grep -q . && echo scratch > \"$$TMPDIR/out\" && echo on-tempfs\n"
		if err := os.WriteFile(filepath.Join(e.work, "Makefile"), []byte(makefile), 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.run(t, ex, "")
		if r.code != 0 || r.stdout != "on-tempfs\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want make test to run with TMPDIR on a tempfs", ex, r.code, r.stdout, r.stderr)
		}
	},
	"tempfs run --report --max-size 4MiB -- python3 job.py": func(t *testing.T, e *exampleEnv, ex string) {
		requireTools(t, "python3")
		// Stand-in: a job whose 5 MiB temporary file passes --max-size and goes to disk.
		job := "import tempfile\nwith tempfile.TemporaryFile() as f:\n    f.write(b'x' * (5 << 20))\n    f.flush()\nprint('done')\n"
		if err := os.WriteFile(filepath.Join(e.work, "job.py"), []byte(job), 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.run(t, ex, "")
		wantExit0(t, ex, r)
		if r.stdout != "done\n" || cliReportNumber(t, r.stderr, `spilled to disk .* in (\d+) rollover`) != 1 ||
			cliReportNumber(t, r.stderr, `written to disk\s+.*\((\d+) bytes\)`) < 5<<20 {
			t.Errorf("%s: stdout %q, report:\n%s\nwant the 5 MiB file spilled past --max-size", ex, r.stdout, r.stderr)
		}
	},
	`tempfs run --memory 512MiB --disk 10GiB -- sh -c 'sort -T "$TMPDIR" -o sorted.txt big.txt'`: func(t *testing.T, e *exampleEnv, ex string) {
		// Stand-ins: a big.txt, and a sort on PATH that runs the real one with a 64 KiB buffer (so that it
		// writes temporary runs, as it does for a file larger than its memory) and then records the -T
		// directory's tempfs status: the runs were created and written there.
		var big strings.Builder
		for i := 0; i < 200000; i++ {
			big.WriteString(strconv.Itoa((i * 7919) % 200003))
			big.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(e.work, "big.txt"), []byte(big.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		realSort, err := exec.LookPath("sort")
		if err != nil {
			t.Fatal(err)
		}
		shims := filepath.Join(e.work, "shims")
		shim := `#!/bin/sh
tdir=
prev=
for a in "$@"; do [ "$prev" = "-T" ] && tdir=$a; prev=$a; done
` + realSort + ` -S 64K "$@" || exit $?
tempfs status --json "$tdir" > "$0.status" 2>&1
`
		if err := os.Mkdir(shims, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shims, "sort"), []byte(shim), 0o755); err != nil {
			t.Fatal(err)
		}
		r := e.run(t, ex, "", "PATH="+filepath.Dir(tempfsBin)+":"+shims+":"+os.Getenv("PATH"))
		wantExit0(t, ex, r)
		sorted, err := os.ReadFile(filepath.Join(e.work, "sorted.txt"))
		if err != nil || strings.Count(string(sorted), "\n") != 200000 {
			t.Fatalf("%s: sorted.txt: %v", ex, err)
		}
		status, _ := os.ReadFile(filepath.Join(shims, "sort.status"))
		var st map[string]any
		if err := json.Unmarshal(status, &st); err != nil {
			t.Fatalf("%s: sort's -T directory is not a tempfs mount: status said %q", ex, status)
		}
		if cliNumber(t, st, "entries_created") == 0 || cliNumber(t, st, "bytes_written") == 0 {
			t.Errorf("%s: sort's temporary runs did not land in the mount: %s", ex, status)
		}
	},
	// status
	"tempfs status /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch)
		if r := e.run(t, ex, ""); r.code != 0 || !strings.Contains(r.stdout, e.scratch) || !strings.Contains(r.stdout, "entries") {
			t.Errorf("%s: exit %d, %q", ex, r.code, r.stdout)
		}
	},
	"tempfs status --json /scratch | jq .ram_bytes": func(t *testing.T, e *exampleEnv, ex string) {
		requireTools(t, "jq")
		e.daemonMount(t, e.scratch)
		if err := os.WriteFile(filepath.Join(e.scratch, "f"), []byte("12345"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.run(t, ex, "set -o pipefail; %s")
		if n, err := strconv.Atoi(strings.TrimSpace(r.stdout)); r.code != 0 || err != nil || n <= 0 {
			t.Errorf("%s: exit %d, %q, stderr %q; want the RAM bytes, a number", ex, r.code, r.stdout, r.stderr)
		}
	},
	"tempfs status --json /scratch | jq '.requests.by_opcode | map_values(.count)'": func(t *testing.T, e *exampleEnv, ex string) {
		requireTools(t, "jq")
		e.daemonMount(t, e.scratch)
		r := e.run(t, ex, "set -o pipefail; %s")
		var counts map[string]int64
		if err := json.Unmarshal([]byte(r.stdout), &counts); r.code != 0 || err != nil || len(counts) == 0 {
			t.Errorf("%s: exit %d, %q (%v); want a count per opcode", ex, r.code, r.stdout, err)
		}
	},
	"tempfs status --owners /tmp": func(t *testing.T, e *exampleEnv, ex string) {
		// Stand-in for a /tmp served with --owner.
		e.replace = append(e.replace, "/tmp", e.scratch)
		e.daemonMount(t, e.scratch, "--owner", "session")
		if r := e.run(t, ex, ""); r.code != 0 {
			t.Errorf("%s: exit %d, %q %q", ex, r.code, r.stdout, r.stderr)
		}
	},
	// unmount
	"tempfs unmount -z /scratch": func(t *testing.T, e *exampleEnv, ex string) {
		e.daemonMount(t, e.scratch)
		f := filepath.Join(e.scratch, "held")
		if err := os.WriteFile(f, []byte("still here"), 0o644); err != nil {
			t.Fatal(err)
		}
		held, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		wantExit0(t, ex, e.run(t, ex, ""))
		buf := make([]byte, 64)
		n, err := held.ReadAt(buf, 0)
		if isMounted(e.scratch) || string(buf[:n]) != "still here" {
			t.Errorf("%s: mounted %v, the open file reads %q (%v); want detached, the file still working", ex, isMounted(e.scratch), buf[:n], err)
		}
	},
	// csi
	`tempfs csi --endpoint unix:///var/lib/kubelet/plugins/tempfs.csi/csi.sock --node-id "$NODE_NAME"`: func(t *testing.T, e *exampleEnv, ex string) {
		requireTools(t, "unshare")
		// The default --state-dir is under /var/lib: the example runs in a mount namespace of its own with a
		// tmpfs there, as a node's /var/lib would be, so that the machine's /var/lib is left alone.
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "bash", "-c",
			"mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/kubelet/plugins/tempfs.csi && exec "+ex)
		cmd.Env = append(e.env, "NODE_NAME=node-from-env")
		log := startUntilLogged(t, cmd, "serving CSI")
		if !strings.Contains(log, "node=node-from-env") {
			t.Errorf("%s: the node is not $NODE_NAME's: %s", ex, log)
		}
		// unshare and bash exec'd tempfs: its namespace's files are under its /proc/PID/root.
		sock := fmt.Sprintf("/proc/%d/root/var/lib/kubelet/plugins/tempfs.csi/csi.sock", cmd.Process.Pid)
		if st, err := os.Stat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: no socket at the endpoint: %v", ex, err)
		}
	},
	"tempfs csi --endpoint unix:///csi/csi.sock --node-id node-1 --state-dir /var/lib/tempfs-csi": func(t *testing.T, e *exampleEnv, ex string) {
		sock, state := filepath.Join(e.work, "csi.sock"), filepath.Join(e.work, "state")
		e.replace = append(e.replace, "/csi/csi.sock", sock, "/var/lib/tempfs-csi", state)
		cmd := exec.Command("bash", "-c", "exec "+e.line(ex))
		cmd.Env = e.env
		log := startUntilLogged(t, cmd, "serving CSI")
		if !strings.Contains(log, "node=node-1") {
			t.Errorf("%s: log %s", ex, log)
		}
		if st, err := os.Stat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: no socket at the endpoint: %v", ex, err)
		}
		if st, err := os.Stat(state); err != nil || !st.IsDir() {
			t.Errorf("%s: no state directory: %v", ex, err)
		}
	},
}

// startUntilLogged starts cmd and returns its stderr up to the first line containing ready (the line the
// process logs once it serves); Cleanup stops it with SIGTERM and wants exit status 0.
func startUntilLogged(t *testing.T, cmd *exec.Cmd, ready string) string {
	t.Helper()
	stderr := startReading(t, cmd, cmd.StderrPipe)
	lines := make(chan string)
	rest := &syncBuffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
			if strings.Contains(sc.Text(), ready) {
				break
			}
		}
		close(lines)
		_, _ = io.Copy(rest, stderr)
	}()
	var log strings.Builder
	deadline := time.After(60 * time.Second)
	for found := false; !found; {
		select {
		case line, ok := <-lines:
			if !ok {
				err := cmd.Wait()
				t.Fatalf("%v exited (%v) before logging %q:\n%s", cmd.Args, err, ready, log.String())
			}
			log.WriteString(line + "\n")
			found = strings.Contains(line, ready)
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("%v did not log %q within 60 s:\n%s", cmd.Args, ready, log.String())
		}
	}
	stopAtCleanup(t, cmd, fmt.Sprint(cmd.Args), func() string { return log.String() + rest.String() })
	return log.String()
}

// stopAtCleanup waits for a started cmd in the background and, when the test ends, stops it with SIGTERM and
// wants exit status 0 within 30 s (then kills it); output is what it printed, for the error.
func stopAtCleanup(t *testing.T, cmd *exec.Cmd, name string, output func() string) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s: exited with %v after SIGTERM; output:\n%s", name, err, output())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s: still running 30 s after SIGTERM", name)
		}
	})
}

// TestNewUserHelpExamples runs every example of every --help text as printed (with tempfs on PATH, stand-in
// inputs, and scratch paths for /scratch and the like) and checks that it does what its line says. An example
// without a check, or a check for an example no help shows any more, fails the test.
func TestNewUserHelpExamples(t *testing.T) {
	requireFUSE(t)
	coreRequireRoot(t)
	examples := helpExamples(t)
	for ex, command := range examples {
		if _, ok := exampleChecks[ex]; !ok {
			t.Errorf("%s --help shows %q, which no check runs", command, ex)
		}
	}
	for ex, check := range exampleChecks {
		if _, ok := examples[ex]; !ok {
			t.Errorf("a check runs %q, which no --help shows", ex)
			continue
		}
		t.Run(ex, func(t *testing.T) { check(t, newExampleEnv(t), ex) })
	}
}

// readmeBlock returns the lines of the first ``` block of README.md after the line after, comments dropped.
func readmeBlock(t *testing.T, after string) []string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "\n"+after+"\n")
	if i < 0 {
		t.Fatalf("README.md has no line %q", after)
	}
	text = text[i+len(after)+2:]
	start := strings.Index(text, "```")
	if start < 0 {
		t.Fatalf("README.md has no code block after %q", after)
	}
	text = text[start:]
	text = text[strings.Index(text, "\n")+1:]
	end := strings.Index(text, "```")
	var lines []string
	for line := range strings.Lines(text[:end]) {
		if line = exampleComment.ReplaceAllString(strings.TrimSpace(line), ""); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestNewUserReadmeShell runs the README's "In a shell" block as written on a scratch mount (for /scratch),
// in one shell, and checks what each line's comment says: a private file listed while fd 3 is open and gone
// after, its path from getfattr, a kept file and a kept 0700 directory.
func TestNewUserReadmeShell(t *testing.T) {
	requireFUSE(t)
	requireTools(t, "getfattr")
	lines := readmeBlock(t, "In a shell:")
	want := []string{
		"exec 3<>/scratch/jobXXXXXX",
		"getfattr --only-values -n user.tempfs.path /proc/self/fd/3",
		"f=$(tempfs mktemp -p /scratch)",
		"d=$(tempfs mktemp -d -p /scratch)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the README's shell block is now:\n%s\nthis test checks:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	e := newExampleEnv(t)
	e.daemonMount(t, e.scratch)
	r := e.run(t, strings.Join(lines, "\n"), `set -e
%s
echo
ls "`+e.scratch+`"
echo "$f"
echo "$d"`)
	wantExit0(t, "the README's shell block", r)
	out := strings.Split(r.stdout, "\n")
	if len(out) < 6 {
		t.Fatalf("the README's shell block printed %q", r.stdout)
	}
	path, f, d := out[0], out[len(out)-3], out[len(out)-2]
	listed := out[1 : len(out)-3]
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(e.scratch) + `/job[a-z0-9_]{6}$`).MatchString(path) {
		t.Errorf("getfattr printed %q; want the private file's path on the mount", path)
	}
	if !slices.Contains(listed, filepath.Base(path)) || !slices.Contains(listed, filepath.Base(f)) || !slices.Contains(listed, filepath.Base(d)) {
		t.Errorf("ls while fd 3 was open: %q; want the private file %s, f and d", listed, path)
	}
	// The shell is gone: so is the private file; the kept file and directory stay.
	eventually(t, 10*time.Second, "the private file gone with the shell", func() bool {
		_, err := os.Lstat(path)
		return os.IsNotExist(err)
	})
	if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() || filepath.Dir(f) != e.scratch {
		t.Errorf("f=%q: %v; want a kept file on the mount", f, err)
	}
	if st, err := os.Stat(d); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 || filepath.Dir(d) != e.scratch {
		t.Errorf("d=%q: %v; want a kept 0700 directory on the mount", d, err)
	}
}

// TestNewUserReadmeInstall runs the README's install step into a temporary prefix (the prefix before /usr/local
// and /sbin, as root, without sudo) and checks what it promises: tempfs runs from PATH, and mount(8) mounts fstab
// types tempfs and fuse.tempfs through the helpers it put in /sbin, the README's fstab line among them. mount(8) looks for helpers in /sbin alone, so
// that check runs in a mount namespace of its own where the prefix's sbin is bound over /sbin.
func TestNewUserReadmeInstall(t *testing.T) {
	requireFUSE(t)
	coreRequireRoot(t)
	requireTools(t, "unshare", "jq")
	lines := readmeBlock(t, "type `tempfs` and `fuse.tempfs` (`mount` looks for them in `/sbin` only):")
	if len(lines) != 1 {
		t.Fatalf("the README's install step is %d lines: %q", len(lines), lines)
	}
	prefix, work := t.TempDir(), t.TempDir()
	openPathTo(t, prefix)
	// As after the README's build: ./tempfs in the working directory; the prefix's /sbin exists, as a system's.
	data, err := os.ReadFile(tempfsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "tempfs"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(prefix, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	step := strings.NewReplacer("sudo ", "", "/usr/local/", prefix+"/usr/local/", "/sbin/", prefix+"/sbin/").Replace(lines[0])
	if r := cliRun(t, nil, work, "", "sh", "-c", step); r.code != 0 {
		t.Fatalf("the install step %q: exit %d, %s", step, r.code, r.stderr)
	}
	bin := filepath.Join(prefix, "usr/local/bin/tempfs")
	path := "PATH=" + filepath.Dir(bin) + ":/usr/local/bin:/usr/bin:/bin"
	r := cliRun(t, append(cliQuickExit(), path), t.TempDir(), "", "sh", "-c", `command -v tempfs && tempfs version`)
	if r.code != 0 || !strings.HasPrefix(r.stdout, bin+"\ntempfs ") {
		t.Errorf("tempfs from PATH after the install: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	for _, helper := range []string{"mount.tempfs", "mount.fuse.tempfs"} {
		if target, err := os.Readlink(filepath.Join(prefix, "sbin", helper)); err != nil || target != bin {
			t.Errorf("%s/sbin/%s: %q, %v; want a link to %s", prefix, helper, target, err, bin)
		}
	}

	// The README's fstab line, for its /scratch, in an fstab of the test's own (mount -T).
	fstabLines := readmeBlock(t, "mounts afresh over the dead mount:")
	a, b, c, tmp := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	fstab := filepath.Join(t.TempDir(), "fstab")
	if len(fstabLines) != 1 || !strings.Contains(fstabLines[0], " /scratch ") {
		t.Fatalf("the README's fstab block: %q", fstabLines)
	}
	if err := os.WriteFile(fstab, []byte(strings.Replace(fstabLines[0], " /scratch ", " "+c+" ", 1)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mount --bind "$0/sbin" /sbin
trap 'for m in "$1" "$2" "$3"; do umount -l "$m" 2>/dev/null || true; done' EXIT
mount -t tempfs -o max_size=4M,allow_other,nosuid,nodev tempfs "$1"
mount -t fuse.tempfs -o max_size=8M tempfs "$2"
mount -T "$4" "$3"
tempfs status --json "$1" | jq -r .max_size
tempfs status --json "$2" | jq -r .max_size
tempfs status --json "$3" | jq -r '"\(.max_size) \(.ram_cap)"'
ours() { awk -v a="$1" -v b="$2" -v c="$3" '($5 == a || $5 == b || $5 == c) && / - fuse.tempfs /{print $5}' /proc/self/mountinfo; }
ours "$1" "$2" "$3" | sort
umount "$1"
umount "$2"
umount "$3"
ours "$1" "$2" "$3" | grep -c . || true`
	r = cliRun(t, append(cliQuickExit(), path, "TMPDIR="+tmp), work, "", "unshare", "-m", "--propagation", "private",
		"sh", "-c", script, prefix, a, b, c, fstab)
	mounted := []string{a, b, c}
	slices.Sort(mounted)
	want := fmt.Sprintf("%d\n%d\n%d %d\n%s\n%s\n%s\n0\n", 4<<20, 8<<20, 4<<20, 2<<30, mounted[0], mounted[1], mounted[2])
	if r.code != 0 || r.stdout != want {
		t.Errorf("mount -t tempfs and -t fuse.tempfs through the installed helpers: exit %d, stdout %q, stderr %q; want %q",
			r.code, r.stdout, r.stderr, want)
	}
}

// TestNewUserSetupSplit: scripts/setup installs what running tempfs needs (fuse3) and nothing else; with --tests
// it adds what the tests drive. apt-get is a stand-in that records its arguments, on a PATH where no tool is
// found, as on a fresh machine.
func TestNewUserSetupSplit(t *testing.T) {
	stubs := t.TempDir()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(stubs, "apt-get.args")
	for name, body := range map[string]string{
		"id":      "#!" + bash + "\necho 0\n",
		"apt-get": "#!" + bash + "\necho \"$*\" >> " + record + "\n",
	} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bash, filepath.Join(stubs, "bash")); err != nil {
		t.Fatal(err)
	}
	setup, err := filepath.Abs("../scripts/setup")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "install -y -qq fuse3"},
		{[]string{"--tests"}, "install -y -qq fuse3 rsync python3 git attr acl jq stress-ng autoconf automake build-essential perl e2fsprogs mount openssh-client tmux"},
	} {
		os.Remove(record)
		cmd := exec.Command("/usr/bin/env", append([]string{"PATH=" + stubs, "bash", setup}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil && !strings.Contains(string(out), "/dev/fuse is missing") {
			t.Errorf("scripts/setup %v: %v: %s", tc.args, err, out)
		}
		got, _ := os.ReadFile(record)
		if lines := strings.Split(strings.TrimSpace(string(got)), "\n"); len(lines) != 2 || lines[0] != "update -qq" || lines[1] != tc.want {
			t.Errorf("scripts/setup %v ran apt-get %q; want update, then %q", tc.args, got, tc.want)
		}
	}
}

// TestNewUserReadmeQuickStart runs the README's first command as written, from the repository (the scratch
// directory and the built binary under the test's own directory instead of /tmp/scratch and ./tempfs), and checks
// what the text after it says: a private 0600 file listed under its generated name while fd 3 is open, and a
// status whose requests show no failure (the normal ENOENT, ENODATA and ENOSYS answers apart).
func TestNewUserReadmeQuickStart(t *testing.T) {
	requireFUSE(t)
	coreRequireRoot(t)
	var commands []string
	for _, line := range readmeBlock(t, "On a fresh Debian machine with Go (as root, or with `sudo` available), from this directory:") {
		if !strings.HasPrefix(line, "#") {
			commands = append(commands, line)
		}
	}
	if len(commands) != 2 || !strings.HasPrefix(commands[0], "scripts/setup && go build") {
		t.Fatalf("the README's first commands are now %q", commands)
	}
	dir := t.TempDir()
	scratch, bin := filepath.Join(dir, "scratch"), filepath.Join(dir, "tempfs")
	line := strings.NewReplacer("/tmp/scratch", scratch, " -o tempfs ", " -o "+bin+" ", "./tempfs ", bin+" ").Replace(commands[0])
	t.Cleanup(func() {
		if isMounted(scratch) {
			if r := cliRun(t, cliQuickExit(), dir, "", bin, "unmount", scratch); r.code != 0 {
				t.Errorf("unmount %s: exit %d, %s", scratch, r.code, r.stderr)
			}
		}
	})
	r := cliRun(t, append(cliQuickExit(), "TMPDIR="+dir), "..", "", "bash", "-c", line)
	if r.code != 0 {
		t.Fatalf("the README's first command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`(?m)^-rw------- .* job[a-z0-9_]{6}$`).MatchString(r.stdout) {
		t.Errorf("ls -l while fd 3 was open did not list a private job?????? file:\n%s", r.stdout)
	}
	if requests := cliLineWith(r.stdout, "requests"); !strings.Contains(requests, " 0 failed") {
		t.Errorf("status after the quick start: %q; want no failure", requests)
	}
}

// TestNewUserReadmeCIRunner runs the README's CI-runner block as written (for /ci-tmp, a scratch directory) with
// a stand-in for `systemd-run --scope --unit NAME` (there is no systemd here): a script that makes the cgroup v2
// NAME.scope under a cgroup of the test's own, moves itself in and runs the job. The job leaves files in
// $TMPDIR and a process behind: status --owners shows its cgroup, and once that process is killed the cgroup
// is empty and the job's files are gone, as the README says.
func TestNewUserReadmeCIRunner(t *testing.T) {
	requireFUSE(t)
	coreRequireRoot(t)
	lines := readmeBlock(t, "in `$TMPDIR` goes when its last process does, also when the job is killed at a timeout:")
	want := []string{
		"tempfs mount --daemon --owner cgroup --owner-quota 8GiB -o allow_other /ci-tmp",
		`TMPDIR=/ci-tmp systemd-run --scope --unit "ci-job-$JOB_ID" -- ./run-job.sh`,
		"tempfs status --owners /ci-tmp",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the README's CI-runner block is now:\n%s\nthis test checks:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	parent := filepath.Join(owCgroupRoot(t), fmt.Sprintf("tempfs-ci-%d", os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatalf("making a cgroup: %v", err)
	}
	scope := filepath.Join(parent, "ci-job-42.scope")
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(scope, "cgroup.kill"), []byte("1"), 0)
		eventually(t, 10*time.Second, "the job's cgroup emptied and removed", func() bool {
			err := os.Remove(scope)
			return err == nil || os.IsNotExist(err)
		})
		if err := os.Remove(parent); err != nil {
			t.Errorf("removing the test's cgroup: %v", err)
		}
	})
	e := newExampleEnv(t)
	e.replace = append(e.replace, "/ci-tmp", e.scratch)
	stubs := filepath.Join(e.work, "stubs")
	if err := os.Mkdir(stubs, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(stubs, "systemd-run"): `#!/bin/sh
unit=
while [ $# -gt 0 ]; do
  case "$1" in --scope) ;; --unit) unit=$2; shift ;; --) shift; break ;; *) echo "stand-in systemd-run: $1?" >&2; exit 2 ;; esac
  shift
done
mkdir "$CGROUP_PARENT/$unit.scope" && echo $$ > "$CGROUP_PARENT/$unit.scope/cgroup.procs" && exec "$@"
`,
		// The job: files in $TMPDIR, and a process it leaves behind, as a job killed at a timeout leaves them.
		filepath.Join(e.work, "run-job.sh"): `#!/bin/sh
echo built > "$TMPDIR/artifact" && mkdir "$TMPDIR/cache" && echo obj > "$TMPDIR/cache/obj"
sleep 600 </dev/null >/dev/null 2>&1 &
`,
	}
	for path, body := range files {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.unmountAtEnd(t, e.scratch)
	wantExit0(t, lines[0], e.run(t, lines[0], ""))
	env := []string{"JOB_ID=42", "CGROUP_PARENT=" + parent, "PATH=" + filepath.Dir(tempfsBin) + ":" + stubs + ":" + os.Getenv("PATH")}
	wantExit0(t, lines[1], e.run(t, lines[1], "", env...))
	r := e.run(t, lines[2], "")
	wantExit0(t, lines[2], r)
	owner := "cgroup /" + filepath.Base(parent) + "/ci-job-42.scope"
	if !strings.Contains(r.stdout, owner) {
		t.Errorf("%s: %q; want the job's cgroup %s, which a process of the job still holds", lines[2], r.stdout, owner)
	}
	for _, name := range []string{"artifact", "cache"} {
		if _, err := os.Lstat(filepath.Join(e.scratch, name)); err != nil {
			t.Errorf("the job's %s is gone while a process of the job lives: %v", name, err)
		}
	}
	// The job's last process ends: its cgroup is empty, and what it left in $TMPDIR goes.
	if err := os.WriteFile(filepath.Join(scope, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the job's files gone once its cgroup emptied", func() bool {
		return len(listDir(t, e.scratch)) == 0
	})
}
