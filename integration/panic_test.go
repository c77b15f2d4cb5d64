package integration

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestHandlerPanic: a request whose handler panics is answered EIO, the cause is logged, and the daemon goes
// on serving (issue 7). The daemon's test probe (TEMPFS_TEST_PANIC=1) panics on one xattr name.
func TestHandlerPanic(t *testing.T) {
	m := startMountEnv(t, t.TempDir(), t.TempDir(), []string{"TEMPFS_TEST_PANIC=1"})
	if err := os.WriteFile(m.Path("before"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_, err := syscall.Getxattr(m.Path("before"), "user.tempfs.test.panic", buf)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("getxattr of the panic probe = %v, want EIO", err)
	}
	if err := os.WriteFile(m.Path("after"), []byte("y"), 0o644); err != nil {
		t.Fatalf("the daemon stopped serving after a panic: %v", err)
	}
	if got, err := os.ReadFile(m.Path("before")); err != nil || string(got) != "x" {
		t.Fatalf("reading back after a panic: %q, %v", got, err)
	}
	if !strings.Contains(m.Log(), "test probe") {
		t.Errorf("the panic's cause is not in the daemon log:\n%s", m.Log())
	}
}
