package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// stressNG is the running stress-ng, in its own process group so that all its workers can be stopped.
type stressNG struct {
	cmd      *exec.Cmd
	log      *os.File
	killOnce sync.Once
}

// stressNGArgs are stress-ng's filesystem stressors, each with o.sngWorkers workers, on files in dir. Sizes are
// kept small (MiBs, not stress-ng's default GiB) so that the run stresses the filesystem's paths and the spool,
// not the disk's bandwidth; every size is larger than --max-size, so their files roll over.
func stressNGArgs(o options, dir string) []string {
	n := strconv.Itoa(o.sngWorkers)
	return []string{
		"--temp-path", dir,
		"--timeout", strconv.Itoa(max(1, int(o.duration.Seconds()))) + "s", // 0 would mean no timeout
		"--verify",
		"--metrics-brief",
		"--hdd", n, "--hdd-bytes", "4M",
		"--dir", n, "--dir-dirs", "2048",
		"--rename", n,
		"--link", n,
		"--symlink", n,
		"--fallocate", n, "--fallocate-bytes", "2M",
		"--mmap", n, "--mmap-file", "--mmap-bytes", "2M",
	}
}

func startStressNG(o options, dir string) (*stressNG, error) {
	log, err := os.Create(o.sngLog)
	if err != nil {
		return nil, err
	}
	args := stressNGArgs(o, dir)
	fmt.Fprintf(log, "stress-ng %v\n", args)
	cmd := exec.Command("stress-ng", args...)
	if o.sngWorkers == 0 { // the workload alone, to tell its findings from stress-ng's
		cmd = exec.Command("true")
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	return &stressNG{cmd: cmd, log: log}, nil
}

// wait waits for stress-ng to exit; an error says how it ended when that was not exit status 0.
func (s *stressNG) wait() error {
	err := s.cmd.Wait()
	s.log.Close()
	return err
}

// kill stops stress-ng and its workers (its process group, which this program made): SIGTERM, then SIGKILL.
func (s *stressNG) kill() {
	s.killOnce.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		for range 50 {
			if syscall.Kill(-pgid, 0) != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// sngStatus describes how stress-ng ended (its exit statuses: 2 a stressor failed, 3 out of resources, 4 not
// implemented, 5 killed by a signal, 6 a stressor exited by exit(), 7 metrics untrustworthy).
func sngStatus(err error) string {
	if err == nil {
		return "exited 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "was killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	}
	return err.Error()
}
