package main

import (
	"fmt"
	"runtime/debug"

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
		Example: `  tempfs mount /scratch &            # serve a scratch dir (Ctrl-C or tempfs unmount ends it)
  exec 3<>/scratch/jobXXXXXX         # a private file, gone when fd 3 closes
  tempfs unmount /scratch`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every error of ours carries its exit status; cobra's own (flags, arguments) are usage errors.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return err })
	root.AddCommand(
		newMountCommand(),
		newUnmountCommand(),
		newVersionCommand(),
		newGettempdirCommand(),
		newGettempprefixCommand(),
		newRunCommand(),
		newMktempCommand(),
		newStatusCommand(),
	)
	return root
}

func version() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of tempfs",
		Example: "  tempfs version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "tempfs", version())
			return nil
		},
	}
}

func newGettempdirCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gettempdir",
		Short: "Print the default temporary directory, as Python's tempfile.gettempdir()",
		Long: `Print the first usable directory of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp and the
current directory, as Python's tempfile.gettempdir() finds it (a probe file is created
and removed in each candidate). tempfs mount puts its disk store there by default.`,
		Example: "  tempfs gettempdir\n  TMPDIR=/scratch tempfs gettempdir",
		Args:    cobra.NoArgs,
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
	return &cobra.Command{
		Use:     "gettempprefix",
		Short:   "Print the default prefix of temporary names (tmp), as Python's tempfile.gettempprefix()",
		Example: "  tempfs gettempprefix",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), naming.TempPrefix)
			return nil
		},
	}
}
