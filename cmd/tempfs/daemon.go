package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/tempfs/tempfs/naming"
)

// storeOnFUSEWarning is the one warning a --store on a FUSE filesystem gets at start: what it costs.
const storeOnFUSEWarning = "the store is on a FUSE filesystem (--store): every byte spilled to disk goes through that filesystem's daemon as well, and passthrough is off; leave --store out to have the default search skip FUSE"

// daemonize starts `tempfs mount` again as a background process in its own session and returns once it says
// the mount is ready (exit status 0), or with its error and exit status when it could not mount.
// flags are the command line's flags as parsed, so that the child gets exactly what this process got (whether it
// came from a shell or from mount(8) through the mount-helper translation).
func daemonize(o *mountOptions, flags *pflag.FlagSet, mountpoint string) error {
	self, err := os.Executable()
	if err != nil {
		return failure(err)
	}
	if o.store != "" {
		// The daemon logs this warning where the caller does not look (the system log): say it here too.
		if onFUSE, _ := naming.IsOnFUSE(o.store); onFUSE {
			fmt.Fprintf(os.Stderr, "tempfs mount: warning: %s (store %s)\n", storeOnFUSEWarning, o.store)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return failure(err)
	}
	args := []string{"mount", "--ready-fd=3"}
	flags.Visit(func(f *pflag.Flag) {
		switch v := f.Value.(type) {
		case pflag.SliceValue:
			for _, item := range v.GetSlice() {
				args = append(args, "--"+f.Name+"="+item)
			}
		default:
			if f.Name != "daemon" && f.Name != "ready-fd" {
				args = append(args, "--"+f.Name+"="+f.Value.String())
			}
		}
	})
	args = append(args, "--", mountpoint)
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return failure(err)
	}
	defer devnull.Close()
	cmd := exec.Command(self, args...)
	cmd.Stdin = devnull
	cmd.Stdout = devnull
	// Nothing of the caller's is kept open (a caller reading our output to its end would wait for the daemon's
	// death): the daemon sees its stderr go nowhere and logs to --log or the system log (log.go).
	cmd.Stderr = devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		return failure(err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	r.Close()
	line = strings.TrimSpace(line)
	if line == "ready" {
		_ = cmd.Process.Release()
		return nil
	}
	state, _ := cmd.Process.Wait()
	code := exitFailure
	if state != nil && state.ExitCode() > 0 {
		code = state.ExitCode()
	}
	msg, found := strings.CutPrefix(line, "error: ")
	if !found || msg == "" {
		msg = "the background daemon exited before the mount was ready"
	}
	return &exitError{code: code, err: errors.New(msg)}
}
