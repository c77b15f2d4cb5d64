package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/limits"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

// Exit statuses of `tempfs run` for its own errors and when CMD cannot be started, as timeout(1), env(1) and a
// POSIX shell report them: they stay apart from the statuses CMD itself returns.
const (
	exitRunError      = 125
	exitCannotExecute = 126
	exitNotFound      = 127
	// exitSignalBase + N is the status of a CMD killed by signal N, as shells report it.
	exitSignalBase = 128
)

// reportListLimit is how many left-behind entries --report lists before it summarizes the rest.
const reportListLimit = 50

// runOptions are the flags of `tempfs run`: the mount flags, and where and how to run.
type runOptions struct {
	mount  *mountOptions
	dir    string
	report bool
}

func newRunOptions() *runOptions { return &runOptions{mount: newMountOptions()} }

// AddFlags registers the mount flags and run's own on fs.
func (o *runOptions) AddFlags(fs *pflag.FlagSet) {
	o.mount.AddFlags(fs)
	fs.StringVar(&o.dir, "dir", "", "make the scratch mountpoint in `DIR` (default: the first usable of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, .)")
	fs.BoolVar(&o.report, "report", false, "after CMD exits, print to stderr what it created, wrote, spilled to disk and left behind")
}

func newRunCommand() *cobra.Command {
	o := newRunOptions()
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARG...]",
		Short: "Run a command with TMPDIR on a private tempfs scratch mount",
		Long: `Mount a private tempfs scratch directory, run CMD with TMPDIR, TEMP and TMP pointing at it
(the rest of the environment, stdin, stdout and stderr are passed through), then unmount it
and remove everything, also when CMD fails or is killed. tempfs run exits with CMD's exit
status, 128+N when CMD died by signal N, 127 when CMD is not found and 126 when it cannot be
executed, and 125 for an error of its own (bad flags, no mount). Every signal it can forward
(HUP, INT, QUIT, TERM, USR1, USR2, ALRM, WINCH, CONT) is forwarded to CMD, from whichever
process it came. Run from a terminal's foreground, CMD gets the terminal's foreground to itself:
Ctrl-C and Ctrl-\ reach CMD once, from the terminal, and Ctrl-Z stops CMD and tempfs run together.

The filesystem is served by this process. If CMD leaves background processes that still use
the scratch directory, it is detached and they lose it when tempfs run exits. The daemon logs
to stderr only warnings and errors (everything with --debug), so CMD's stderr stays its own.

With --report, tempfs run prints to stderr, after CMD exits and before unmounting: the entries
created (from templates, and in total), the bytes written, the peak RAM, the bytes spilled to
the disk store, and every entry CMD left behind with its size.

The calling shell expands CMD's arguments before tempfs run sets TMPDIR: to pass the scratch
directory in an argument, quote it for a shell that CMD starts (sh -c '... "$TMPDIR" ...'), as
the last example does. Most programs (sort, mktemp, Python's tempfile) read TMPDIR themselves.`,
		Example: `  tempfs run -- make test
  tempfs run --report --max-size 4MiB -- python3 job.py
  tempfs run --memory 512MiB --disk 10GiB -- sh -c 'sort -T "$TMPDIR" -o sorted.txt big.txt'   # sort's runs: RAM first, then disk`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitRunError, err: errors.New("no command to run: tempfs run [flags] -- CMD [ARG...]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOwnErrors(runRun(cmd.Context(), o, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
		},
	}
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: exitRunError, err: fmt.Errorf("%w (see 'tempfs run --help')", err)}
	})
	// Flags end at CMD: `tempfs run ls -l` must give -l to ls, with or without "--".
	cmd.Flags().SetInterspersed(false)
	o.AddFlags(cmd.Flags())
	registerMountCompletions(cmd)
	// tempfs run has no --daemon: its log goes to stderr (warnings and errors only) or to --log.
	cmd.Flags().Lookup("log").Usage = "append the daemon's log to `FILE` (default: warnings and errors to stderr)"
	return cmd
}

// runOwnErrors gives tempfs run's own errors (a usage error or a failure, which carry a message) exit status 125,
// so that they never pass for CMD's; CMD's statuses carry none, and 126 and 127 stay.
func runOwnErrors(err error) error {
	var exit *exitError
	if errors.As(err, &exit) && exit.err != nil && (exit.code == exitUsage || exit.code == exitFailure) {
		return &exitError{code: exitRunError, err: exit.err}
	}
	return err
}

// runRun mounts a scratch directory in this process, runs args in it and returns CMD's exit status as an
// *exitError without a message (nil for 0). Everything it mounted or created is gone when it returns.
func runRun(ctx context.Context, o *runOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	child := exec.Command(args[0], args[1:]...)
	if errors.Is(child.Err, exec.ErrDot) {
		// A relative PATH entry ("." or ""), as a shell would use it.
		child.Err = nil
	}
	if child.Err != nil {
		// Not found in PATH: say so before mounting anything.
		return startError(args[0], child.Err)
	}
	parent := o.dir
	if parent == "" {
		var err error
		if parent, err = naming.GetTempDir(""); err != nil {
			return usageErrorf("no directory for the scratch mountpoint: %v (give one with --dir)", err)
		}
	}
	dir, err := os.MkdirTemp(parent, "tempfs-run-")
	if err != nil {
		if o.dir != "" {
			return usageErrorf("--dir: %v", err)
		}
		return failure(err)
	}
	// Deferred first, so it runs last: the mountpoint is removed once nothing is mounted on it.
	defer os.Remove(dir)

	log, closeLog, err := runLogger(o.mount, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	// The store logs stale-store cleanup through slog's default logger; keep that off CMD's stderr too.
	slog.SetDefault(log)
	p, err := o.mount.prepare(dir)
	if err != nil {
		return err
	}
	p.logWhere = "stderr (warnings and errors)"
	if o.mount.logFile != "" {
		p.logWhere = o.mount.logFile
	}
	// Caught from here on, so that a signal can never kill this process with the mount still up.
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, forwardedSignals...)
	defer signal.Stop(signals)
	s, err := o.mount.serve(p, log)
	if err != nil {
		return err
	}
	defer s.finishRun()

	child.Env = scratchEnv(os.Environ(), p.mountpoint)
	child.Stdin, child.Stdout, child.Stderr = stdin, stdout, stderr
	// CMD must inherit none of the daemon's descriptors (the FUSE device above all): mark again whatever
	// the serving goroutines opened since the mount.
	tempfs.CloseOnExec()
	tty := foregroundTerminal()
	if tty != nil {
		defer tty.Close()
		// CMD's own process group, in the terminal's foreground: the terminal's signals reach CMD alone, and
		// every signal this process gets came from another process and is forwarded.
		child.SysProcAttr = &syscall.SysProcAttr{Foreground: true, Ctty: int(tty.Fd())}
	}
	if err := child.Start(); err != nil {
		return startError(args[0], err)
	}
	// CMD inherited the daemon's raised descriptor limit: give it the one tempfs started with, hard limit
	// included (a program that closes every descriptor up to the limit expects the usual one).
	if err := limits.RestoreDescriptorsOf(child.Process.Pid, s.nofileBefore); err != nil {
		log.Debug("could not restore the command's descriptor limit", "err", err)
	}
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		forwardSignals(child.Process, signals, done, log)
	}()
	if tty != nil {
		followJobControl(child.Process.Pid, tty, log)
	}
	waitErr := child.Wait()
	if tty != nil {
		takeTerminal(tty, unix.Getpgrp())
	}
	close(done)
	<-forwarded
	if child.ProcessState == nil {
		return failure(fmt.Errorf("waiting for %s: %w", args[0], waitErr))
	}
	code := exitStatus(child.ProcessState.Sys().(syscall.WaitStatus))
	if o.report {
		// The walk is an ordinary client of the mount: its requests are served by the server's goroutines.
		left, walkErr := walkLeftBehind(p.mountpoint)
		if walkErr != nil {
			log.Warn("listing what the command left behind", "err", walkErr)
		}
		writeReport(stderr, reportOf(s.mount.Stats()), left, reportListLimit)
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code}
}

// runLogger logs the in-process daemon to w (or to --log FILE) at warn level, or at debug level with --debug:
// CMD owns stderr.
func runLogger(o *mountOptions, w io.Writer) (*slog.Logger, func(), error) {
	level := slog.LevelWarn
	if o.debug || o.fuseLogs {
		level = slog.LevelDebug
	}
	closeLog := func() {}
	if o.logFile != "" {
		f, err := openLogFile(o.logFile)
		if err != nil {
			return nil, nil, usageErrorf("%v", err)
		}
		w, closeLog = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closeLog, nil
}

// finishRun unmounts the scratch mount and removes the store. A mount still busy (CMD left background processes
// with files open there, or their working directory) is detached without waiting for them: they lose their
// files when this process exits, which closes the FUSE connection.
func (s *served) finishRun() {
	if err := s.mount.Unmount(); err != nil {
		s.log.Warn("the scratch directory is still in use by processes CMD left behind: detached; they lose it when tempfs run exits",
			"mountpoint", s.mountpointPath(), "err", err)
		if err := s.mount.Detach(); err != nil {
			s.log.Error("detaching the scratch directory", "mountpoint", s.mountpointPath(), "err", err)
		}
	} else {
		s.mount.Wait()
	}
	s.cleanup()
}

// scratchEnv is env with TMPDIR, TEMP and TMP (the variables Python, coreutils and most runtimes read) set to
// dir, and everything else kept.
func scratchEnv(env []string, dir string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "TMPDIR", "TEMP", "TMP":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "TMPDIR="+dir, "TEMP="+dir, "TMP="+dir)
}

// forwardedSignals are the signals tempfs run passes on to CMD: all that a process may be sent to ask something
// of it, but not the job-control stops (SIGTSTP, SIGTTIN, SIGTTOU), which stop tempfs run itself as usual.
var forwardedSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
	syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGWINCH, syscall.SIGCONT}

// forwardSignals passes the signals this process receives on to CMD until done is closed.
func forwardSignals(p *os.Process, signals <-chan os.Signal, done <-chan struct{}, log *slog.Logger) {
	for {
		select {
		case <-done:
			return
		case sig := <-signals:
			if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				log.Warn("forwarding a signal to the command", "signal", sig, "err", err)
			}
		}
	}
}

// foregroundTerminal returns the controlling terminal when this process is in its foreground process group,
// where the terminal's SIGINT, SIGQUIT and SIGTSTP reach every member; nil otherwise.
func foregroundTerminal() *os.File {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil // no controlling terminal
	}
	fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	if err != nil || fg != unix.Getpgrp() {
		tty.Close()
		return nil
	}
	return tty
}

// takeTerminal makes pgrp the terminal's foreground process group. This process may be in the background then,
// so SIGTTOU, which would stop it, is ignored for the call; not longer, since CMD would inherit the ignoring.
func takeTerminal(tty *os.File, pgrp int) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	_ = unix.IoctlSetPointerInt(int(tty.Fd()), unix.TIOCSPGRP, pgrp)
}

// followJobControl waits until CMD (the leader of its own foreground process group) exits, without reaping it.
// When CMD is stopped (Ctrl-Z), this process takes the terminal back and stops itself, so that the shell sees
// the job stopped; when continued (fg), it gives the terminal back to CMD and continues CMD's group.
func followJobControl(pid int, tty *os.File, log *slog.Logger) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || info.Code != cldStopped {
			return // exited (or gone): the caller reaps it
		}
		// Consume the stop, so that the next wait sees what comes after it.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WUNTRACED|unix.WNOHANG, nil)
		takeTerminal(tty, unix.Getpgrp())
		log.Debug("the command stopped: stopping too")
		_ = unix.Kill(unix.Getpid(), unix.SIGSTOP)
		// Continued: by fg (the terminal is ours again: hand it on) or bg (it is not: CMD runs in the background).
		if fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP); err == nil && fg == unix.Getpgrp() {
			takeTerminal(tty, pid)
		}
		_ = unix.Kill(-pid, unix.SIGCONT)
	}
}

// cldStopped is si_code CLD_STOPPED of a waitid answer: the child was stopped by a signal.
const cldStopped = 5

// exitStatus maps CMD's wait status to tempfs run's exit status as a shell does: the exit code, or 128+N when
// CMD died by signal N.
func exitStatus(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return exitSignalBase + int(ws.Signal())
	}
	return exitFailure
}

// startError reports a CMD that could not be started with a shell's exit statuses: 127 when it does not
// exist, 126 when it exists but cannot be executed.
func startError(name string, err error) error {
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return &exitError{code: exitNotFound, err: fmt.Errorf("%s: command not found", name)}
	case errors.Is(err, fs.ErrNotExist):
		return &exitError{code: exitNotFound, err: fmt.Errorf("%s: no such file or directory", name)}
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return &exitError{code: exitCannotExecute, err: fmt.Errorf("%s: %v", name, errnoOf(err))}
	}
	return &exitError{code: exitCannotExecute, err: fmt.Errorf("%s: %w", name, err)}
}

// errnoOf drops the operation and path that exec's errors carry, which the caller's message already names.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// runReport is what --report shows about the mount's life.
type runReport struct {
	entriesCreated  int64
	templateEntries int64
	entriesNow      int64
	bytesWritten    int64
	peakRAM         int64
	spilled         int64
	rollovers       int64
	peakDisk        int64
	diskWritten     int64
}

func reportOf(st tempfs.Stats) runReport {
	return runReport{
		entriesCreated:  st.EntriesCreated,
		templateEntries: st.TemplateEntries,
		entriesNow:      st.Entries,
		bytesWritten:    st.BytesWritten,
		peakRAM:         st.PeakRAMBytes,
		spilled:         st.SpilledBytes,
		rollovers:       st.Rollovers,
		peakDisk:        st.PeakDiskBytes,
		diskWritten:     st.DiskWrittenBytes,
	}
}

// leftEntry is one entry CMD left in the scratch directory.
type leftEntry struct {
	name string // relative to the mount; directories end in "/"
	size int64
	kind fs.FileMode // fs.ModeDir, fs.ModeSymlink, ..., 0 for a regular file
}

// walkLeftBehind lists every entry under root, in lexical order. It returns what it could read with the first
// error, so that one vanishing entry (a background process still at work) does not hide the rest.
func walkLeftBehind(root string) ([]leftEntry, error) {
	var left []leftEntry
	var firstErr error
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if firstErr == nil && !errors.Is(err, fs.ErrNotExist) {
				firstErr = err
			}
			return nil
		}
		if path == root {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		e := leftEntry{name: rel, kind: d.Type()}
		if d.IsDir() {
			e.name += "/"
		} else if info, err := d.Info(); err == nil {
			e.size = info.Size()
		}
		left = append(left, e)
		return nil
	})
	if firstErr == nil {
		firstErr = err
	}
	return left, firstErr
}

// writeReport prints the --report block: the counters, then at most limit left-behind entries and how many
// more there were.
func writeReport(w io.Writer, r runReport, left []leftEntry, limit int) {
	var files, dirs, others, bytes int64
	for _, e := range left {
		switch {
		case e.kind.IsDir():
			dirs++
		case e.kind.IsRegular():
			files++
			bytes += e.size
		default:
			others++
		}
	}
	fmt.Fprintln(w, "tempfs run: report")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  entries created\t%d in total, %d from templates\n", r.entriesCreated, r.templateEntries)
	fmt.Fprintf(tw, "  bytes written\t%s\n", sizeWithBytes(r.bytesWritten))
	fmt.Fprintf(tw, "  peak RAM\t%s\n", sizeWithBytes(r.peakRAM))
	fmt.Fprintf(tw, "  spilled to disk\t%s in %s\n", sizeWithBytes(r.spilled), plural(r.rollovers, "rollover"))
	fmt.Fprintf(tw, "  peak disk\t%s (a --disk of this much would have held it)\n", sizeWithBytes(r.peakDisk))
	fmt.Fprintf(tw, "  written to disk\t%s in all (rollover copies and later writes)\n", sizeWithBytes(r.diskWritten))
	fmt.Fprintf(tw, "  left behind\t%s of %s, %s, %s\n", plural(files, "file"), sizeWithBytes(bytes),
		plural(dirs, "directory"), plural(others, "other"))
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, e := range left {
		if i == limit {
			fmt.Fprintf(tw, "    ... and %d more\n", len(left)-limit)
			break
		}
		switch {
		case e.kind.IsDir():
			fmt.Fprintf(tw, "    %s\tdirectory\n", e.name)
		case e.kind.IsRegular():
			fmt.Fprintf(tw, "    %s\t%s\n", e.name, sizeWithBytes(e.size))
		default:
			fmt.Fprintf(tw, "    %s\t%s\n", e.name, kindName(e.kind))
		}
	}
	tw.Flush()
}

// sizeWithBytes is a size for humans with the exact count beside it once the unit hides it.
func sizeWithBytes(n int64) string {
	if n < 1024 {
		return naming.FormatSize(n)
	}
	return fmt.Sprintf("%s (%d bytes)", naming.FormatSize(n), n)
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	switch {
	case strings.HasSuffix(noun, "y"):
		noun = strings.TrimSuffix(noun, "y") + "ies"
	default:
		noun += "s"
	}
	return fmt.Sprintf("%d %s", n, noun)
}

func kindName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}
