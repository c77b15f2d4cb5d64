package main

import (
	"strings"

	"github.com/spf13/cobra"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/owner"
)

// mountOptionNames are the -o options tempfs takes, for completion: its own, then the kernel's mount flags it
// passes on (package fs keeps that list).
var mountOptionNames = append([]string{"allow_other", "default_permissions", "nonempty", "fsname="}, tempfs.MountFlagOptionNames()...)

// registerMountCompletions completes the values of --owner and of -o (each item of the comma-separated list) on
// a command with the mount flags.
func registerMountCompletions(cmd *cobra.Command) {
	_ = cmd.RegisterFlagCompletionFunc("owner", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, scope := range owner.ScopeNames() {
			if strings.HasPrefix(scope, toComplete) {
				out = append(out, scope)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("options", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		done, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			done, last = toComplete[:i+1], toComplete[i+1:]
		}
		var out []string
		for _, name := range mountOptionNames {
			if strings.HasPrefix(name, last) && !strings.Contains(","+done, ","+name+",") {
				out = append(out, done+name)
			}
		}
		// No space after a completed item: another may follow after a comma.
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	})
}

// strictCompletion makes `tempfs completion SHELL` refuse a shell it has no script for (exit status 2), where
// cobra's default prints its help and exits 0.
func strictCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			return usageErrorf("no completion for the shell %q: tempfs completion bash, zsh, fish or powershell", args[0])
		}
	}
}
