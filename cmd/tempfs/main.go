// Command tempfs serves and drives tempfs, a FUSE filesystem of self-cleaning temporary files.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
)

func main() {
	args := os.Args[1:]
	if helper, ok := mountHelperArgs(os.Args[0], args, isCommand); ok {
		if dir, opts, ok := remountRequest(helper); ok {
			os.Exit(remount(dir, opts, os.Stderr))
		}
		args = helper
	}
	os.Exit(execute(context.Background(), args, os.Stdout, os.Stderr))
}

// isCommand reports whether name is one of tempfs's commands (or their aliases).
func isCommand(name string) bool {
	for _, c := range newRootCommand().Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return true
		}
	}
	return name == "help"
}

// execute runs one command line and returns the process's exit status: 0 on success, 2 for bad input (before
// anything was mounted), 1 for a failure while working, or the status a command chose (tempfs run).
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// After SetOut: cobra's completion commands keep the writer they find when they are made.
	strictCompletion(root)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	tellReadyFD(cmd, err)
	var exit *exitError
	if errors.As(err, &exit) {
		if exit.err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), exit.err)
		}
		return exit.code
	}
	// Anything else comes from cobra's own parsing: an unknown flag or command, a missing argument.
	fmt.Fprintf(stderr, "%s: %v (see '%s --help')\n", cmd.CommandPath(), err, cmd.CommandPath())
	return exitUsage
}

// tellReadyFD passes an error that came before the mount could start (a bad flag, say) to a waiting
// `--daemon` parent through --ready-fd, which the parent puts first so that it is parsed even then.
func tellReadyFD(cmd *cobra.Command, err error) {
	f := cmd.Flags().Lookup("ready-fd")
	if f == nil || !f.Changed {
		return
	}
	if fd, convErr := strconv.Atoi(f.Value.String()); convErr == nil && fd > 2 {
		newReadyNotifier(fd).fail(err)
	}
}

const (
	exitFailure = 1
	exitUsage   = 2
)

// exitError carries the exit status a command wants; err is printed as one line on stderr when it is set.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports bad input: exit status 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// failure reports an error while working: exit status 1.
func failure(err error) error {
	if err == nil {
		return nil
	}
	var exit *exitError
	if errors.As(err, &exit) {
		return err
	}
	return &exitError{code: exitFailure, err: err}
}
