package mountinfo

import (
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":           "/plain",
		`/with\040space`:   "/with space",
		`/tab\011and\134`:  "/tab\tand\\",
		`/short\04`:        `/short\04`,
		`/not\0xyoctal`:    `/not\0xyoctal`,
		`/new\012line\040`: "/new\nline ",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	table := "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n" +
		`36 22 0:30 /sub /sys/fs/cgroup/my\040cg rw shared:9 - cgroup2 cgroup2 rw,nsdelegate` + "\n" +
		"37 22 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
		"too short\n" +
		"50 1 0:44 / /no-separator rw\n"
	want := []Mount{
		{Device: "0:21", Root: "/", Point: "/sys", FSType: "sysfs", Source: "sysfs", SuperOptions: "rw"},
		{Device: "0:30", Root: "/sub", Point: "/sys/fs/cgroup/my cg", FSType: "cgroup2", Source: "cgroup2", SuperOptions: "rw,nsdelegate"},
		{Device: "0:31", Root: "/", Point: "/sys/fs/cgroup/memory", FSType: "cgroup", Source: "cgroup", SuperOptions: "rw,memory"},
		{Device: "0:44", Root: "/", Point: "/no-separator"},
	}
	got := Parse([]byte(table))
	if len(got) != len(want) {
		t.Fatalf("Parse = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestFindRoot(t *testing.T) {
	if m, ok := Find("/"); !ok || m.FSType == "" || !strings.Contains(m.Device, ":") {
		t.Errorf("Find(/) = %+v, %v; want the root mount", m, ok)
	}
}
