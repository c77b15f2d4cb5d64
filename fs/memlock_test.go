package fs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// lockChildEnv makes the test binary, run as a child, call LockMemoryForExit (TestLockMemoryChild): locking
// memory with MCL_FUTURE would stay in force for every later test of this process.
const lockChildEnv = "TEMPFS_TEST_LOCK_CHILD"

// TestLockMemoryChild is not a test of its own: it is the child of TestLockMemoryForExit.
func TestLockMemoryChild(t *testing.T) {
	if os.Getenv(lockChildEnv) == "" {
		return
	}
	before := vmStatus(t, "VmLck")
	took, err := LockMemoryForExit()
	if err != nil {
		t.Fatal(err)
	}
	// A page mapped after the call is present (and locked) at once.
	fresh := make([]byte, 64<<20)
	_ = fresh
	fmt.Printf("locked before=%d after=%d took=%s\n", before, vmStatus(t, "VmLck"), took)
}

// vmStatus is a field of /proc/self/status, in KiB.
func vmStatus(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var v int64
		if n, _ := fmt.Sscanf(string(line), field+": %d kB", &v); n == 1 {
			return v
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestLockMemoryForExit: LockMemoryForExit locks the process's memory (VmLck grows from nothing to at least
// what is resident).
func TestLockMemoryForExit(t *testing.T) {
	needRootMount(t) // CAP_IPC_LOCK: a user's RLIMIT_MEMLOCK is far below a Go process's mappings
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLockMemoryChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), lockChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	cmdOut := string(out)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, cmdOut)
	}
	var before, after int64
	var took string
	for _, line := range bytes.Split(out, []byte("\n")) {
		if n, _ := fmt.Sscanf(string(line), "locked before=%d after=%d took=%s", &before, &after, &took); n == 3 {
			break
		}
	}
	if before != 0 || after < 64<<10 {
		t.Fatalf("VmLck %d KiB before, %d KiB after (want 0, then at least the 64 MiB mapped after the call)\n%s", before, after, cmdOut)
	}
	t.Logf("mlockall took %s; VmLck %d KiB", took, after)
}
