package procmem

import (
	"os"
	"testing"
)

func TestRead(t *testing.T) {
	m, err := Read(os.Getpid())
	if err != nil || m.RSS <= 0 || m.HWM < m.RSS || m.Anon <= 0 || m.Anon+m.File+m.Shmem != m.RSS {
		t.Errorf("Read(self) = %+v, %v; want VmRSS > 0 split into its parts, VmHWM at least VmRSS", m, err)
	}
	if _, err := Read(-1); err == nil {
		t.Error("Read(-1) succeeded")
	}
}
