package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Real-program workloads: programs that people run on a scratch mount, each timed on every target in
// turn. Their inputs are made once in the run's work directory (realinputs.go); each run happens in a fresh
// directory of the target, is checked, and must leave that directory empty. The programs run with a clean
// environment (PATH, HOME in the work directory, LC_ALL=C, TMPDIR on the target) and their working directory on
// the target. Only the program runs are timed (and counted in FUSE requests on tempfs); copying an input onto the
// target, checking the result and removing it are not, except where the removal is the workload (tar x, rm -rf).

// realWorkload is one real-program workload.
type realWorkload struct {
	id    string // metric id
	title string // the table's row, the progress note and the request tally
	// speedup is the workload's performance target: at least this many times as fast as the loopback (its time at most 1/speedup).
	speedup float64
	// prepare makes the workload's inputs in the work directory, once; it returns why the workload is skipped
	// ("no gcc") or "".
	prepare func(in *realInputs) string
	run     func(in *realInputs, r *realRun)
}

func realWorkloads(s realSizes) []*realWorkload {
	return []*realWorkload{
		{id: "real-tar", speedup: 1.5, prepare: prepareTar, run: runTar,
			title: fmt.Sprintf("R1 tar x of %d files of Go source, then rm -rf", s.tarFiles)},
		{id: "real-git", speedup: 1.5, prepare: prepareGit, run: runGit,
			title: fmt.Sprintf("R2 git clone of a local %d-file repository, git status", s.gitFiles)},
		{id: "real-python", speedup: 1.5, prepare: preparePythonTempfiles, run: runPythonTempfiles,
			title: fmt.Sprintf("R3 Python: %d NamedTemporaryFile (4 KiB), %d mkdtemp", s.pyFiles, s.pyDirs)},
		{id: "real-sort", speedup: 1, prepare: prepareSort, run: runSort,
			title: fmt.Sprintf("R4 sort -S 4M -T of %d lines", s.sortLines)},
		{id: "real-gcc", speedup: 1, prepare: prepareGcc, run: runGcc,
			title: fmt.Sprintf("R5 gcc -c -O2 of %d small C files", s.cFiles)},
		{id: "real-sqlite", speedup: 1, prepare: prepareSQLite, run: runSQLite,
			title: fmt.Sprintf("R6 SQLite (Python): %d inserts, index, ORDER BY, VACUUM", s.sqliteRows)},
		{id: "real-gotest", speedup: 1, prepare: prepareGoTest, run: runGoTest,
			title: "R7 go test of naming and spool (test binaries built before)"},
	}
}

// realInputs is what the workloads share: the work directory, the programs and the inputs made there.
type realInputs struct {
	sizes realSizes
	work  string // the run's private work directory (not on a target)
	repo  string // this repository, whose naming and spool tests R7 runs
	env   []string
	// tools are the programs' absolute paths, by name; a program missing here skips the workloads that need it.
	tools map[string]string
	// python is the interpreter itself (python3 may be a shim such as pyenv's, which a clean environment breaks).
	python       string
	tarball      string
	tarTops      []string // what tar x creates at the top of its directory
	tarFiles     int
	gitRepo      string
	sortInput    string
	testBinaries []testBinary
}

// skippedSpoolTest is the spool test that R7 leaves out (see prepareGoTest).
const skippedSpoolTest = "TestStoreRecreatedAfterDeletion"

// testBinary is a test binary built by go test -c and the arguments it runs with.
type testBinary struct {
	path string
	args []string
}

// realRun is one run of a workload on one target.
type realRun struct {
	t        *target
	dir      string   // the run's fresh directory on the target
	env      []string // the clean environment, with TMPDIR=dir
	elapsed  time.Duration
	requests requestCounter
}

// timed runs fn as part of the workload's measured time; on tempfs it also counts the requests fn causes.
func (r *realRun) timed(fn func()) {
	r.requests.around(r.t, func() {
		start := time.Now()
		fn()
		r.elapsed += time.Since(start)
	})
}

// program runs a program in the run's directory with its environment, and returns its standard output. A
// program that fails ends the run (runFailed), not the whole bench: see runOnce.
func (r *realRun) program(argv ...string) string {
	out, err := tryProgram(r.dir, r.env, argv...)
	if err != nil {
		panic(runFailed{fmt.Sprintf("%s: %s (in %s): %v", r.t.name, strings.Join(argv, " "), r.dir, err)})
	}
	return out
}

// runFailed is the panic of a program that failed in a run: the run's sample is dropped, the failure printed,
// and the bench goes on with the next run, so that one flaky program (a test binary, say) on one target does
// not throw away an hour of figures. benchrun still exits 2 at the end.
type runFailed struct{ msg string }

// runOnce runs one workload run and reports whether it completed; a failed run is printed.
func (b *bench) runOnce(w *realWorkload, in *realInputs, r *realRun) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			f, isFailure := v.(runFailed)
			if !isFailure {
				panic(v)
			}
			endNote()
			fmt.Printf("FAILED: %s\n", f.msg)
			b.realFailures++
			ok = false
		}
	}()
	w.run(in, r)
	return true
}

// runProgram runs argv in dir with env and breaks the bench when the program fails (preparing inputs).
func runProgram(who, dir string, env []string, argv ...string) string {
	out, err := tryProgram(dir, env, argv...)
	if err != nil {
		broken("%s: %s (in %s): %v", who, strings.Join(argv, " "), dir, err)
	}
	return out
}

// tryProgram runs argv in dir with env and returns its standard output, or an error with the end of its
// output. The program is killed if benchrun dies, so that nothing keeps a target busy at unmount.
func tryProgram(dir string, env []string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, lastLines(stdout.String()+stderr.String(), 20))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// runReal prepares the real-program workloads and runs each on every target in turn, repetition by repetition.
func (b *bench) runReal() {
	in := &realInputs{sizes: b.cfg.real, work: b.work, repo: b.repo, tools: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(b.work, "home"), 0o755); err != nil {
		broken("work directory: %v", err)
	}
	in.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(b.work, "home"), "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1"}
	for _, name := range []string{"tar", "rm", "git", "sort", "gcc", "go"} {
		if path, err := exec.LookPath(name); err == nil {
			in.tools[name] = path
		}
	}
	if path, err := exec.LookPath("python3"); err == nil {
		// The interpreter's own path, asked with the caller's environment (a shim needs it).
		out, err := exec.Command(path, "-c", "import sys; print(sys.executable)").Output()
		if exe := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(exe) {
			in.python = exe
		}
	}
	b.real = realWorkloads(b.cfg.real)
	b.realSkipped = map[string]string{}
	for _, w := range b.real {
		note("preparing " + w.title)
		if why := w.prepare(in); why != "" {
			b.realSkipped[w.id] = why
			endNote()
			fmt.Printf("%s: skipped: %s\n", w.title, why)
		}
	}
	for _, w := range b.real {
		if b.realSkipped[w.id] != "" {
			continue
		}
		for rep := 1; rep <= b.cfg.reps; rep++ {
			for _, t := range rotated(b.targets, rep-1) {
				note(w.title)
				path, dfd := freshDir(t, fmt.Sprintf("%s-r%d", w.id, rep))
				r := &realRun{t: t, dir: path, env: append(in.env[:len(in.env):len(in.env)], "TMPDIR="+path)}
				if !b.runOnce(w, in, r) {
					// What the failed program left is removed, so that the next run starts clean.
					if err := os.RemoveAll(path); err != nil {
						broken("%s: cleaning up after a failed run: %v", t.name, err)
					}
					unix.Close(dfd)
					continue
				}
				removeDir(t, path, dfd)
				b.res.add(w.id, t.name, r.elapsed.Seconds())
				r.requests.addTo(&b.requests, w.title, "run", 1)
				if b.trace {
					fmt.Fprintf(stderr, "\n  %s rep %d: %.2fs", t.name, rep, r.elapsed.Seconds())
				}
			}
		}
	}
}

// prepareTar tars the first files of some directories of the Go toolchain's source tree into the work directory.
func prepareTar(in *realInputs) string {
	if in.tools["tar"] == "" || in.tools["rm"] == "" {
		return "no tar or rm"
	}
	src, why := goSourceTree(in)
	if why != "" {
		return why
	}
	files, total, err := pickFiles(src, []string{"runtime", "crypto", "net", "os", "syscall", "go", "internal"}, "", in.sizes.tarFiles)
	if err != nil {
		broken("R1 input: %v", err)
	}
	list := filepath.Join(in.work, "go-src.list")
	if err := os.WriteFile(list, []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
		broken("R1 input: %v", err)
	}
	in.tarball = filepath.Join(in.work, "go-src.tar")
	runProgram("R1 input", in.work, in.env, in.tools["tar"], "-c", "-f", in.tarball, "--owner=0", "--group=0", "--numeric-owner",
		"-C", src, "--verbatim-files-from", "-T", list)
	in.tarFiles, in.tarTops = len(files), topDirs(files)
	endNote()
	fmt.Printf("R1 input: %d files, %.1f MB, from %s/{%s}\n", len(files), float64(total)/1e6, src, strings.Join(in.tarTops, ","))
	return ""
}

// goSourceTree is $(go env GOROOT)/src.
func goSourceTree(in *realInputs) (string, string) {
	if in.tools["go"] == "" {
		return "", "no go"
	}
	out, err := exec.Command(in.tools["go"], "env", "GOROOT").Output()
	if err != nil {
		broken("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src")
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Sprintf("no Go source tree (%v)", err)
	}
	return src, ""
}

func runTar(in *realInputs, r *realRun) {
	r.timed(func() { r.program(in.tools["tar"], "-x", "-f", in.tarball) })
	if n := countFiles(r.t, r.dir); n != in.tarFiles {
		broken("%s: tar x made %d files, the tarball has %d", r.t.name, n, in.tarFiles)
	}
	r.timed(func() { r.program(append([]string{in.tools["rm"], "-rf", "--"}, in.tarTops...)...) })
}

// countFiles counts the regular files under dir.
func countFiles(t *target, dir string) int {
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		broken("%s: walking %s: %v", t.name, dir, err)
	}
	return n
}

// prepareGit makes a repository of Go files in the work directory, with one commit of a fixed author and date.
func prepareGit(in *realInputs) string {
	if in.tools["git"] == "" {
		return "no git"
	}
	src, why := goSourceTree(in)
	if why != "" {
		return why
	}
	files, _, err := pickFiles(src, []string{"net", "os", "go", "syscall", "internal"}, ".go", in.sizes.gitFiles)
	if err != nil {
		broken("R2 input: %v", err)
	}
	in.gitRepo = filepath.Join(in.work, "repo")
	for _, f := range files {
		if err := copyFile(filepath.Join(src, f), filepath.Join(in.gitRepo, f)); err != nil {
			broken("R2 input: %v", err)
		}
	}
	const when = "2026-01-01T00:00:00Z"
	env := append(in.env[:len(in.env):len(in.env)], "GIT_AUTHOR_NAME=tempfs bench", "GIT_AUTHOR_EMAIL=bench@tempfs.invalid",
		"GIT_AUTHOR_DATE="+when, "GIT_COMMITTER_NAME=tempfs bench", "GIT_COMMITTER_EMAIL=bench@tempfs.invalid", "GIT_COMMITTER_DATE="+when)
	git := in.tools["git"]
	runProgram("R2 input", in.gitRepo, env, git, "-c", "init.defaultBranch=main", "init", "-q")
	runProgram("R2 input", in.gitRepo, env, git, "add", "-A")
	runProgram("R2 input", in.gitRepo, env, git, "commit", "-q", "-m", "Go source files for the clone workload")
	head := strings.TrimSpace(runProgram("R2 input", in.gitRepo, env, git, "rev-parse", "--short", "HEAD"))
	endNote()
	fmt.Printf("R2 input: a repository of %d Go files, commit %s\n", len(files), head)
	return ""
}

func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// runGit clones through git's pack protocol (--no-local), as from a remote, so that no target gets hard links.
func runGit(in *realInputs, r *realRun) {
	git := in.tools["git"]
	clone := filepath.Join(r.dir, "clone")
	var status string
	r.timed(func() {
		r.program(git, "clone", "-q", "--no-local", in.gitRepo, "clone")
		status = runProgram(r.t.name, clone, r.env, git, "status", "--porcelain")
	})
	if status != "" {
		broken("%s: git status in a fresh clone is not clean:\n%s", r.t.name, lastLines(status, 20))
	}
	if err := os.RemoveAll(clone); err != nil {
		broken("%s: removing the clone: %v", r.t.name, err)
	}
}

func writeScript(in *realInputs, name, text string) string {
	path := filepath.Join(in.work, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		broken("%s: %v", name, err)
	}
	return path
}

func preparePythonTempfiles(in *realInputs) string {
	if in.python == "" {
		return "no python3"
	}
	writeScript(in, "tempfiles.py", pythonTempfiles)
	return ""
}

func runPythonTempfiles(in *realInputs, r *realRun) {
	s := in.sizes
	var out string
	r.timed(func() {
		out = r.program(in.python, filepath.Join(in.work, "tempfiles.py"), r.dir, strconv.Itoa(s.pyFiles), strconv.Itoa(s.pyDirs))
	})
	if want := fmt.Sprintf("files %d dirs %d\n", s.pyFiles, s.pyDirs); out != want {
		broken("%s: the tempfile script printed %q, want %q", r.t.name, out, want)
	}
}

func prepareSort(in *realInputs) string {
	if in.tools["sort"] == "" {
		return "no sort"
	}
	in.sortInput = filepath.Join(in.work, "lines.txt")
	f, err := os.Create(in.sortInput)
	if err != nil {
		broken("R4 input: %v", err)
	}
	if err := writeSortInput(f, in.sizes.sortLines); err != nil {
		broken("R4 input: %v", err)
	}
	if err := f.Close(); err != nil {
		broken("R4 input: %v", err)
	}
	return ""
}

func runSort(in *realInputs, r *realRun) {
	input, output := filepath.Join(r.dir, "input"), filepath.Join(r.dir, "output")
	if err := copyFile(in.sortInput, input); err != nil {
		broken("%s: copying the input: %v", r.t.name, err)
	}
	r.timed(func() { r.program(in.tools["sort"], "-S", "4M", "-T", r.dir, "-o", "output", "input") })
	f, err := os.Open(output)
	if err != nil {
		broken("%s: sort's output: %v", r.t.name, err)
	}
	err = checkSorted(f, in.sizes.sortLines)
	f.Close()
	if err != nil {
		broken("%s: sort's output: %v", r.t.name, err)
	}
	removeFiles(r.t, input, output)
}

func removeFiles(t *target, paths ...string) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			broken("%s: %v", t.name, err)
		}
	}
}

func prepareGcc(in *realInputs) string {
	if in.tools["gcc"] == "" {
		return "no gcc"
	}
	return ""
}

// runGcc compiles each file with its own gcc, as make does; gcc's intermediate files go to TMPDIR.
func runGcc(in *realInputs, r *realRun) {
	n := in.sizes.cFiles
	for i := range n {
		if err := os.WriteFile(filepath.Join(r.dir, cFileName(i)), []byte(cSource(i)), 0o644); err != nil {
			broken("%s: writing a C file: %v", r.t.name, err)
		}
	}
	r.timed(func() {
		for i := range n {
			r.program(in.tools["gcc"], "-c", "-O2", "-Wall", "-Werror", "-o", objectName(i), cFileName(i))
		}
	})
	for i := range n {
		obj := filepath.Join(r.dir, objectName(i))
		head := make([]byte, 4)
		f, err := os.Open(obj)
		if err == nil {
			_, err = io.ReadFull(f, head)
			f.Close()
		}
		if err != nil || string(head) != "\x7fELF" {
			broken("%s: %s is not an object file (%v, starts %q)", r.t.name, obj, err, head)
		}
		removeFiles(r.t, obj, filepath.Join(r.dir, cFileName(i)))
	}
}

func prepareSQLite(in *realInputs) string {
	if in.python == "" {
		return "no python3"
	}
	cmd := exec.Command(in.python, "-c", "import sqlite3")
	cmd.Env = in.env
	if err := cmd.Run(); err != nil {
		return "no sqlite3 module in python3"
	}
	writeScript(in, "sqlite.py", pythonSQLite)
	return ""
}

func runSQLite(in *realInputs, r *realRun) {
	rows := in.sizes.sqliteRows
	r.env = append(r.env, "SQLITE_TMPDIR="+r.dir)
	var out string
	r.timed(func() {
		out = r.program(in.python, filepath.Join(in.work, "sqlite.py"), "bench.db", strconv.Itoa(rows))
	})
	if want := fmt.Sprintf("rows %d ordered %d\n", rows, rows); out != want {
		broken("%s: the SQLite script printed %q, want %q", r.t.name, out, want)
	}
	removeFiles(r.t, filepath.Join(r.dir, "bench.db"))
}

// prepareGoTest builds the test binaries of naming and spool into the work directory, so that neither the
// compiler nor its cache is what R7 measures.
func prepareGoTest(in *realInputs) string {
	if in.tools["go"] == "" {
		return "no go"
	}
	// The spool's model tests are randomized: a fixed seed makes every run do the same work. One spool test cannot
	// pass with TMPDIR on a tmpfs, where O_TMPFILE in a deleted directory succeeds (ext4 refuses it with EPERM), so
	// the deleted store it deletes is never noticed: it is left out on every target.
	args := map[string][]string{"naming": nil, "spool": {"-spool.seed=13", "-test.skip=^" + skippedSpoolTest + "$"}}
	for _, pkg := range []string{"naming", "spool"} {
		if _, err := os.Stat(filepath.Join(in.repo, pkg)); err != nil {
			return fmt.Sprintf("no %s package in %s (-repo)", pkg, in.repo)
		}
		bin := filepath.Join(in.work, pkg+".test")
		cmd := exec.Command(in.tools["go"], "test", "-c", "-o", bin, "./"+pkg)
		cmd.Dir = in.repo
		if out, err := cmd.CombinedOutput(); err != nil {
			broken("R7: go test -c ./%s: %v\n%s", pkg, err, lastLines(string(out), 20))
		}
		in.testBinaries = append(in.testBinaries, testBinary{path: bin, args: append([]string{"-test.count=1"}, args[pkg]...)})
	}
	return ""
}

func runGoTest(in *realInputs, r *realRun) {
	r.timed(func() {
		for _, bin := range in.testBinaries {
			if out := r.program(append([]string{bin.path}, bin.args...)...); !strings.HasSuffix(out, "PASS\n") {
				panic(runFailed{fmt.Sprintf("%s: %s did not pass:\n%s", r.t.name, filepath.Base(bin.path), lastLines(out, 20))})
			}
		}
	})
}
