package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPickFiles(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"b/2.go", "b/1.go", "b/sub/3.txt", "b/sub/4.go", "a/5.go", "c/6.go"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("1.go", filepath.Join(root, "b/0.go")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		dirs   []string
		suffix string
		n      int
		want   []string // nil: an error
	}{
		{"directories in the order given, each in lexical order, symlinks left out", []string{"b", "a"}, "", 5,
			[]string{"b/1.go", "b/2.go", "b/sub/3.txt", "b/sub/4.go", "a/5.go"}},
		{"stops at n inside a directory", []string{"b"}, "", 2, []string{"b/1.go", "b/2.go"}},
		{"only the suffix", []string{"b", "c"}, ".go", 4, []string{"b/1.go", "b/2.go", "b/sub/4.go", "c/6.go"}},
		{"a missing directory is passed over", []string{"none", "c"}, "", 1, []string{"c/6.go"}},
		{"too few files", []string{"a", "c"}, "", 3, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, total, err := pickFiles(root, tc.dirs, tc.suffix, tc.n)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("pickFiles = %q, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("pickFiles = %q, %v; want %q", got, err, tc.want)
			}
			var want int64
			for _, f := range tc.want {
				want += int64(len(f)) // each file holds its own name
			}
			if total != want {
				t.Errorf("total %d bytes, want %d", total, want)
			}
		})
	}
}

func TestTopDirs(t *testing.T) {
	got := topDirs([]string{"runtime/a.go", "runtime/x/b.go", "crypto/c.go", "runtime/d.go", "top.go"})
	if want := []string{"runtime", "crypto", "top.go"}; !slices.Equal(got, want) {
		t.Errorf("topDirs = %q, want %q", got, want)
	}
}

func TestSortInput(t *testing.T) {
	var a, b bytes.Buffer
	if err := writeSortInput(&a, 1000); err != nil {
		t.Fatal(err)
	}
	if err := writeSortInput(&b, 1000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two inputs of the same size differ: the input is not deterministic")
	}
	lines := strings.SplitAfter(a.String(), "\n")
	lines = lines[:len(lines)-1]
	if len(lines) != 1000 || len(lines[0]) != 25 {
		t.Fatalf("%d lines, the first %q; want 1000 lines of 25 bytes", len(lines), lines[0])
	}
	if checkSorted(strings.NewReader(a.String()), 1000) == nil {
		t.Error("the input is already sorted: sort would have nothing to do")
	}
	slices.Sort(lines)
	if err := checkSorted(strings.NewReader(strings.Join(lines, "")), 1000); err != nil {
		t.Errorf("the sorted input: %v", err)
	}
}

func TestCheckSorted(t *testing.T) {
	tests := []struct {
		name, text string
		want       int
		ok         bool
	}{
		{"sorted", "a\nb\nc\n", 3, true},
		{"equal lines", "a\na\nb\n", 3, true},
		{"byte order, not the locale's", "B\na\nb\n", 3, true},
		{"out of order", "a\nc\nb\n", 3, false},
		{"a line missing", "a\nb\n", 3, false},
		{"a line too many", "a\nb\nc\nd\n", 3, false},
		{"empty", "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkSorted(strings.NewReader(tc.text), tc.want); (err == nil) != tc.ok {
				t.Errorf("checkSorted(%q, %d) = %v, want ok=%v", tc.text, tc.want, err, tc.ok)
			}
		})
	}
}

func TestRealSizesDivided(t *testing.T) {
	full := fullRealSizes()
	quick := full.divided(5)
	if quick.tarFiles != 500 || quick.sortLines != 200_000 || quick.cFiles != 8 || quick.sqliteRows != 40_000 {
		t.Errorf("a fifth of %+v is %+v", full, quick)
	}
	if tiny := (realSizes{cFiles: 3}).divided(5); tiny.cFiles != 1 || tiny.tarFiles != 1 {
		t.Errorf("divided rounds a size down to nothing: %+v", tiny)
	}
}

func TestRealWorkloadTable(t *testing.T) {
	ids := map[string]bool{}
	for _, w := range realWorkloads(fullRealSizes()) {
		if ids[w.id] {
			t.Errorf("id %s twice", w.id)
		}
		ids[w.id] = true
		if w.prepare == nil || w.run == nil || w.speedup < 1 || w.title == "" {
			t.Errorf("workload %s is incomplete: %+v", w.id, w)
		}
	}
	if len(ids) != 7 {
		t.Errorf("%d real workloads, want the 7 of scripts/bench's header", len(ids))
	}
}

// TestRealGoals: a real workload's time is judged against the loopback's (lower is better, at most 1/speedup),
// and shown against tmpfs's without a target; a skipped workload is neither PASS nor FAIL.
func TestRealGoals(t *testing.T) {
	b := &bench{res: newResults(), realSkipped: map[string]string{"real-gcc": "no gcc"}}
	b.real = []*realWorkload{{id: "real-tar", title: "R1", speedup: 1.5}, {id: "real-gcc", title: "R5", speedup: 1}}
	for target, secs := range map[string][]float64{"tmpfs": {1, 1, 1}, "loopback": {10, 9, 11}, "tempfs": {6, 7, 5}} {
		for _, s := range secs {
			b.res.add("real-tar", target, s)
		}
	}
	gs := b.realGoals()
	got := map[string]goal{}
	for _, g := range gs {
		got[g.name] = g
	}
	if g := got["real-tar-time/tmpfs"]; !g.ok || !g.info || g.value != 6 {
		t.Errorf("tar against tmpfs: %+v, want the ratio 6, shown only", g)
	}
	if g := got["real-tar-time/loopback"]; !g.ok || g.info || !g.atMost || g.bound != 0.67 || g.value != 0.6 {
		t.Errorf("tar against the loopback: %+v, want 0.6 judged <= 0.67", g)
	}
	if g := got["real-gcc-time/loopback"]; g.ok || g.skipped != "no gcc" {
		t.Errorf("skipped gcc: %+v, want not measured, skipped", g)
	}
}

// TestGeneratedCSourcesCompile compiles every generated C file as the workload does (-Wall -Werror), where
// gcc is installed (scripts/setup --tests installs it).
func TestGeneratedCSourcesCompile(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	n := fullRealSizes().cFiles
	seen := map[string]bool{}
	for i := range n {
		src := cSource(i)
		if seen[src] {
			t.Fatalf("C file %d is the same as an earlier one", i)
		}
		seen[src] = true
		if err := os.WriteFile(filepath.Join(dir, cFileName(i)), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{0, 1, n - 1} {
		cmd := exec.Command(gcc, "-c", "-O2", "-Wall", "-Werror", "-o", objectName(i), cFileName(i))
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("gcc %s: %v\n%s", cFileName(i), err, out)
		}
	}
}

// TestPythonScripts runs the Python workloads on a small scale and checks what they print and leave behind.
func TestPythonScripts(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	for _, tc := range []struct {
		name, script string
		args         func(dir string) []string
		want         string
		left         []string // what stays in the directory
	}{
		{"tempfiles", pythonTempfiles, func(dir string) []string { return []string{dir, "20", "5"} }, "files 20 dirs 5\n", nil},
		{"sqlite", pythonSQLite, func(dir string) []string { return []string{filepath.Join(dir, "bench.db"), "2500"} },
			"rows 2500 ordered 2500\n", []string{"bench.db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			script := filepath.Join(t.TempDir(), tc.name+".py")
			if err := os.WriteFile(script, []byte(tc.script), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(python, append([]string{script}, tc.args(dir)...)...)
			cmd.Env = append(os.Environ(), "TMPDIR="+dir, "SQLITE_TMPDIR="+dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			if string(out) != tc.want {
				t.Errorf("printed %q, want %q", out, tc.want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range entries {
				left = append(left, e.Name())
			}
			if !slices.Equal(left, tc.left) {
				t.Errorf("left %s in the directory, want %s", fmt.Sprint(left), fmt.Sprint(tc.left))
			}
		})
	}
}
