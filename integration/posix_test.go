package integration

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs go-fuse's own POSIX conformance cases against a real tempfs mount. Each case gets its own
// empty directory in one shared mount; the cases run again on a mount with --owner session,
// where the test's own live session owns every entry.
func TestPosix(t *testing.T) {
	// FcntlFlockLocksFile expects two descriptors of one process to conflict over an fcntl record lock: POSIX
	// says they never do (locks belong to the process), and it fails on tmpfs and ext4 alike.
	notPOSIX := map[string]bool{"FcntlFlockLocksFile": true}
	for _, owner := range []string{"none", "session"} {
		t.Run("owner="+owner, func(t *testing.T) {
			m := startMount(t, "--owner", owner)
			for name, fn := range posixtest.All {
				if notPOSIX[name] {
					continue
				}
				t.Run(name, func(t *testing.T) {
					dir := m.Path(name)
					if err := osMkdir(dir); err != nil {
						t.Fatal(err)
					}
					fn(t, dir)
				})
			}
		})
	}
}
