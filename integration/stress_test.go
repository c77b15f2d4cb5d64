package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestStressShort runs scripts/stress --short: stress-ng's filesystem stressors and a workload of
// template files, rollovers and persisted files on a mount with small caps for about 40 s, then the checks that
// the daemon is alive, its memory stays within --memory + 64 MiB, no descriptor leaked, the tree and the stats
// agree, and unmount leaves nothing behind (the script's --help lists them). It takes about a minute, so it runs
// only in CI (CI=true) or when asked with TEMPFS_STRESS=1. The script builds its own binary, and mounts and
// keeps its store under this test's own temporary directory, so it cannot meet the other tests' mounts.
func TestStressShort(t *testing.T) {
	if os.Getenv("TEMPFS_STRESS") != "1" && os.Getenv("CI") != "true" {
		t.Skip("the stress run takes about a minute: run it with TEMPFS_STRESS=1 go test -run TestStressShort ./integration/, or scripts/stress --short")
	}
	requireFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/stress", "--short", "--store", t.TempDir())
	// On timeout the script gets SIGTERM, so that its trap stops the load and unmounts; SIGKILL a minute later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("scripts/stress --short did not finish within 5 minutes; its output:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("scripts/stress --short: %v after %v; its output:\n%s", err, time.Since(start).Round(time.Second), out.String())
	}
	t.Logf("scripts/stress --short passed in %v; its output:\n%s", time.Since(start).Round(time.Second), out.String())
}
