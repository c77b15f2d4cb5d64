package handover

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// pair is a connected unixpacket socket pair.
func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "handover")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// memfds makes n memfds, each holding its own name, which is how the receiver checks it got the right one.
func memfds(t *testing.T, n int) []NamedFD {
	t.Helper()
	out := make([]NamedFD, n)
	for i := range out {
		name := fmt.Sprintf("file/%d", i)
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, []byte(name)); err != nil {
			t.Fatal(err)
		}
		out[i] = NamedFD{Name: name, FD: fd}
		t.Cleanup(func() { unix.Close(fd) })
	}
	return out
}

func openCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

type stateV1 struct {
	Nodes  []uint64 `json:"nodes"`
	Policy string   `json:"policy"`
}

// exchange runs Send and Receive on a socket pair and returns both results.
func exchange(t *testing.T, m Message, opts ReceiveOptions) (*Received, error, error) {
	t.Helper()
	a, b := pair(t)
	sent := make(chan error, 1)
	go func() { sent <- Send(a, m) }()
	r, rerr := Receive(b, opts)
	return r, rerr, <-sent
}

func TestSendReceive(t *testing.T) {
	for _, n := range []int{0, 1, MaxFDsPerMessage, MaxFDsPerMessage + 1, 600} {
		t.Run(fmt.Sprintf("%d descriptors", n), func(t *testing.T) {
			fds := memfds(t, n)
			want := stateV1{Nodes: []uint64{1, 2, 40}, Policy: "session"}
			r, rerr, serr := exchange(t, Message{Version: 1, From: "tempfs test", FDs: fds, State: want},
				ReceiveOptions{Versions: []int{1}})
			if serr != nil || rerr != nil {
				t.Fatalf("send: %v; receive: %v", serr, rerr)
			}
			defer r.Close()
			if r.Version != 1 || r.From != "tempfs test" || len(r.FDs) != n {
				t.Fatalf("got version %d from %q with %d descriptors", r.Version, r.From, len(r.FDs))
			}
			for i, f := range r.FDs {
				buf := make([]byte, 64)
				k, err := unix.Pread(f.FD, buf, 0)
				if err != nil || f.Name != fds[i].Name || string(buf[:k]) != fds[i].Name {
					t.Fatalf("descriptor %d: name %q, content %q (%v), want %q", i, f.Name, buf[:k], err, fds[i].Name)
				}
				if fl, err := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
					t.Fatalf("descriptor %d not close-on-exec (%#x, %v)", i, fl, err)
				}
			}
			var got stateV1
			if err := r.DecodeState(&got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("state %+v, want %+v", got, want)
			}
		})
	}
}

// lowerNoFile lowers the soft RLIMIT_NOFILE until the test ends, so that about room descriptor numbers
// below it are free (the kernel hands out the lowest free number).
func lowerNoFile(t *testing.T, room int) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	open := map[int]bool{}
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil {
			open[fd] = true
		}
	}
	limit, free := 0, 0
	for ; free < room; limit++ {
		if !open[limit] {
			free++
		}
	}
	low := old
	low.Cur = uint64(limit)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			t.Error(err)
		}
	})
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name     string
		version  int
		accepts  []int
		fds      int
		room     int // if > 0, RLIMIT_NOFILE leaves this many descriptors free
		reserve  int
		wantErr  error
		wantText string
	}{
		{name: "newer version", version: 2, accepts: []int{1}, fds: 3, wantErr: ErrUnknownVersion, wantText: "version 2"},
		{name: "older version", version: 1, accepts: []int{2, 3}, fds: 3, wantErr: ErrUnknownVersion, wantText: "versions [2 3]"},
		{name: "one of several", version: 2, accepts: []int{1, 2, 3}, fds: 3},
		{name: "too many descriptors", version: 1, accepts: []int{1}, fds: 50, room: 40, reserve: 1,
			wantErr: ErrTooManyFDs, wantText: "50 descriptors to receive"},
		{name: "reserve counts", version: 1, accepts: []int{1}, fds: 10, room: 40, reserve: 35,
			wantErr: ErrTooManyFDs, wantText: "35 to keep free"},
		{name: "fits", version: 1, accepts: []int{1}, fds: 20, room: 40, reserve: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds := memfds(t, tt.fds)
			before := openCount(t)
			if tt.room > 0 {
				lowerNoFile(t, tt.room)
			}
			r, rerr, serr := exchange(t, Message{Version: tt.version, FDs: fds, State: stateV1{}},
				ReceiveOptions{Versions: tt.accepts, Reserve: tt.reserve})
			if tt.wantErr == nil {
				if rerr != nil || serr != nil {
					t.Fatalf("receive: %v; send: %v", rerr, serr)
				}
				r.Close()
				return
			}
			if !errors.Is(rerr, tt.wantErr) || !strings.Contains(rerr.Error(), tt.wantText) {
				t.Fatalf("receive: %v, want %v mentioning %q", rerr, tt.wantErr, tt.wantText)
			}
			var refused *RefusedError
			if !errors.As(serr, &refused) || !strings.Contains(refused.Reason, tt.wantText) {
				t.Fatalf("send: %v, want a RefusedError mentioning %q", serr, tt.wantText)
			}
			// Refused before any descriptor was sent: none arrived, none leaked (the pair's two are
			// closed at cleanup, after this check, so they count on both sides).
			if after := openCount(t); after != before+2 {
				t.Fatalf("%d descriptors open after the refusal, %d before (+2 for the socket pair)", after, before)
			}
		})
	}
}

// TestMalformedHeaders sends headers by hand: another format, an unsealed state, counts that disagree.
func TestMalformedHeaders(t *testing.T) {
	unsealed := func(t *testing.T, content string) int {
		fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(fd, []byte(content))
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	sealed := func(t *testing.T, content string) int {
		fd, err := sealedMemfd([]byte(content))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	tests := []struct {
		name     string
		h        header
		state    func(*testing.T, string) int
		content  string
		wantText string
	}{
		{"other format", header{Format: "other", Version: 1}, sealed, `{"fds":[],"state":{}}`, `"other" version 1`},
		{"unsealed state", header{Format: Format, Version: 1, StateBytes: 21}, unsealed, `{"fds":[],"state":{}}`, "not sealed"},
		{"size differs", header{Format: Format, Version: 1, StateBytes: 99}, sealed, `{"fds":[],"state":{}}`, "header says 99"},
		{"names differ", header{Format: Format, Version: 1, FDs: 3, StateBytes: 24}, sealed, `{"fds":["a"],"state":{}}`, "state names 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t)
			if err := writePacket(a, tt.h, tt.state(t, tt.content)); err != nil {
				t.Fatal(err)
			}
			_, err := Receive(b, ReceiveOptions{Versions: []int{1}})
			if err == nil || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("receive: %v, want an error mentioning %q", err, tt.wantText)
			}
			var refused *RefusedError
			if err := readAnswer(a); !errors.As(err, &refused) {
				t.Fatalf("sender got %v, want a refusal", err)
			}
		})
	}
}

func TestDecodeStateRefusesUnknownFields(t *testing.T) {
	type newer struct {
		stateV1
		Quota map[string]int64 `json:"quota"`
	}
	r, rerr, serr := exchange(t, Message{Version: 1, State: newer{Quota: map[string]int64{"a": 1}}},
		ReceiveOptions{Versions: []int{1}})
	if rerr != nil || serr != nil {
		t.Fatalf("receive: %v; send: %v", rerr, serr)
	}
	var old stateV1
	if err := r.DecodeState(&old); err == nil || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("decode: %v, want an error naming the unknown field", err)
	}
}

func TestSendRefusesBadNames(t *testing.T) {
	fds := memfds(t, 2)
	for _, names := range [][2]string{{"a", "a"}, {"a", ""}} {
		fds[0].Name, fds[1].Name = names[0], names[1]
		a, _ := pair(t)
		if err := Send(a, Message{Version: 1, FDs: fds}); err == nil {
			t.Errorf("names %q: sent", names)
		}
	}
}

// TestKernelLimits pins the two kernel facts the protocol is shaped by: one SCM_RIGHTS message carries at
// most 253 descriptors (more is EINVAL), and a receiver without room under RLIMIT_NOFILE gets fewer
// descriptors than were sent, with MSG_CTRUNC set, the rest closed by the kernel.
func TestKernelLimits(t *testing.T) {
	fds := memfds(t, MaxFDsPerMessage+1)
	raw := make([]int, len(fds))
	for i, f := range fds {
		raw[i] = f.FD
	}
	a, b := pair(t)
	if _, _, err := a.WriteMsgUnix([]byte("{}"), unix.UnixRights(raw...), nil); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("sending %d descriptors in one message: %v, want EINVAL", len(raw), err)
	}
	if err := writePacket(a, batch{Count: 30}, raw[:30]...); err != nil {
		t.Fatalf("sending 30: %v", err)
	}
	lowerNoFile(t, 10)
	var bt batch
	got, truncated, err := readPacket(b, &bt, MaxFDsPerMessage)
	closeAll(got)
	if err != nil || !truncated || len(got) >= 30 {
		t.Fatalf("receiving 30 with room for 10: %d arrived, truncated %v, err %v", len(got), truncated, err)
	}
	t.Logf("with room for 10 descriptors, %d of 30 arrived and MSG_CTRUNC was set", len(got))
}

// BenchmarkSendReceive is the cost of handing over n descriptors (a mount's spool files), for the pause
// of a take-over: go test -run - -bench SendReceive ./fs/handover.
func BenchmarkSendReceive(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("%d descriptors", n), func(b *testing.B) {
			fds := make([]NamedFD, n)
			for i := range fds {
				fd, err := unix.MemfdCreate("bench", unix.MFD_CLOEXEC)
				if err != nil {
					b.Fatal(err)
				}
				fds[i] = NamedFD{Name: fmt.Sprintf("file/%d", i), FD: fd}
			}
			defer func() {
				for _, f := range fds {
					unix.Close(f.FD)
				}
			}()
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			var conns [2]*net.UnixConn
			for i, fd := range sp {
				f := os.NewFile(uintptr(fd), "handover")
				c, err := net.FileConn(f)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c.(*net.UnixConn)
			}
			state := stateV1{Nodes: make([]uint64, n)}
			b.ResetTimer()
			for range b.N {
				sent := make(chan error, 1)
				go func() { sent <- Send(conns[0], Message{Version: 1, FDs: fds, State: state}) }()
				r, err := Receive(conns[1], ReceiveOptions{Versions: []int{1}})
				if err != nil {
					b.Fatal(err)
				}
				if err := <-sent; err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
