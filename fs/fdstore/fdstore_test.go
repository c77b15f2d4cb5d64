package fdstore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sameFile reports whether two descriptors refer to the same open file (device and inode).
func sameFile(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func receiveOne(t *testing.T, l *Listener) *Message {
	t.Helper()
	m, err := l.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	t.Cleanup(m.CloseFDs)
	return m
}

func TestStoreAddRemoveNotify(t *testing.T) {
	for _, addr := range []string{"", filepath.Join(t.TempDir(), "notify")} {
		t.Run(fmt.Sprintf("addr=%q", addr), func(t *testing.T) {
			l, err := Listen(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			s, err := New(l.Addr(), 10)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Max() != 10 {
				t.Fatalf("Max = %d", s.Max())
			}
			f, err := os.CreateTemp(t.TempDir(), "stored")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("kept"); err != nil {
				t.Fatal(err)
			}
			if err := s.Add("x", int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			if err := s.Add("fuse 0", int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			if err := s.Remove("x"); err != nil {
				t.Fatal(err)
			}
			if err := s.Notify("READY=1"); err != nil {
				t.Fatal(err)
			}
			// Add is synchronous: everything is queued, in order, when the calls return.
			want := []struct {
				fields map[string]string
				fds    int
			}{
				{map[string]string{"FDSTORE": "1", "FDNAME": "x"}, 1},
				{map[string]string{"FDSTORE": "1", "FDNAME": "fuse 0"}, 1},
				{map[string]string{"FDSTOREREMOVE": "1", "FDNAME": "x"}, 0},
				{map[string]string{"READY": "1"}, 0},
			}
			for i, w := range want {
				m := receiveOne(t, l)
				if fmt.Sprint(m.Fields) != fmt.Sprint(w.fields) || len(m.FDs) != w.fds {
					t.Fatalf("message %d: fields %v with %d fds, want %v with %d", i, m.Fields, len(m.FDs), w.fields, w.fds)
				}
				if m.PID != os.Getpid() || m.UID != os.Getuid() {
					t.Fatalf("message %d: sender pid %d uid %d, want %d %d", i, m.PID, m.UID, os.Getpid(), os.Getuid())
				}
				if m.Truncated {
					t.Fatalf("message %d truncated", i)
				}
				for _, fd := range m.FDs {
					if !sameFile(t, fd, int(f.Fd())) {
						t.Fatalf("message %d: the descriptor received is not the file sent", i)
					}
					buf := make([]byte, 4)
					if n, err := unix.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "kept" {
						t.Fatalf("message %d: read %q, %v through the received descriptor", i, buf[:n], err)
					}
					if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
						t.Fatalf("message %d: received descriptor is not close-on-exec", i)
					}
				}
			}
			if _, err := l.Receive(); !errors.Is(err, ErrNoMessage) {
				t.Fatalf("Receive on an empty queue: %v, want ErrNoMessage", err)
			}
		})
	}
}

func TestStoreRefusesBadNames(t *testing.T) {
	l, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := New(l.Addr(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"", "a:b", "a\nFDSTOREREMOVE=1", "tab\t", "del\x7f", "é", strings.Repeat("n", NameMax+1)} {
		if err := s.Add(name, 0); err == nil {
			t.Errorf("Add(%q) took the name", name)
		}
		if err := s.Remove(name); err == nil {
			t.Errorf("Remove(%q) took the name", name)
		}
	}
	if err := s.Add(strings.Repeat("n", NameMax), 0); err != nil {
		t.Errorf("a name of %d bytes: %v", NameMax, err)
	}
	if err := s.Add("x", -1); err == nil {
		t.Error("Add of fd -1 succeeded")
	}
	// Only the valid one went out.
	m := receiveOne(t, l)
	if m.Fields["FDNAME"] != strings.Repeat("n", NameMax) {
		t.Fatalf("got %v", m.Fields)
	}
	if m2, err := l.Receive(); err == nil {
		t.Fatalf("a refused name was sent: %v", m2.Fields)
	}
}

func TestStoreSendToNobody(t *testing.T) {
	s, err := New("@tempfs-fdstore-test-nobody-"+strconv.Itoa(os.Getpid()), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Add("fuse", 0); err == nil {
		t.Fatal("Add to a socket nobody listens on succeeded")
	}
}

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		notify, fdstore string
		max             int // -1: no store
		err             bool
	}{
		{"", "", -1, false},
		{"", "10", -1, false},
		{"@x", "", -1, false},
		{"@x", "0", -1, false},
		{"@x", "10", 10, false},
		{"/run/x/notify", "4096", 4096, false},
		{"@x", "ten", -1, true},
		{"@x", "-1", -1, true},
		{"relative/notify", "10", -1, true},
		{"vsock:2:1234", "10", -1, true},
	} {
		t.Run(tc.notify+","+tc.fdstore, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tc.notify)
			t.Setenv("FDSTORE", tc.fdstore)
			s, err := FromEnv()
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if s != nil {
				defer s.Close()
			}
			switch {
			case tc.max < 0 && s != nil:
				t.Fatalf("a store of %d", s.Max())
			case tc.max >= 0 && (s == nil || s.Max() != tc.max):
				t.Fatalf("store %v, want max %d", s, tc.max)
			}
		})
	}
}

func TestNotifyWithoutStore(t *testing.T) {
	l, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", l.Addr())
	t.Setenv("FDSTORE", "")
	if err := Notify("STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if m := receiveOne(t, l); m.Fields["STOPPING"] != "1" {
		t.Fatalf("got %v", m.Fields)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET: %v", err)
	}
}

// passedFDs opens n descriptors at start, start+1, ... (numbers well above anything the test process has
// open), each a file holding its index, and closes them at the end.
func passedFDs(t *testing.T, start, n int) {
	t.Helper()
	for i := range n {
		f, err := os.CreateTemp(t.TempDir(), "passed")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(f, i)
		if err := unix.Dup3(int(f.Fd()), start+i, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { unix.Close(start + i) })
	}
}

func TestPassedParsing(t *testing.T) {
	const pid, ppid, start = 1000, 999, 300
	for _, tc := range []struct {
		name string
		env  map[string]string
		open int
		want map[string]int // nil: an error
	}{
		{"nothing", map[string]string{}, 0, map[string]int{}},
		{"systemd", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fuse:record"}, 2,
			map[string]int{"fuse": start, "record": start + 1}},
		{"holder", map[string]string{HolderPIDEnv: "999", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fuse:record"}, 2,
			map[string]int{"fuse": start, "record": start + 1}},
		{"another's pid", map[string]string{"LISTEN_PID": "1001", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "fuse"}, 1, map[string]int{}},
		{"another holder", map[string]string{HolderPIDEnv: "998", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "fuse"}, 1, map[string]int{}},
		{"LISTEN_PID wins over the holder", map[string]string{"LISTEN_PID": "1001", HolderPIDEnv: "999", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "fuse"}, 1, map[string]int{}},
		{"nobody's", map[string]string{"LISTEN_FDS": "1", "LISTEN_FDNAMES": "fuse"}, 1, map[string]int{}},
		{"zero", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "0"}, 0, map[string]int{}},
		{"unnamed", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "1"}, 1, map[string]int{"unknown": start}},
		{"two unnamed", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "2"}, 2, nil},
		{"more names", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "fuse:record"}, 2, nil},
		{"fewer names", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fuse"}, 2, nil},
		{"duplicate", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fuse:fuse"}, 2, nil},
		{"empty name", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "fuse:"}, 2, nil},
		{"not open", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:c"}, 2, nil},
		{"bad count", map[string]string{"LISTEN_PID": "1000", "LISTEN_FDS": "two"}, 0, nil},
		{"bad pid", map[string]string{"LISTEN_PID": "me", "LISTEN_FDS": "1"}, 1, nil},
		{"bad holder pid", map[string]string{HolderPIDEnv: "", "LISTEN_FDS": "1"}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			passedFDs(t, start, tc.open)
			env := map[string]string{"OTHER": "kept"}
			for k, v := range tc.env {
				env[k] = v
			}
			got, err := passed(environment{
				lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
				unset:  func(k string) { delete(env, k) },
				pid:    pid, ppid: ppid, start: start,
			})
			if tc.want == nil {
				if err == nil {
					t.Fatalf("no error; got %v", got)
				}
			} else if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if fmt.Sprint(env) != "map[OTHER:kept]" {
				t.Fatalf("environment after Passed: %v (the LISTEN_ variables must go, nothing else)", env)
			}
			for _, fd := range got {
				if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
					t.Fatalf("fd %d is not close-on-exec", fd)
				}
			}
		})
	}
}

// TestPassedFromHolder starts this test binary the way the holder starts a daemon (stored descriptors as
// fd 3 on, LISTEN_FDS and LISTEN_FDNAMES, this process's pid in TEMPFS_HOLDER_PID): Passed in the child
// finds them by name, and its own child finds none.
func TestPassedFromHolder(t *testing.T) {
	if os.Getenv("FDSTORE_TEST_CHILD") != "" {
		passedChild()
		return
	}
	var files []*os.File
	for _, content := range []string{"fuse bytes", "record bytes"} {
		f, err := os.CreateTemp(t.TempDir(), "passed")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprint(f, content)
		files = append(files, f)
	}
	for _, tc := range []struct {
		holder, want string
	}{
		{strconv.Itoa(os.Getpid()), "fuse=fuse bytes record=record bytes grandchild=LISTEN_FDS=,LISTEN_FDNAMES=," + HolderPIDEnv + "="},
		{strconv.Itoa(os.Getpid() + 1), "map[]"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPassedFromHolder$")
		cmd.Env = append(os.Environ(), "FDSTORE_TEST_CHILD=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=fuse:record",
			HolderPIDEnv+"="+tc.holder)
		cmd.ExtraFiles = files
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); got != tc.want {
			t.Fatalf("holder pid %s: child said %q, want %q", tc.holder, got, tc.want)
		}
	}
}

func passedChild() {
	fds, err := Passed()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(0)
	}
	if os.Getenv("FDSTORE_TEST_CHILD") == "2" {
		fmt.Printf("LISTEN_FDS=%s,LISTEN_FDNAMES=%s,%s=%s\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"),
			HolderPIDEnv, os.Getenv(HolderPIDEnv))
		os.Exit(0)
	}
	if len(fds) == 0 {
		fmt.Println(fds)
		os.Exit(0)
	}
	var parts []string
	for _, name := range []string{"fuse", "record"} {
		buf := make([]byte, 64)
		n, _ := unix.Pread(fds[name], buf, 0)
		parts = append(parts, name+"="+string(buf[:n]))
	}
	// A process this one starts inherits none of the variables.
	cmd := exec.Command(os.Args[0], "-test.run=^TestPassedFromHolder$")
	cmd.Env = append(os.Environ(), "FDSTORE_TEST_CHILD=2")
	out, _ := cmd.CombinedOutput()
	parts = append(parts, "grandchild="+strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]))
	fmt.Println(strings.Join(parts, " "))
	os.Exit(0)
}

// BenchmarkStoreAdd is the cost of storing one descriptor with a receiver reading as fast as it can (as
// the holder does): the sender waits whenever the receiver's queue is full (net.unix.max_dgram_qlen).
func BenchmarkStoreAdd(b *testing.B) {
	l, err := Listen("")
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(l.Addr(), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	fd, err := unix.MemfdCreate("bench", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	done := make(chan int)
	go func() {
		n := 0
		for n < b.N {
			m, err := l.Receive()
			if errors.Is(err, ErrNoMessage) {
				_, _ = unix.Poll([]unix.PollFd{{Fd: int32(l.FD()), Events: unix.POLLIN}}, -1)
				continue
			}
			if err != nil {
				break
			}
			m.CloseFDs()
			n++
		}
		done <- n
	}()
	b.ResetTimer()
	for range b.N {
		if err := s.Add("file", fd); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-done; n != b.N {
		b.Fatalf("received %d of %d", n, b.N)
	}
	l.Close()
}
