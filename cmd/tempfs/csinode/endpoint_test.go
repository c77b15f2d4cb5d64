package csinode

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSocketPath(t *testing.T) {
	cases := []struct{ endpoint, want string }{
		{"unix:///csi/csi.sock", "/csi/csi.sock"},
		{"unix:/csi/csi.sock", "/csi/csi.sock"},
		{"unix:///var/lib/kubelet/plugins/tempfs.csi/../tempfs.csi/csi.sock", "/var/lib/kubelet/plugins/tempfs.csi/csi.sock"},
		{"unix://csi.sock", ""},
		{"/csi/csi.sock", ""},
		{"tcp://127.0.0.1:10000", ""},
		{"unix://", ""},
		{"", ""},
	}
	for _, tc := range cases {
		got, err := SocketPath(tc.endpoint)
		if tc.want == "" {
			if err == nil {
				t.Errorf("SocketPath(%q) = %q, want an error", tc.endpoint, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", tc.endpoint, got, err, tc.want)
		}
	}
}

func TestListenReplacesOnlySockets(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	lis, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	lis.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	lis.Close()
	// A socket left by a killed plugin is replaced.
	lis, err = Listen(sock)
	if err != nil {
		t.Fatalf("listening again over a stale socket: %v", err)
	}
	// A socket that another process serves is not taken from it.
	if _, err := Listen(sock); err == nil {
		t.Error("Listen took a socket that is being served")
	}
	lis.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil {
		t.Error("Listen replaced a regular file")
	}
}
