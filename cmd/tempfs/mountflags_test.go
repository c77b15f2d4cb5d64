package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestMountFlagsDerived: the fstab -o names and the CSI volume attributes come from the flags of `tempfs mount`
// and from nowhere else. Every mount flag is offered by each of them or left out with a reason; every name maps
// to a mount flag and back; and the lists are the ones the README, the help and the deployed pods rely on.
func TestMountFlagsDerived(t *testing.T) {
	flags := mountFlagSet()
	var all []string
	flags.VisitAll(func(f *pflag.Flag) { all = append(all, f.Name) })

	for what, left := range map[string]map[string]string{"notInFstab": notInFstab, "notAttributes": notAttributes} {
		for name := range left {
			if flags.Lookup(name) == nil {
				t.Errorf("%s names %q, which is no flag of tempfs mount", what, name)
			}
		}
	}

	fstab := fstabOptions()
	for name, o := range fstab {
		f := flags.Lookup(o.flag)
		switch {
		case f == nil:
			t.Errorf("-o %s sets --%s, which is no flag of tempfs mount", name, o.flag)
		case name != o.flag && name != strings.ReplaceAll(o.flag, "-", "_"):
			t.Errorf("-o %s sets --%s: an fstab name is the flag's own or with '_' for '-'", name, o.flag)
		case o.value != (f.Value.Type() != "bool"):
			t.Errorf("-o %s: value %v, but --%s is of type %s", name, o.value, o.flag, f.Value.Type())
		}
	}
	for _, name := range all {
		_, left := notInFstab[name]
		if _, offered := fstab[name]; offered == left {
			t.Errorf("--%s: in fstab %v, left out %v; want exactly one", name, offered, left)
		}
	}

	attrFlags := attributeFlags()
	names := attributeNames()
	for i, flag := range attrFlags {
		if flags.Lookup(flag) == nil {
			t.Errorf("attribute %s sets --%s, which is no flag of tempfs mount", names[i], flag)
		}
		// The plugin knows a flag by its attribute alone: two flags must not share one.
		if j := slices.Index(names, names[i]); j != i {
			t.Errorf("attribute %s names both --%s and --%s", names[i], attrFlags[j], flag)
		}
	}
	for _, name := range all {
		_, left := notAttributes[name]
		if offered := slices.Contains(attrFlags, name); offered == left {
			t.Errorf("--%s: an attribute %v, left out %v; want exactly one", name, offered, left)
		}
	}

	// What fstab lines and pods write today stays taken (a new flag may add to it), in the order the plugin
	// passes the flags.
	for _, name := range []string{"debug", "disk", "log", "max-age", "max-size", "max_age", "max_size", "memory",
		"metrics", "mode", "owner", "owner-quota", "owner_quota", "store"} {
		if _, ok := fstab[name]; !ok {
			t.Errorf("-o %s is no longer an fstab option", name)
		}
	}
	wantAttrs := []string{"maxSize", "memory", "disk", "mode", "maxAge", "owner", "ownerQuota"}
	if kept := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !slices.Contains(wantAttrs, n) }); !slices.Equal(kept, wantAttrs) {
		t.Errorf("CSI attributes = %q, want %q among them in this order", names, wantAttrs)
	}
	// `tempfs csi --help` lists them in prose.
	if long := strings.Join(strings.Fields(newCSICommand().Long), " "); !strings.Contains(long, "camelCase: "+strings.Join(names, ", ")+" ") {
		t.Errorf("tempfs csi --help does not list the attributes %s", strings.Join(names, ", "))
	}

}
