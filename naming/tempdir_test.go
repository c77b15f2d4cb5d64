package naming

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTempDirCandidates(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		cwd  string
		want []string
	}{
		{
			name: "all set, in Python's order",
			env:  map[string]string{"TMP": "/c", "TEMP": "/b", "TMPDIR": "/a"},
			cwd:  "/home/u",
			want: []string{"/a", "/b", "/c", "/tmp", "/var/tmp", "/usr/tmp", "/home/u"},
		},
		{
			name: "empty values are skipped",
			env:  map[string]string{"TMPDIR": "", "TEMP": "/b", "TMP": ""},
			cwd:  "/w",
			want: []string{"/b", "/tmp", "/var/tmp", "/usr/tmp", "/w"},
		},
		{
			name: "nothing set",
			cwd:  "/w",
			want: []string{"/tmp", "/var/tmp", "/usr/tmp", "/w"},
		},
		{
			name: "other variables are ignored",
			env:  map[string]string{"TMP_DIR": "/x", "TEMPDIR": "/y", "tmpdir": "/z"},
			cwd:  "/w",
			want: []string{"/tmp", "/var/tmp", "/usr/tmp", "/w"},
		},
		{
			name: "relative values kept as given",
			env:  map[string]string{"TMPDIR": "scratch"},
			cwd:  ".",
			want: []string{"scratch", "/tmp", "/var/tmp", "/usr/tmp", "."},
		},
		{
			name: "no cwd",
			want: []string{"/tmp", "/var/tmp", "/usr/tmp"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(key string) string { return tc.env[key] }
			if got := TempDirCandidates(getenv, tc.cwd); !slices.Equal(got, tc.want) {
				t.Errorf("TempDirCandidates = %q, want %q", got, tc.want)
			}
		})
	}
}

// tempDirFixture is a set of candidate directories, each unusable in one way,
// plus one that works.
type tempDirFixture struct {
	missing, notDir, readOnly, excluded, underExcluded, good string
}

func newTempDirFixture(t *testing.T) tempDirFixture {
	t.Helper()
	root := t.TempDir()
	f := tempDirFixture{
		missing:       filepath.Join(root, "missing"),
		notDir:        filepath.Join(root, "file"),
		readOnly:      filepath.Join(root, "readonly"),
		excluded:      filepath.Join(root, "mnt"),
		underExcluded: filepath.Join(root, "mnt", "sub"),
		good:          filepath.Join(root, "good"),
	}
	if err := os.WriteFile(f.notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{f.readOnly, f.underExcluded, f.good} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(f.readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's cleanup cannot remove entries of a read-only directory's
	// parent otherwise; restore the mode first (cleanups run last-in first-out).
	t.Cleanup(func() { os.Chmod(f.readOnly, 0o700) })
	return f
}

func TestGetTempDirFromSkipsUnusable(t *testing.T) {
	f := newTempDirFixture(t)
	tests := []struct {
		name       string
		candidate  string
		wantReason string
		skipAsRoot bool
	}{
		{name: "missing", candidate: f.missing, wantReason: "no such file or directory"},
		{name: "file, not directory", candidate: f.notDir, wantReason: "not a directory"},
		// Root writes to a 0500 directory anyway, so this row proves nothing
		// there and is skipped; it runs for any other user.
		{name: "read-only", candidate: f.readOnly, wantReason: "permission denied", skipAsRoot: true},
		{name: "excluded itself", candidate: f.excluded, wantReason: "excluded"},
		{name: "under excluded", candidate: f.underExcluded, wantReason: "excluded"},
		{name: "excluded, unclean spelling", candidate: f.excluded + "/sub/../", wantReason: "excluded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skipAsRoot && os.Geteuid() == 0 {
				t.Skip("running as root: root can write to a read-only directory")
			}
			_, err := GetTempDirFrom([]string{tc.candidate}, f.excluded)
			if err == nil {
				t.Fatalf("GetTempDirFrom accepted %s", tc.candidate)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.candidate) || !strings.Contains(msg, tc.wantReason) {
				t.Errorf("error %q does not name %s and %q", msg, tc.candidate, tc.wantReason)
			}
			got, err := GetTempDirFrom([]string{tc.candidate, f.good}, f.excluded)
			if err != nil || got != f.good {
				t.Errorf("with %s before a good dir: got %q, %v; want %s", tc.candidate, got, err, f.good)
			}
		})
	}
}

func TestGetTempDirFromAllUnusable(t *testing.T) {
	f := newTempDirFixture(t)
	candidates := []string{f.missing, f.notDir, f.excluded, f.underExcluded}
	_, err := GetTempDirFrom(candidates, f.excluded)
	if err == nil {
		t.Fatal("GetTempDirFrom found a usable directory among unusable ones")
	}
	for _, c := range candidates {
		if !strings.Contains(err.Error(), c+":") {
			t.Errorf("error %q does not list %s", err, c)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q spans several lines; the CLI prints one", err)
	}
	if _, err := GetTempDirFrom(nil, ""); err == nil {
		t.Error("GetTempDirFrom(nil) succeeded")
	}
}

func TestGetTempDirFromFirstUsableWins(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	got, err := GetTempDirFrom([]string{first, second}, "")
	if err != nil || got != first {
		t.Fatalf("GetTempDirFrom = %q, %v; want %s", got, err, first)
	}
	// The probe file is removed again.
	if entries, err := os.ReadDir(first); err != nil || len(entries) != 0 {
		t.Errorf("probe left entries %v (%v) in %s", entries, err, first)
	}
	// exclude "" skips nothing, and excluding an unrelated directory with a
	// shared name prefix skips nothing either.
	got, err = GetTempDirFrom([]string{first}, first+"x")
	if err != nil || got != first {
		t.Errorf("excluding %sx: got %q, %v; want %s", first, got, err, first)
	}
	// Excluding a parent skips both.
	if got, err := GetTempDirFrom([]string{first, second}, filepath.Dir(first)); err == nil {
		t.Errorf("excluding the parent of both: got %q, want an error", got)
	}
}

func TestGetTempDirFromReturnsAbsoluteCleanPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	tests := []struct{ candidate, want string }{
		{".", dir},
		{"sub", filepath.Join(dir, "sub")},
		{"./sub/../sub/", filepath.Join(dir, "sub")},
		{dir + "//sub/.", filepath.Join(dir, "sub")},
	}
	for _, tc := range tests {
		got, err := GetTempDirFrom([]string{tc.candidate}, "")
		if err != nil || got != tc.want {
			t.Errorf("GetTempDirFrom(%q) = %q, %v; want %s", tc.candidate, got, err, tc.want)
		}
	}
	// A relative exclude is resolved against the same working directory.
	if got, err := GetTempDirFrom([]string{filepath.Join(dir, "sub")}, "sub"); err == nil {
		t.Errorf("relative exclude \"sub\" did not skip %s/sub: got %q", dir, got)
	}
}

func TestGetTempDirUsesEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	got, err := GetTempDir("")
	if err != nil || got != dir {
		t.Errorf("GetTempDir with TMPDIR=%s = %q, %v", dir, got, err)
	}
	got, err = GetTempDir(dir)
	if err != nil || got == dir {
		t.Errorf("GetTempDir excluding $TMPDIR = %q, %v; want another directory", got, err)
	}
}

func TestIsUnder(t *testing.T) {
	tests := []struct {
		path, dir string
		want      bool
	}{
		{"/tmp", "/tmp", true},
		{"/tmp/", "/tmp", true},
		{"/tmp", "/tmp/", true},
		{"/tmp/a", "/tmp", true},
		{"/tmp/a/b/c", "/tmp", true},
		{"/tmp/a/..", "/tmp", true},
		{"/tmpx", "/tmp", false},
		{"/tmp-other/a", "/tmp", false},
		{"/tm", "/tmp", false},
		{"/", "/tmp", false},
		{"/tmp/../etc", "/tmp", false},
		{"/var/tmp", "/tmp", false},
		{"/anything", "/", true},
		{"/", "/", true},
		{"/mnt/point/x", "/mnt/point/", true},
		{"/mnt//point/x", "/mnt/point", true},
	}
	for _, tc := range tests {
		if got := IsUnder(tc.path, tc.dir); got != tc.want {
			t.Errorf("IsUnder(%q, %q) = %v, want %v", tc.path, tc.dir, got, tc.want)
		}
	}
}

// TestGetStoreDirFromSkipsFUSE: the store search passes over a directory on FUSE (as a tempfs mount in TMPDIR
// is), which gettempdir keeps; an error names it with the reason.
func TestGetStoreDirFromSkipsFUSE(t *testing.T) {
	fuseDir, plain := t.TempDir(), t.TempDir()
	statfs := fsMagic
	fsMagic = func(path string) (int64, error) {
		if IsUnder(path, fuseDir) {
			return unix.FUSE_SUPER_MAGIC, nil
		}
		return statfs(path)
	}
	t.Cleanup(func() { fsMagic = statfs })
	if got, err := GetStoreDirFrom([]string{fuseDir, plain}, ""); err != nil || got != plain {
		t.Errorf("GetStoreDirFrom(FUSE dir, plain dir) = %q, %v; want %s", got, err, plain)
	}
	_, err := GetStoreDirFrom([]string{fuseDir}, "")
	if err == nil || !strings.Contains(err.Error(), fuseDir+": on a FUSE filesystem") {
		t.Errorf("GetStoreDirFrom(FUSE dir only) error %v; want it to name %s as on FUSE", err, fuseDir)
	}
	if got, err := GetTempDirFrom([]string{fuseDir, plain}, ""); err != nil || got != fuseDir {
		t.Errorf("GetTempDirFrom = %q, %v; gettempdir keeps the FUSE dir %s, as Python does", got, err, fuseDir)
	}
	// The mountpoint is still skipped too.
	if got, err := GetStoreDirFrom([]string{plain}, plain); err == nil {
		t.Errorf("GetStoreDirFrom excluding %s = %q; want an error", plain, got)
	}
}
