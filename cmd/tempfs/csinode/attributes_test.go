package csinode

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// checkAll accepts every value but "bad", so that the table below tests the mapping, not the parsers (the
// integration tests check those through `tempfs csi`).
func checkAll(flag, value string) error {
	if value == "bad" {
		return errors.New("no good")
	}
	return nil
}

// testAttributeFlags are the attribute flags `tempfs csi` derives from `tempfs mount` (the main package's
// TestMountFlagsDerived checks that list).
var testAttributeFlags = []string{"max-size", "memory", "disk", "mode", "max-age", "owner", "owner-quota"}

func TestMountFlags(t *testing.T) {
	cases := []struct {
		name      string
		context   map[string]string
		wantFlags []string
		wantAttrs map[string]string
		wantErr   string
	}{
		{name: "none", context: nil, wantFlags: nil, wantAttrs: map[string]string{}},
		{
			name:      "every attribute, in table order",
			context:   map[string]string{"ownerQuota": "1Gi", "owner": "cgroup", "maxAge": "1h", "mode": "0700", "disk": "1G", "memory": "2Gi", "maxSize": "4Mi"},
			wantFlags: []string{"--max-size=4Mi", "--memory=2Gi", "--disk=1G", "--mode=0700", "--max-age=1h", "--owner=cgroup", "--owner-quota=1Gi"},
			wantAttrs: map[string]string{"ownerQuota": "1Gi", "owner": "cgroup", "maxAge": "1h", "mode": "0700", "disk": "1G", "memory": "2Gi", "maxSize": "4Mi"},
		},
		{
			name:      "the kubelet's pod info is ignored",
			context:   map[string]string{"csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/ephemeral": "true", "maxSize": "1M"},
			wantFlags: []string{"--max-size=1M"},
			wantAttrs: map[string]string{"maxSize": "1M"},
		},
		{name: "unknown", context: map[string]string{"max-size": "1M"}, wantErr: `unknown volume attribute "max-size": tempfs takes maxSize, memory, disk, mode, maxAge, owner, ownerQuota`},
		{name: "case matters", context: map[string]string{"MaxSize": "1M"}, wantErr: `unknown volume attribute "MaxSize"`},
		{name: "bad value", context: map[string]string{"memory": "bad"}, wantErr: `volume attribute memory="bad": no good`},
		{name: "first bad in name order", context: map[string]string{"mode": "bad", "disk": "bad"}, wantErr: `volume attribute disk="bad"`},
		{name: "a flag's syntax is not an attribute", context: map[string]string{"maxSize": "1M --debug"}, wantFlags: []string{"--max-size=1M --debug"}, wantAttrs: map[string]string{"maxSize": "1M --debug"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flags, attrs, err := mountFlags(tc.context, testAttributeFlags, checkAll)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(flags, tc.wantFlags) {
				t.Errorf("flags = %q, want %q", flags, tc.wantFlags)
			}
			if !maps.Equal(attrs, tc.wantAttrs) {
				t.Errorf("attributes = %v, want %v", attrs, tc.wantAttrs)
			}
		})
	}
}

// TestQuote: a value of more than 100 bytes is quoted by its first 100 (never cutting a character) and its
// length; a message that quotes it, bare or quoted, quotes it that way.
func TestQuote(t *testing.T) {
	short := strings.Repeat("x", 100)
	if got := quote(short); got != `"`+short+`"` {
		t.Errorf("quote of 100 bytes = %s", got)
	}
	long := strings.Repeat("y", 99) + "é" + strings.Repeat("z", 1<<20)
	want := `"` + strings.Repeat("y", 99) + `"... (1048677 bytes)`
	if got := quote(long); got != want {
		t.Errorf("quote of a long value cut in a character = %.200s, want %s", got, want)
	}
	quoted := `invalid argument "` + long + `" for flag: size ` + long + ` is bad`
	if got := shorten(quoted, long); len(got) > 300 || strings.Contains(got, strings.Repeat("z", 10)) {
		t.Errorf("shorten left %d bytes: %.300s", len(got), got)
	}
	if _, _, err := mountFlags(map[string]string{"maxSize": long}, testAttributeFlags, func(string, string) error { return errors.New("bad " + long) }); err == nil || len(err.Error()) > 300 {
		t.Errorf("a megabyte value: err of %d bytes", len(err.Error()))
	}
}
