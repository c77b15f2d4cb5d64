package limits

import (
	"io/fs"
	"testing"
)

// fakeFiles is a made-up host: path to content.
type fakeFiles map[string]string

func (f fakeFiles) ReadFile(path string) ([]byte, error) {
	if s, ok := f[path]; ok {
		return []byte(s), nil
	}
	return nil, fs.ErrNotExist
}

const (
	hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	hybridCgroup = `9:name=systemd:/
4:memory:/ci/job7
1:cpu:/
0::/ci/job7
`
)

func TestCgroupMemoryLimit(t *testing.T) {
	tests := []struct {
		name      string
		files     fakeFiles
		wantLimit int64
		wantWhere string
		wantOK    bool
	}{
		{"no cgroup files", fakeFiles{}, 0, "", false},
		{"v1 limit on the process's cgroup", fakeFiles{
			"/proc/self/cgroup": hybridCgroup, "/proc/self/mountinfo": hybridMountinfo,
			"/sys/fs/cgroup/memory/ci/job7/memory.limit_in_bytes": "536870912\n",
			"/sys/fs/cgroup/memory/ci/memory.limit_in_bytes":      "9223372036854771712\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes":         "9223372036854771712\n",
		}, 512 << 20, "/sys/fs/cgroup/memory/ci/job7/memory.limit_in_bytes", true},
		{"v1 limit on a parent is tighter", fakeFiles{
			"/proc/self/cgroup": hybridCgroup, "/proc/self/mountinfo": hybridMountinfo,
			"/sys/fs/cgroup/memory/ci/job7/memory.limit_in_bytes": "536870912\n",
			"/sys/fs/cgroup/memory/ci/memory.limit_in_bytes":      "268435456\n",
		}, 256 << 20, "/sys/fs/cgroup/memory/ci/memory.limit_in_bytes", true},
		{"v1 unlimited everywhere", fakeFiles{
			"/proc/self/cgroup": hybridCgroup, "/proc/self/mountinfo": hybridMountinfo,
			"/sys/fs/cgroup/memory/ci/job7/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, "", false},
		{"v2 at a non-standard place, smaller than v1", fakeFiles{
			"/proc/self/cgroup": hybridCgroup, "/proc/self/mountinfo": hybridMountinfo,
			"/sys/fs/cgroup/memory/ci/job7/memory.limit_in_bytes": "536870912\n",
			"/sys/fs/cgroup/unified/ci/job7/memory.max":           "134217728\n",
			"/sys/fs/cgroup/unified/ci/memory.max":                "max\n",
		}, 128 << 20, "/sys/fs/cgroup/unified/ci/job7/memory.max", true},
		{"v2 only, in a container whose mount root is its own cgroup", fakeFiles{
			"/proc/self/cgroup":         "0::/kubepods/pod1\n",
			"/proc/self/mountinfo":      "100 90 0:40 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/memory.max": "1073741824\n",
		}, 1 << 30, "/sys/fs/cgroup/memory.max", true},
		{"v2 in a cgroup namespace", fakeFiles{
			"/proc/self/cgroup":         "0::/\n",
			"/proc/self/mountinfo":      "100 90 0:40 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/memory.max": "2147483648\n",
		}, 2 << 30, "/sys/fs/cgroup/memory.max", true},
		{"a cgroup path the mount does not show is skipped", fakeFiles{
			"/proc/self/cgroup":         "0::/other\n",
			"/proc/self/mountinfo":      "100 90 0:40 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/memory.max": "1073741824\n",
		}, 0, "", false},
		{"escaped mountpoint", fakeFiles{
			"/proc/self/cgroup":    "0::/a\n",
			"/proc/self/mountinfo": `7 1 0:40 / /cg\040v2 rw shared:4 - cgroup2 cgroup2 rw` + "\n",
			"/cg v2/a/memory.max":  "4096\n",
		}, 4096, "/cg v2/a/memory.max", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, where, ok := cgroupMemoryLimit(tt.files)
			if limit != tt.wantLimit || where != tt.wantWhere || ok != tt.wantOK {
				t.Errorf("cgroupMemoryLimit = %d, %q, %v; want %d, %q, %v", limit, where, ok, tt.wantLimit, tt.wantWhere, tt.wantOK)
			}
		})
	}
}

func TestRaiseDescriptors(t *testing.T) {
	before, after, err := RaiseDescriptors()
	if err != nil {
		t.Fatal(err)
	}
	if after.Cur < before.Cur || after.Cur != after.Max && after.Cur < before.Max {
		t.Errorf("RaiseDescriptors: %+v -> %+v; want the soft limit at least at the old hard limit", before, after)
	}
}
