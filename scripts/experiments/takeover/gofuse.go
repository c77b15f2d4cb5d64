package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The go-fuse half: can an unmodified go-fuse fuse.Server serve a connection whose INIT another process
// answered? NewServer insists on reading INIT first. It accepts the magic mountpoint /dev/fd/N (a descriptor
// it then reads without mounting), so the successor hands it one end of a SOCK_SEQPACKET pair carrying the
// INIT the kernel sent at mount time, reads go-fuse's reply from the other end, checks that it is the reply
// the first server gave (same negotiation, so the same request layouts), and then dup2s the real /dev/fuse
// over N before calling Serve: go-fuse reads and writes the descriptor by number.

// goState is what a go-fuse server hands over beside the descriptor.
type goState struct {
	InitIn    []byte `json:"init_in"`    // the INIT request the kernel sent, as go-fuse kept it
	InitReply []byte `json:"init_reply"` // go-fuse's reply to it
	Pid       int    `json:"pid"`        // the sender, whose exit the successor waits for
	FrozenNs  int64  `json:"frozen_ns"`  // CLOCK_MONOTONIC when the sender stopped serving
}

// tinyFS serves one file, /f0 (node 2), holding "hello", behind a gate: once frozen, a request that
// arrives is parked for good, unanswered and unapplied, for the successor's resend to recover.
type tinyFS struct {
	fuse.RawFileSystem
	s     *server
	quiet bool // count requests instead of reporting each

	mu     sync.RWMutex // held shared by every request inside, exclusively by freeze
	frozen atomic.Bool
	parked chan struct{} // never closed

	parkedN, resentN atomic.Int64 // requests parked; re-delivered requests (bit 63) let in
}

func (t *tinyFS) counts() string {
	return fmt.Sprintf("parked=%d resent_served=%d", t.parkedN.Load(), t.resentN.Load())
}

var tinyData = []byte("hello")

// note lets a request in, or parks it if the gate is closed; the caller runs t.mu.RUnlock when done.
func (t *tinyFS) note(op string, h *fuse.InHeader, name string) {
	t.mu.RLock()
	if t.frozen.Load() {
		t.mu.RUnlock()
		t.parkedN.Add(1)
		<-t.parked
	}
	if h.Unique&uniqueResend != 0 {
		t.resentN.Add(1)
	}
	if !t.quiet {
		t.s.emit(event{Ev: "req", Op: op, Unique: h.Unique, Node: h.NodeId, Name: name, Detail: "(go-fuse)"})
	}
}

// freeze closes the gate and waits for the requests inside to return.
func (t *tinyFS) freeze() {
	t.frozen.Store(true)
	t.mu.Lock()
	t.mu.Unlock()
}

func newTinyFS(s *server, quiet bool) *tinyFS {
	return &tinyFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), s: s, quiet: quiet, parked: make(chan struct{})}
}

func monoNs() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// waitExit returns once process pid has exited.
func waitExit(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if err != unix.EINTR {
			return err
		}
	}
}

func (t *tinyFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t.note("LOOKUP", h, name)
	defer t.mu.RUnlock()
	if h.NodeId != 1 || name != "f0" {
		return fuse.ENOENT
	}
	out.NodeId = 2
	out.Attr = fuse.Attr{Ino: 2, Size: uint64(len(tinyData)), Mode: syscall.S_IFREG | 0o644, Nlink: 1}
	return fuse.OK
}

func (t *tinyFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t.note("GETATTR", &in.InHeader, "")
	defer t.mu.RUnlock()
	switch in.NodeId {
	case 1:
		out.Attr = fuse.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	case 2:
		out.Attr = fuse.Attr{Ino: 2, Size: uint64(len(tinyData)), Mode: syscall.S_IFREG | 0o644, Nlink: 1}
	default:
		return fuse.ENOENT
	}
	return fuse.OK
}

func (t *tinyFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t.note("OPEN", &in.InHeader, "")
	defer t.mu.RUnlock()
	return fuse.OK
}

func (t *tinyFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t.note("READ", &in.InHeader, "")
	defer t.mu.RUnlock()
	if int(in.Offset) >= len(tinyData) {
		return fuse.ReadResultData(nil), fuse.OK
	}
	return fuse.ReadResultData(tinyData[in.Offset:]), fuse.OK
}

func goOptions() *fuse.MountOptions {
	// No DirectMount: with the magic /dev/fd/N mountpoint go-fuse must not try to mount anything.
	return &fuse.MountOptions{Name: "takeoverexp", FsName: "takeoverexp", MaxBackground: 12}
}

// replayInit starts a go-fuse Server on one end of a socket pair that carries initIn, and returns the server
// (not yet serving), the descriptor number it reads, and the reply it wrote to INIT.
func replayInit(fsys fuse.RawFileSystem, initIn []byte) (*fuse.Server, int, []byte, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, nil, err
	}
	defer unix.Close(pair[1])
	if _, err := unix.Write(pair[1], initIn); err != nil {
		return nil, -1, nil, err
	}
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", pair[0]), goOptions())
	if err != nil {
		return nil, -1, nil, fmt.Errorf("NewServer on the replayed INIT: %w", err)
	}
	reply := make([]byte, 4096)
	n, err := unix.Read(pair[1], reply)
	if err != nil {
		return nil, -1, nil, err
	}
	return srv, pair[0], reply[:n], nil
}

func goServerMain(args []string) error {
	fl := flag.NewFlagSet("gofuse", flag.ContinueOnError)
	name := fl.String("name", "G1", "name in events")
	mnt := fl.String("mount", "", "mount a new connection here")
	quiet := fl.Bool("quiet", false, "do not report each request")
	mlock := fl.Bool("mlock", false, "mlockall(MCL_CURRENT|MCL_FUTURE) when a hand-over starts, before freezing")
	if err := fl.Parse(args); err != nil {
		return err
	}
	s := &server{name: *name, ctl: 3}
	fsys := newTinyFS(s, *quiet)
	var st goState
	if *mnt != "" {
		// The daemon opens and mounts the device itself, so that it owns the descriptor go-fuse reads
		// (go-fuse does not export it), and hands go-fuse the magic mountpoint.
		fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
		if err := unix.Mount("takeoverexp", *mnt, "fuse.takeoverexp", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", fd), goOptions())
		if err != nil {
			return err
		}
		in := srv.KernelSettings()
		st.InitIn = bytes.Clone(structBytes(in))
		// The reply go-fuse gave is not kept anywhere; replaying the INIT into a throwaway server gives it.
		if _, _, st.InitReply, err = replayInit(newTinyFS(s, true), st.InitIn); err != nil {
			return err
		}
		s.fuse = fd
		go srv.Serve()
		s.emit(event{Ev: "serving", Detail: fmt.Sprintf("go-fuse answered INIT (kernel 7.%d); fd=%d", in.Minor, fd)})
	} else {
		fds, err := recvMsg(4, &st)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if len(fds) != 1 {
			return fmt.Errorf("received %d descriptors, want 1", len(fds))
		}
		if len(st.InitIn) != int(unsafe.Sizeof(fuse.InitIn{})) {
			return fmt.Errorf("INIT record of %d bytes", len(st.InitIn))
		}
		srv, n, reply, err := replayInit(fsys, st.InitIn)
		if err != nil {
			return err
		}
		same := bytes.Equal(reply, st.InitReply)
		if !same {
			// A different negotiation would make this server parse requests the kernel lays out otherwise.
			s.emit(event{Ev: "refused", Detail: fmt.Sprintf("INIT reply differs: %x vs %x", reply, st.InitReply)})
			return fmt.Errorf("INIT reply differs")
		}
		if err := unix.Dup3(fds[0], n, unix.O_CLOEXEC); err != nil {
			return err
		}
		unix.Close(fds[0])
		s.fuse = n
		// The predecessor's readers can take requests until it exits; then one resend re-queues what it
		// read and did not answer, before this server reads anything (a resend would also re-queue
		// requests of its own in flight).
		if err := waitExit(st.Pid); err != nil {
			return fmt.Errorf("wait for the predecessor: %w", err)
		}
		h := fuse.OutHeader{Length: 16, Status: -int32(fuse.NOTIFY_RESEND)}
		if _, err := unix.Write(n, structBytes(&h)); err != nil {
			return fmt.Errorf("resend: %w", err)
		}
		go srv.Serve()
		pause := monoNs() - st.FrozenNs
		s.emit(event{Ev: "serving", Pause: pause, Detail: fmt.Sprintf(
			"go-fuse on the taken-over connection; replayed INIT reply identical to the first server's: %v; resent; pause %s",
			same, time.Duration(pause))})
	}
	for {
		var m ctlMsg
		fds, err := recvMsg(s.ctl, &m)
		if err != nil {
			return err
		}
		switch m.Cmd {
		case "handover":
			peer := 4
			if len(fds) == 1 {
				peer = fds[0] // the successor's socket, from the driver
			}
			var locked string
			if *mlock {
				locked = lockAll()
			}
			st.FrozenNs = monoNs()
			fsys.freeze()
			st.Pid = os.Getpid()
			err := sendMsg(peer, st, s.fuse)
			s.emit(event{Ev: "handed-over", Errno: errnoName(err), Detail: "via peer; " + fsys.counts() + locked})
			os.Exit(0)
		case "ping":
			s.emit(event{Ev: "pong", Detail: fsys.counts()})
		}
	}
}

// lockAll locks every page of the process in memory (MCL_CURRENT faults in every mapped page, MCL_FUTURE
// populates every later mapping), so that no reader's buffer can fault while the kernel copies a request into
// it; it reports how long that took and the resident and locked memory before and after, for the driver.
func lockAll() string {
	rss0, lck0 := memStatus()
	start := time.Now()
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	took := time.Since(start)
	rss1, lck1 := memStatus()
	return fmt.Sprintf(" mlock_ns=%d rss_kb=%d->%d lck_kb=%d->%d mlock_err=%v", took.Nanoseconds(), rss0, rss1, lck0, lck1, err)
}

// memStatus reads VmRSS and VmLck (KiB) from /proc/self/status.
func memStatus() (rss, lck int64) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range bytes.Split(b, []byte("\n")) {
		var v int64
		if n, _ := fmt.Sscanf(string(line), "VmRSS: %d kB", &v); n == 1 {
			rss = v
		} else if n, _ := fmt.Sscanf(string(line), "VmLck: %d kB", &v); n == 1 {
			lck = v
		}
	}
	return rss, lck
}
