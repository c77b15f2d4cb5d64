// Command tempfs serves and drives tempfs, a FUSE filesystem of self-cleaning temporary files.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs one command line and returns the process's exit status: 0 on success, 2 for bad input (before
// anything was mounted), 1 for a failure while working, or the status a command chose (tempfs run).
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
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
