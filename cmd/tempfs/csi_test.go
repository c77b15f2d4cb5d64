package main

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckMountFlag(t *testing.T) {
	cases := []struct {
		flag, value string
		ok          bool
	}{
		{"max-size", "4Mi", true},
		{"max-size", "0", true},
		{"max-size", "12Q", false},
		{"max-size", "", false},
		{"memory", "2Gi", true},
		{"disk", "-1", false},
		{"mode", "1777", true},
		{"mode", "999", false},
		{"max-age", "24h", true},
		{"max-age", "soon", false},
		{"owner", "cgroup", true},
		{"owner", "everyone", false},
		{"owner-quota", "1Gi", true},
		{"owner-quota", "1.5M", false},
		{"debug", "true", true}, // a mount flag, but no attribute maps to it (notAttributes)
		{"no-such-flag", "x", false},
	}
	for _, tc := range cases {
		err := checkMountFlag(tc.flag, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("checkMountFlag(%q, %q) = %v, want ok=%v", tc.flag, tc.value, err, tc.ok)
		}
	}
}

func TestCSIConfigRefusesBadFlags(t *testing.T) {
	good := csiOptions{endpoint: "unix:///tmp/csi.sock", nodeID: "n", driverName: defaultDriverName, stateDir: "/tmp/x",
		kubeletDir: defaultKubeletDir}
	cases := []struct {
		name   string
		change func(o *csiOptions)
		want   string
	}{
		{"no endpoint", func(o *csiOptions) { o.endpoint = "" }, "--endpoint is required"},
		{"tcp endpoint", func(o *csiOptions) { o.endpoint = "tcp://1.2.3.4:5" }, "give a Unix socket"},
		{"no node id", func(o *csiOptions) { o.nodeID = "" }, "--node-id is required"},
		{"bad driver name", func(o *csiOptions) { o.driverName = "-tempfs" }, "--driver-name"},
		{"long driver name", func(o *csiOptions) { o.driverName = strings.Repeat("a", 64) }, "--driver-name"},
		{"no state dir", func(o *csiOptions) { o.stateDir = "" }, "--state-dir"},
		{"relative kubelet dir", func(o *csiOptions) { o.kubeletDir = "var/lib/kubelet" }, "--kubelet-dir"},
		{"no memory", func(o *csiOptions) { _ = o.memory.Set("0") }, "--memory must be larger than 0"},
	}
	for _, tc := range cases {
		o := good
		tc.change(&o)
		_, _, err := o.csiConfig()
		var exit *exitError
		if !errors.As(err, &exit) || exit.code != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a usage error with %q", tc.name, err, tc.want)
		}
	}
}

func TestFitNodeBudget(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name          string
		budget, limit int64
		limited       bool
		want          int64
		warns         bool
	}{
		{"no limit", 4096 * mib, 0, false, 4096 * mib, false},
		{"under three quarters", 512 * mib, 1024 * mib, true, 512 * mib, false},
		{"at three quarters", 768 * mib, 1024 * mib, true, 768 * mib, false},
		{"past three quarters", 1024 * mib, 1024 * mib, true, 768 * mib, true},
		{"past the limit", 4096 * mib, 256 * mib, true, 192 * mib, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warning := fitNodeBudget(tt.budget, tt.limit, "memory.max", tt.limited)
			if got != tt.want || (warning != "") != tt.warns {
				t.Errorf("fitNodeBudget = %d, %q; want %d, warning %v", got, warning, tt.want, tt.warns)
			}
			if tt.warns && (!strings.Contains(warning, "memory.max") || !strings.Contains(warning, "--memory")) {
				t.Errorf("the warning names neither the limit's file nor the flag: %q", warning)
			}
		})
	}
}
