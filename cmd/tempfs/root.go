package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tempfs/tempfs/naming"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tempfs",
		Short: "A FUSE filesystem of self-cleaning temporary files",
		Long: `tempfs serves a scratch filesystem with the guarantees of Python's tempfile module:
unique exclusive names from templates (a last path component with six or more X),
files that vanish when their last handle closes, small files in RAM that spill to a
private disk store past --max-size, and nothing left behind at unmount or when the
daemon dies.`,
		Example: `  tempfs mount --daemon /scratch     # serve a scratch dir in the background (tempfs unmount ends it)
  exec 3<>/scratch/jobXXXXXX         # a private file, gone when fd 3 closes
  tempfs unmount /scratch
  source <(tempfs completion bash)   # tab completion (bash needs bash-completion; also zsh, fish, powershell)`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Every error of ours carries its exit status; cobra's own (flags, arguments) are usage errors.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return err })
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetHelpCommand(newHelpCommand(root))
	root.AddCommand(
		newMountCommand(),
		newUnmountCommand(),
		newVersionCommand(),
		newGettempdirCommand(),
		newGettempprefixCommand(),
		newRunCommand(),
		newMktempCommand(),
		newStatusCommand(),
		newCSICommand(),
	)
	return root
}

// versionString is the module version and the VCS revision the binary was built from, as the Go toolchain
// recorded them: "v1.2.0", or "(devel) 1a2b3c4d5e6f+dirty (2026-11-28T07:31:43Z)" for a build from a checkout.
func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown: built without module information)"
	}
	return formatVersion(info)
}

func formatVersion(info *debug.BuildInfo) string {
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var revision, when string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if revision == "" {
		return version + " (no VCS revision recorded)"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if modified {
		revision += "+dirty"
	}
	if when != "" {
		revision += " (" + when + ")"
	}
	return version + " " + revision
}

func newVersionCommand() *cobra.Command {
	return newPrintCommand("version", "Print the version of tempfs (module version and VCS revision)",
		"  tempfs version\n  tempfs --version", func() string { return "tempfs " + versionString() })
}

// newPrintCommand is a command without arguments or flags of its own that prints one line.
func newPrintCommand(use, short, example string, line func() string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), line())
			return nil
		},
	}
}

// noArgs is cobra.NoArgs with a message that says what is wrong: cobra's says `unknown command "extra"`.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments, got %q", args)
	}
	return nil
}

// newHelpCommand is cobra's help command, except that an unknown topic is an error (exit status 2), not a
// usage message and exit status 0.
func newHelpCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help provides help for any command in the application: tempfs help mount.",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			var names []string
			for _, sub := range root.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || target == nil || len(rest) > 0 {
				return usageErrorf("unknown help topic %q: the commands are listed by 'tempfs --help'", strings.Join(args, " "))
			}
			target.InitDefaultHelpFlag()
			target.InitDefaultVersionFlag()
			return target.Help()
		},
	}
}

func newGettempdirCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gettempdir",
		Short: "Print the default temporary directory, as Python's tempfile.gettempdir()",
		Long: `Print the first usable directory of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp and the
current directory, as Python's tempfile.gettempdir() finds it (a probe file is created
and removed in each candidate). tempfs mount puts its disk store there by default, unless
that is on a FUSE filesystem (a tempfs mount, say): the store search passes over those.`,
		Example: "  tempfs gettempdir\n  TMPDIR=/scratch tempfs gettempdir",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := naming.GetTempDir("")
			if err != nil {
				return failure(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
}

func newGettempprefixCommand() *cobra.Command {
	return newPrintCommand("gettempprefix", "Print the default prefix of temporary names (tmp), as Python's tempfile.gettempprefix()",
		"  tempfs gettempprefix", func() string { return naming.TempPrefix })
}
