package csinode

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestResolveTarget follows symlinks as the kernel does, the last component's too, and allows that component
// (after its symlinks) not to exist yet.
func TestResolveTarget(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(path string) {
		if err := os.MkdirAll(filepath.Join(dir, path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(to, at string) {
		if err := os.Symlink(to, filepath.Join(dir, at)); err != nil {
			t.Fatal(err)
		}
	}
	mk("data/kubelet/pods/uid/vol")
	mk("outside")
	link("data/kubelet", "kubelet")                                  // a symlinked kubelet directory, relative
	link(filepath.Join(dir, "outside"), "data/kubelet/pods/uid/out") // a directory leading out, absolute
	link("../missing", "data/kubelet/pods/uid/vol/dangling")         // a last component that does not exist yet
	link("loop", "data/kubelet/pods/uid/loop")
	cases := []struct {
		path, want string
		err        error
	}{
		{"kubelet/pods/uid/vol/mount", "data/kubelet/pods/uid/vol/mount", nil},
		{"kubelet/pods/uid/vol", "data/kubelet/pods/uid/vol", nil},
		{"kubelet/pods/uid/vol/dangling", "data/kubelet/pods/uid/missing", nil},
		{"kubelet/pods/uid/out/mount", "outside/mount", nil},
		// ".." after a symlink goes up from where the symlink points, not lexically.
		{"kubelet/pods/uid/out/../x", "x", nil},
		{"kubelet/pods/uid/vol/../vol/mount/", "data/kubelet/pods/uid/vol/mount", nil},
		{"kubelet/pods/uid/nothing/mount", "", os.ErrNotExist},
		{"kubelet/pods/uid/loop", "", syscall.ELOOP},
	}
	for _, tc := range cases {
		got, err := resolveTarget(dir + "/" + tc.path)
		switch {
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("resolveTarget(%s) = %q, %v; want error %v", tc.path, got, err, tc.err)
			}
		case err != nil || got != filepath.Join(dir, tc.want):
			t.Errorf("resolveTarget(%s) = %q, %v; want %s", tc.path, got, err, filepath.Join(dir, tc.want))
		}
	}
	if _, err := resolveTarget("relative/path"); err == nil {
		t.Error("a relative path was resolved")
	}
}

func TestWithin(t *testing.T) {
	cases := []struct {
		path, dir string
		want      bool
	}{
		{"/k/pods/uid/vol/mount", "/k/pods", true},
		{"/k/pods/x", "/k/pods", true},
		{"/k/pods", "/k/pods", false},
		{"/k/podsX/y", "/k/pods", false},
		{"/k", "/k/pods", false},
		{"/other", "/k/pods", false},
		{"/k/pods/..x", "/k/pods", true}, // a name beginning with two dots is a name
	}
	for _, tc := range cases {
		if got := within(tc.path, tc.dir); got != tc.want {
			t.Errorf("within(%s, %s) = %v, want %v", tc.path, tc.dir, got, tc.want)
		}
	}
}
