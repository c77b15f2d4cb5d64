package main

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenGram opens a unixgram socket at a fresh path and returns it with its path.
func listenGram(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

func readGram(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// TestSystemLog: with the journal's socket, a record goes there in the native protocol with its priority; with
// only a syslog socket, as an RFC 3164 line with the daemon facility; with neither, the caller is told so.
func TestSystemLog(t *testing.T) {
	savedJournal, savedSyslog := journalSocket, syslogSockets
	t.Cleanup(func() { journalSocket, syslogSockets = savedJournal, savedSyslog })
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}

	journal, journalPath := listenGram(t)
	journalSocket, syslogSockets = journalPath, nil
	h, closer, where, ok := systemLogHandler(opts)
	if !ok || where != "the journal" {
		t.Fatalf("journal socket %s not used: %v %q", journalPath, ok, where)
	}
	slog.New(h).With("mountpoint", "/scratch").Error("recovered panic", "panic", "line one\nline two")
	got := readGram(t, journal)
	for _, want := range []string{"PRIORITY=3\n", "SYSLOG_IDENTIFIER=tempfs\n", `MESSAGE=level=ERROR msg="recovered panic" mountpoint=/scratch panic="line one\nline two"` + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("journal datagram %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "time=") {
		t.Errorf("journal datagram %q carries a time of its own", got)
	}
	closer.Close()

	sys, sysPath := listenGram(t)
	journalSocket, syslogSockets = filepath.Join(t.TempDir(), "none"), []string{filepath.Join(t.TempDir(), "none"), sysPath}
	h, closer, where, ok = systemLogHandler(opts)
	if !ok || !strings.Contains(where, sysPath) {
		t.Fatalf("syslog socket %s not used: %v %q", sysPath, ok, where)
	}
	defer closer.Close()
	logger := slog.New(h)
	logger.Debug("not at info level")
	logger.Warn("passthrough did not take effect")
	got = readGram(t, sys)
	// <28>: facility daemon (3) * 8 + priority warning (4).
	if !strings.HasPrefix(got, "<28>") || !strings.Contains(got, "tempfs[") || !strings.Contains(got, `msg="passthrough did not take effect"`) {
		t.Errorf("syslog datagram %q", got)
	}

	journalSocket, syslogSockets = filepath.Join(t.TempDir(), "none"), []string{filepath.Join(t.TempDir(), "none")}
	if _, _, _, ok := systemLogHandler(opts); ok {
		t.Error("a system log was found where there is none")
	}
}

// TestOpenLogFile: the log file is created 0600 and appended to; a symlink is refused (the fallback file sits in
// directories others can write to).
func TestOpenLogFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tempfs.log")
	for range 2 {
		f, err := openLogFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("line\n"); err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if st.Mode().Perm() != 0o600 {
			t.Errorf("log file mode %v, want 0600", st.Mode())
		}
		f.Close()
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if f, err := openLogFile(link); err == nil {
		f.Close()
		t.Error("a log file through a symlink was opened")
	}
}

// TestFallbackLogPerMountCapped: without a system log each mount logs to a file of its own, named after its
// mountpoint, which is rotated to NAME.1 past its cap, so that a mount's logs never hold more than twice it.
func TestFallbackLogPerMountCapped(t *testing.T) {
	dir := t.TempDir()
	a, b := fallbackLogPath(dir, "/tmp/scratch"), fallbackLogPath(dir, "/srv/ci/tmp")
	if a == b || !strings.HasSuffix(a, "-tmp-scratch.log") || filepath.Dir(a) != dir {
		t.Errorf("fallback logs %s and %s: want one per mountpoint in %s", a, b, dir)
	}
	if long := fallbackLogPath(dir, "/"+strings.Repeat("x/", 200)+"end"); len(filepath.Base(long)) > 255 || !strings.HasSuffix(long, "x-end.log") {
		t.Errorf("a long mountpoint gives %q", filepath.Base(long))
	}
	const limit = 1000
	c, err := openCappedFile(a, limit, false)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 99) + "\n"
	for range 35 {
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	cur, err1 := os.Stat(a)
	old, err2 := os.Stat(a + ".1")
	if err1 != nil || err2 != nil || cur.Size() > limit || old.Size() > limit || cur.Size()+old.Size() == 0 {
		t.Fatalf("after 3500 bytes with a cap of %d: %v %v, %v %v", limit, cur, err1, old, err2)
	}
	if cur.Size() != 500 || old.Size() != 1000 {
		t.Errorf("current %d bytes, previous %d; want the last 500 and the 1000 before", cur.Size(), old.Size())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("files in %s: %v; want the log and one older generation", dir, entries)
	}
}
