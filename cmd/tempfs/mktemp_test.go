package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/pflag"

	"github.com/tempfs/tempfs/naming"
)

// The expectations follow coreutils' src/mktemp.c: the order of its checks, its messages, and the way it joins
// the directory and the template.
func TestPlanMktemp(t *testing.T) {
	env := func(tmpdir string) func(string) string {
		return func(k string) string {
			if k == "TMPDIR" {
				return tmpdir
			}
			return ""
		}
	}
	cases := []struct {
		name    string
		opts    mktempOptions
		args    []string
		tmpdir  string
		want    mktempPlan
		wantErr string
	}{
		{name: "default template in /tmp", want: mktempPlan{name: "/tmp/tmp.XXXXXXXXXX", xLen: 10}},
		{name: "default template in TMPDIR", tmpdir: "/scratch", want: mktempPlan{name: "/scratch/tmp.XXXXXXXXXX", xLen: 10}},
		{name: "relative template stays relative", args: []string{"fooXXX"}, tmpdir: "/scratch", want: mktempPlan{name: "fooXXX", xLen: 3}},
		{name: "implied suffix after the last X", args: []string{"aXXXXb.c"}, want: mktempPlan{name: "aXXXXb.c", xLen: 4, suffixLen: 3}},
		{name: "only the trailing run counts", args: []string{"XXXXaXXX"}, want: mktempPlan{name: "XXXXaXXX", xLen: 3}},
		{name: "--suffix", opts: mktempOptions{suffix: ".json", suffixSet: true}, args: []string{"rXXXX"}, want: mktempPlan{name: "rXXXX.json", xLen: 4, suffixLen: 5}},
		{name: "empty --suffix still needs a final X", opts: mktempOptions{suffixSet: true}, args: []string{"rXXXa"}, wantErr: "with --suffix, template 'rXXXa' must end in X"},
		{name: "--suffix with a slash", opts: mktempOptions{suffix: "a/b", suffixSet: true}, args: []string{"rXXX"}, wantErr: "invalid suffix 'a/b', contains directory separator"},
		{name: "implied suffix with a slash", args: []string{"dXXX/f"}, wantErr: "invalid suffix '/f', contains directory separator"},
		{name: "too few X", args: []string{"fooXX"}, wantErr: "too few X's in template 'fooXX'"},
		{name: "too few X before --suffix", opts: mktempOptions{suffix: ".c", suffixSet: true}, args: []string{"fXX"}, wantErr: "too few X's in template 'fXX.c'"},
		{name: "no X", args: []string{"plain"}, wantErr: "too few X's in template 'plain'"},
		{name: "too many templates", args: []string{"aXXX", "bXXX"}, wantErr: "too many templates"},
		{name: "-p DIR", opts: mktempOptions{dir: destDir{dir: "/var/tmp", set: true}}, args: []string{"jXXX"}, tmpdir: "/scratch", want: mktempPlan{name: "/var/tmp/jXXX", xLen: 3}},
		{name: "-p DIR/ drops the slash", opts: mktempOptions{dir: destDir{dir: "/var/tmp//", set: true}}, args: []string{"jXXX"}, want: mktempPlan{name: "/var/tmp/jXXX", xLen: 3}},
		{name: "-p / is a root", opts: mktempOptions{dir: destDir{dir: "/", set: true}}, args: []string{"jXXX"}, want: mktempPlan{name: "/jXXX", xLen: 3}},
		{name: "--tmpdir without DIR uses TMPDIR", opts: mktempOptions{dir: destDir{set: true}}, args: []string{"jXXX"}, tmpdir: "/scratch", want: mktempPlan{name: "/scratch/jXXX", xLen: 3}},
		{name: "--tmpdir without DIR or TMPDIR uses /tmp", opts: mktempOptions{dir: destDir{set: true}}, args: []string{"jXXX"}, want: mktempPlan{name: "/tmp/jXXX", xLen: 3}},
		{name: "--tmpdir allows slashes", opts: mktempOptions{dir: destDir{set: true}}, args: []string{"sub/jXXX"}, want: mktempPlan{name: "/tmp/sub/jXXX", xLen: 3}},
		{name: "--tmpdir refuses an absolute template", opts: mktempOptions{dir: destDir{set: true}}, args: []string{"/x/jXXX"}, wantErr: "invalid template, '/x/jXXX'; with --tmpdir, it may not be absolute"},
		{name: "-t prefers TMPDIR over -p", opts: mktempOptions{t: true, dir: destDir{dir: "/var/tmp", set: true}}, args: []string{"jXXX"}, tmpdir: "/scratch", want: mktempPlan{name: "/scratch/jXXX", xLen: 3}},
		{name: "-t falls back to -p", opts: mktempOptions{t: true, dir: destDir{dir: "/var/tmp", set: true}}, args: []string{"jXXX"}, want: mktempPlan{name: "/var/tmp/jXXX", xLen: 3}},
		{name: "-t alone uses /tmp", opts: mktempOptions{t: true}, args: []string{"jXXX"}, want: mktempPlan{name: "/tmp/jXXX", xLen: 3}},
		{name: "-t refuses slashes", opts: mktempOptions{t: true}, args: []string{"a/jXXX"}, wantErr: "invalid template, 'a/jXXX', contains directory separator"},
		{name: "relative TMPDIR stays relative", opts: mktempOptions{t: true}, args: []string{"jXXX"}, tmpdir: "rel", want: mktempPlan{name: "rel/jXXX", xLen: 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planMktemp(&tc.opts, tc.args, env(tc.tmpdir))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMktempCandidate(t *testing.T) {
	p := mktempPlan{name: "/d/aXXb.XXXX.c", xLen: 4, suffixLen: 2}
	seen := map[string]bool{}
	for range 50 {
		c := p.candidate()
		mid, ok := strings.CutPrefix(c, "/d/aXXb.")
		if !ok || !strings.HasSuffix(mid, ".c") || len(mid) != 6 {
			t.Fatalf("candidate %q does not keep prefix and suffix around 4 random chars", c)
		}
		for _, r := range mid[:4] {
			if !strings.ContainsRune(naming.Alphabet, r) {
				t.Fatalf("candidate %q has %q, not in naming.Alphabet", c, r)
			}
		}
		seen[c] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 candidates gave only %d distinct names", len(seen))
	}
}

func TestTempfsTemplate(t *testing.T) {
	cases := []struct {
		name        string
		plan        mktempPlan
		want        string
		useTemplate bool
		wantErr     error
	}{
		{name: "3 X padded to 6", plan: mktempPlan{name: "/m/jobXXX", xLen: 3}, want: "/m/jobXXXXXX", useTemplate: true},
		{name: "10 X kept", plan: mktempPlan{name: "/m/tmp.XXXXXXXXXX", xLen: 10}, want: "/m/tmp.XXXXXXXXXX", useTemplate: true},
		{name: "suffix kept", plan: mktempPlan{name: "/m/aXXXX.c", xLen: 4, suffixLen: 2}, want: "/m/aXXXXXX.c", useTemplate: true},
		{name: "short X runs in the prefix are fine", plan: mktempPlan{name: "/m/XXXXXaXXX", xLen: 3}, want: "/m/XXXXXaXXXXXX", useTemplate: true},
		{name: "a parent with X is not the template", plan: mktempPlan{name: "/m/XXXXXXXX/aXXX", xLen: 3}, want: "/m/XXXXXXXX/aXXXXXX", useTemplate: true},
		{name: "suffix starting with X would join the run", plan: mktempPlan{name: "/m/aXXXXY", xLen: 3, suffixLen: 2}},
		{name: "a second long run in the prefix", plan: mktempPlan{name: "/m/XXXXXXaXXX", xLen: 3}, wantErr: syscall.EINVAL},
		{name: "a long run in the suffix", plan: mktempPlan{name: "/m/aXXXbXXXXXX", xLen: 3, suffixLen: 7}, wantErr: syscall.EINVAL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, use, err := tempfsTemplate(tc.plan)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want || use != tc.useTemplate {
				t.Errorf("tempfsTemplate = %q, %v; want %q, %v", got, use, tc.want, tc.useTemplate)
			}
			if use {
				if _, err := naming.ParseTemplate(filepath.Base(got)); err != nil {
					t.Errorf("%q is not a tempfs template: %v", got, err)
				}
			}
		})
	}
}

func TestLastComponentAndConcat(t *testing.T) {
	for _, tc := range []struct{ in, last string }{
		{"", ""}, {"a", "a"}, {"/a", "a"}, {"a/b", "b"}, {"a/b/", "b/"}, {"//", ""}, {"/a//b//", "b//"},
	} {
		if got := tc.in[lastComponent(tc.in):]; got != tc.last {
			t.Errorf("last component of %q = %q, want %q", tc.in, got, tc.last)
		}
	}
	for _, tc := range []struct{ dir, base, want string }{
		{"/tmp", "x", "/tmp/x"}, {"/tmp/", "x", "/tmp/x"}, {"/tmp///", "x", "/tmp/x"}, {"/", "x", "/x"},
		{"rel", "x", "rel/x"}, {"a/b", "c/x", "a/b/c/x"},
	} {
		if got := fileNameConcat(tc.dir, tc.base); got != tc.want {
			t.Errorf("fileNameConcat(%q, %q) = %q, want %q", tc.dir, tc.base, got, tc.want)
		}
	}
}

// TestMktempFlagsHelp keeps the hand-written flags section in step with the registered flags.
func TestMktempFlagsHelp(t *testing.T) {
	cmd := newMktempCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	if err := cmd.Usage(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Shorthand != "" && !strings.Contains(help, "-"+f.Shorthand) {
			t.Errorf("usage does not mention -%s", f.Shorthand)
		}
		if f.Name != f.Shorthand && !strings.Contains(help, "--"+f.Name) {
			t.Errorf("usage does not mention --%s", f.Name)
		}
	})
	if !strings.Contains(help, "Examples:") {
		t.Errorf("usage has no examples:\n%s", help)
	}
}

// TestMktempOffMount creates in a plain directory: exclusive, with coreutils' modes.
func TestMktempOffMount(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, directory := range []bool{false, true} {
		var out bytes.Buffer
		o := &mktempOptions{directory: directory, dir: destDir{dir: dir, set: true}}
		if err := runMktemp(o, []string{"tXXX.end"}, func(string) string { return "" }, &out); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(out.String(), "\n")
		if filepath.Dir(name) != dir || !strings.HasPrefix(filepath.Base(name), "t") || !strings.HasSuffix(name, ".end") || len(filepath.Base(name)) != len("tXXX.end") {
			t.Errorf("name %q does not have the template's shape", name)
		}
		st, err := os.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if directory {
			want = 0o700 | os.ModeDir
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), want)
		}
	}
	var out bytes.Buffer
	o := &mktempOptions{dryRun: true, dir: destDir{dir: dir, set: true}}
	if err := runMktemp(o, []string{"uXXXXXX"}, func(string) string { return "" }, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(strings.TrimSuffix(out.String(), "\n")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("-u created %q (lstat: %v)", out.String(), err)
	}
}

func TestMktempFailureIsStatusOne(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, quiet := range []bool{false, true} {
		o := &mktempOptions{quiet: quiet, dir: destDir{dir: missing, set: true}}
		err := runMktemp(o, nil, func(string) string { return "" }, &bytes.Buffer{})
		var exit *exitError
		if !errors.As(err, &exit) || exit.code != 1 {
			t.Fatalf("quiet=%v: error %v, want exit status 1", quiet, err)
		}
		if quiet != (exit.err == nil) {
			t.Errorf("quiet=%v: message %v; -q must drop exactly the creation failure message", quiet, exit.err)
		}
	}
	err := runMktemp(&mktempOptions{quiet: true}, []string{"fooXX"}, func(string) string { return "" }, &bytes.Buffer{})
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 1 || exit.err == nil {
		t.Errorf("-q with too few X: %v; coreutils still reports bad templates", err)
	}
}
