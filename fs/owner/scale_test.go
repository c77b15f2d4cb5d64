package owner

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sessionsScript forks argv[1] children, each leading a session of its own with one more member (a child of
// its own: a member that is not the leader, as the member check must ask), prints the members' pids on one
// line and waits for its stdin to close; then it kills them all.
const sessionsScript = `
import os, signal, sys
n, pids, members = int(sys.argv[1]), [], []
for _ in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, b"%d " % os.getpid())
            signal.pause()
        signal.pause()
    pids.append(pid)
    members.append(os.read(r, 32).decode().strip())
    os.close(r); os.close(w)
print(" ".join(members), flush=True)
sys.stdin.read()
for pid in pids:
    os.killpg(pid, 9)
`

// BenchmarkOfThread measures Of for a thread that is not its process's main thread, as FUSE names the
// callers of a multi-threaded program: the thread-to-process cache and its check come first.
func BenchmarkOfThread(b *testing.B) {
	for _, scope := range []Scope{Process, Session} {
		b.Run(scope.String(), func(b *testing.B) {
			tr, err := New(Config{Scope: scope})
			if err != nil {
				b.Skip(err)
			}
			defer tr.Close()
			tid := uint32(otherThread(b))
			if o, err := tr.Of(tid); err != nil || o == nil {
				b.Fatalf("Of = %v, %v", o, err)
			}
			for b.Loop() {
				if _, err := tr.Of(tid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// otherThread returns the id of a thread of this process other than its main thread, kept alive (and idle)
// until the test ends.
func otherThread(tb testing.TB) int {
	release := make(chan struct{})
	tb.Cleanup(func() { close(release) })
	for {
		tids := make(chan int)
		go func() {
			runtime.LockOSThread() // held until release: a thread on the main thread keeps it from the next try
			tids <- unix.Gettid()
			<-release
		}()
		if tid := <-tids; tid != os.Getpid() {
			return tid
		}
	}
}

// BenchmarkIdleSessionOwners measures what watching many live session owners costs while nothing happens:
// the tracker's CPU per second (the member check every memberCheckEvery), and one rescan of /proc (how long
// an owner whose last member left can go unnoticed, beyond memberCheckEvery). TEMPFS_BENCH_OWNERS sets how many
// owners (default 1,000). Run it alone: the CPU figure is the whole test process's.
func BenchmarkIdleSessionOwners(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("TEMPFS_BENCH_OWNERS")); err == nil {
		n = v
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		b.Skip(err)
	}
	cmd := exec.Command(python, "-c", sessionsScript, strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	rec := &goneRecorder{}
	tr, err := New(Config{Scope: Session, OnGone: rec.record})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(tr.Close)
	for _, f := range strings.Fields(line) {
		pid, _ := strconv.Atoi(f)
		if o, err := tr.Of(uint32(pid)); err != nil || o == nil {
			b.Fatalf("Of(%d) = %v, %v", pid, o, err)
		}
	}
	if got := tr.Stats().Live; got != n {
		b.Fatalf("%d live owners, want %d", got, n)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	const idle = 5 * time.Second
	b.ResetTimer()
	for b.Loop() {
		before, start := cpu(), time.Now()
		time.Sleep(idle)
		b.ReportMetric(float64((cpu()-before).Microseconds())/time.Since(start).Seconds()/1000, "cpu-ms/s")
		gone := &Owner{scope: Session, id: ^uint32(0) >> 1, members: map[*process]struct{}{}}
		start = time.Now()
		tr.rescan(gone) // no process is in that session: the whole of /proc is asked
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "rescan-ms")
	}
	b.ReportMetric(float64(n), "owners")
}

// BenchmarkOfKnownProcess is what a create costs the tracker for a process it has seen: with this code, one
// getpgid or getsid (group, session) or a read of /proc/PID/cgroup (cgroup) besides the pidfd checks.
func BenchmarkOfKnownProcess(b *testing.B) {
	for _, scope := range []Scope{Process, Group, Session, Cgroup} {
		b.Run(scope.String(), func(b *testing.B) {
			tr, err := New(Config{Scope: scope})
			if err != nil {
				b.Skip(err)
			}
			defer tr.Close()
			p := exec.Command("sleep", "300")
			p.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := p.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = p.Process.Kill(); _ = p.Wait() }()
			pid := uint32(p.Process.Pid)
			if o, err := tr.Of(pid); err != nil || o == nil {
				b.Fatalf("Of = %v, %v", o, err)
			}
			for b.Loop() {
				if _, err := tr.Of(pid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
