package integration

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHandlerPanic: a request whose handler panics is answered EIO, the cause is logged, and the daemon goes
// on serving. The daemon's test probe (TEMPFS_TEST_PANIC=1) panics on one xattr name.
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
	// The log line was written before the EIO answer, but the harness copies the daemon's stderr pipe into
	// m.Log() from a goroutine of its own, which may not have read it yet.
	eventually(t, 10*time.Second, "the panic's cause reaches the daemon log (tempfs mount --debug shows what it logs)", func() bool {
		return strings.Contains(m.Log(), "test probe")
	})
}
