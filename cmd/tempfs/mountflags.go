package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/tempfs/tempfs/cmd/tempfs/csinode"
)

// The flags of `tempfs mount` (mountOptions.AddFlags) are the one list of mount settings: an fstab line's -o
// names and a CSI volume's attributes are derived from it, so that a new mount flag reaches both. A flag that
// one of them must not offer is named below with the reason.

// notInFstab are the mount flags that an fstab -o option does not set.
var notInFstab = map[string]string{
	"options":    "-o is where fstab options come from: its own names go to the mount as they are",
	"fuse-debug": "a developer's flag: a FUSE request log of every request has no place in a boot-time mount",
}

// notAttributes are the mount flags that a CSI volume attribute does not set: the plugin decides them for every
// volume, or they would reach past the pod.
var notAttributes = map[string]string{
	"store":      "each volume's store is the plugin's (under its --store)",
	"options":    "every volume is mounted allow_other, nosuid and nodev; a pod's mount flags are refused",
	"metrics":    "a listening port on the node belongs to no pod",
	"log":        "the daemons log to the plugin's stderr",
	"debug":      "the plugin's --debug decides how much it logs",
	"fuse-debug": "the plugin's log is no place for a log of every FUSE request",
}

// mountFlagSet is the flag set of `tempfs mount`'s options, in the order they are registered (pflag's formal
// order), each with its parser.
func mountFlagSet() *pflag.FlagSet {
	flags := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	flags.SortFlags = false
	newMountOptions().AddFlags(flags)
	return flags
}

// fstabOption is the mount flag an fstab -o option sets.
type fstabOption struct {
	flag string
	// value: the option is NAME=VALUE (the flag's value); otherwise it is a bare NAME (a boolean flag).
	value bool
}

// fstabOptions maps the -o names of an fstab line to mount flags: a flag's own name, and with '_' for '-' (as
// tmpfs spells its options, max_size); a flag with a value takes NAME=VALUE, a boolean one a bare NAME.
func fstabOptions() map[string]fstabOption {
	opts := map[string]fstabOption{}
	mountFlagSet().VisitAll(func(f *pflag.Flag) {
		if _, no := notInFstab[f.Name]; no {
			return
		}
		o := fstabOption{flag: f.Name, value: f.Value.Type() != "bool"}
		opts[f.Name] = o
		opts[strings.ReplaceAll(f.Name, "-", "_")] = o
	})
	return opts
}

// attributeFlags are the mount flags that a CSI volume attribute sets, in the order they are registered (which
// is the order the plugin passes them in).
func attributeFlags() []string {
	var names []string
	mountFlagSet().VisitAll(func(f *pflag.Flag) {
		if _, no := notAttributes[f.Name]; !no {
			names = append(names, f.Name)
		}
	})
	return names
}

// attributeNames are the volume attributes, as a pod writes them: the attribute flags in camelCase.
func attributeNames() []string {
	flags := attributeFlags()
	for i, f := range flags {
		flags[i] = csinode.AttributeName(f)
	}
	return flags
}
