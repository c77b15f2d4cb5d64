package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// toLoad is the mixed workload that the take-over and crash tests run on a mount while its daemon changes
// hands, each part a separate process (takeover_load_test.go): fsx on files that roll over, fsstress against
// a model, a template file held open, a directory half read, a stat loop, and with --owner a session's
// writer; beside them, plain files of every size, an untouched file and a handle of the test's own.
type toLoad struct {
	m       *mount
	maxSize int
	what    string // "take-overs", "crashes": for the messages

	fsx, fsstress, tmpl, sess, rd, probe *toProc // sess nil without a session
	procs                                []*toProc
	tmplPath, sessDir                    string

	untouched   string
	plainBefore map[string]string
	heldData    []byte
	held        *os.File
	statsBefore map[string]any
}

// toStartLoad makes the files and starts the workload on m; session adds a writer in a session of its own
// (for --owner session). It returns once every part runs.
func toStartLoad(t *testing.T, m *mount, maxSize int, what string, session bool) *toLoad {
	t.Helper()
	l := &toLoad{m: m, maxSize: maxSize, what: what}
	dirs := []string{"plain", "fsx", "fsstress", "tmpl", "list"}
	if session {
		dirs = append(dirs, "sess")
	}
	for _, d := range dirs {
		if err := os.Mkdir(m.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	toMakePlain(t, m.Path("plain"), maxSize)
	for i := range 500 {
		if err := os.WriteFile(m.Path("list", fmt.Sprintf("e%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Never read nor listed, so that its atime must stay as set.
	if err := os.WriteFile(m.Path("untouched"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(m.Path("untouched"), time.Unix(1234567890, 123456789), time.Unix(1134567890, 987654321)); err != nil {
		t.Fatal(err)
	}
	l.untouched = toStatLine(t, m.Path("untouched"))
	if err := os.WriteFile(m.Path("probe"), []byte("probe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(m.Path("probe"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	// A handle of the test's own, held throughout.
	l.heldData = make([]byte, maxSize+4096)
	toFill(l.heldData, 77)
	if err := os.WriteFile(m.Path("held"), l.heldData, 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(m.Path("held"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.held = held
	t.Cleanup(func() { held.Close() })

	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	l.fsx = toStart(t, "fsx", nil, "fsx", m.Path("fsx"), strconv.Itoa(4*maxSize), strconv.FormatUint(seed, 10))
	l.fsstress = toStart(t, "fsstress", nil, "fsstress", m.Path("fsstress"), strconv.FormatUint(seed+1, 10))
	l.tmpl = toStart(t, "template holder", nil, "template", m.Path("tmpl", "holdXXXXXX"), strconv.Itoa(2*maxSize/4096))
	if session {
		l.sess = toStart(t, "session writer", &syscall.SysProcAttr{Setsid: true}, "session", m.Path("sess"))
	}
	l.rd = toStart(t, "readdir", nil, "readdir", m.Path("list"), "500")
	l.probe = toStart(t, "stat loop", nil, "statloop", m.Path("probe"))
	l.procs = []*toProc{l.fsx, l.fsstress, l.tmpl, l.rd, l.probe}
	if l.sess != nil {
		l.procs = append(l.procs, l.sess)
	}
	l.fsx.await(t, "ready")
	l.fsstress.await(t, "ready")
	l.tmplPath = strings.TrimPrefix(l.tmpl.await(t, "ready "), "ready ")
	if l.sess != nil {
		l.sessDir = strings.TrimPrefix(l.sess.await(t, "ready "), "ready ")
	}
	listed0 := l.rd.await(t, "ready ")
	l.probe.await(t, "ready")
	t.Logf("template file %s, session directory %q, directory handle %s", l.tmplPath, l.sessDir, listed0)

	l.plainBefore = toSnapshot(t, m.Path("plain"))
	if again := toSnapshot(t, m.Path("plain")); len(toSnapshotDiff(l.plainBefore, again)) > 0 {
		t.Fatalf("the plain files change by being looked at: %q", toSnapshotDiff(l.plainBefore, again))
	}
	l.statsBefore = daemonStats(t, m.Dir)
	// Let the load run on the first daemon (a duration of load, not a synchronization).
	time.Sleep(500 * time.Millisecond)
	return l
}

// failed tells whether a part of the workload saw an operation fail.
func (l *toLoad) failed() bool {
	for _, p := range l.procs {
		if len(p.errors()) > 0 {
			return true
		}
	}
	return false
}

// step has the half-read directory read one more batch: each change of daemon finds it in another place.
func (l *toLoad) step(t *testing.T) {
	l.rd.send(t, "step")
	l.rd.await(t, "listed ")
}

// stop stops the workload and collects what each part saw; it fails the test now if one saw a failure. It
// returns the stat loop's gaps line.
func (l *toLoad) stop(t *testing.T, changes int) (gapLine string) {
	t.Helper()
	ask := func(p *toProc, cmd, prefix string) string {
		p.send(t, cmd)
		line, _ := p.awaitOr(t, prefix)
		return line
	}
	gapLine = ask(l.probe, "stop", "gaps")
	probeSummary, _ := l.probe.awaitOr(t, "ok")
	fsxSummary := ask(l.fsx, "stop", "ok")
	fsstressSummary := ask(l.fsstress, "stop", "ok")
	rdSummary := ask(l.rd, "finish", "ok")
	tmplSummary := ask(l.tmpl, "stop", "verified")
	sessSummary := "none"
	if l.sess != nil {
		sessSummary = ask(l.sess, "check", "ok")
	}
	for _, p := range []*toProc{l.probe, l.fsx, l.fsstress, l.rd} {
		p.exit(t)
	}
	t.Logf("%d %s; fsx: %s; fsstress: %s; readdir: %s; template: %s; session: %s; stat loop: %s",
		changes, l.what, fsxSummary, fsstressSummary, rdSummary, tmplSummary, sessSummary, probeSummary)
	for _, p := range l.procs {
		p.report(t)
	}
	if t.Failed() {
		t.FailNow()
	}
	if strings.HasSuffix(fsxSummary, " disk=0") {
		t.Errorf("fsx: no round's file was on disk at its end (%s): the file never rolled over", fsxSummary)
	}
	return gapLine
}

// checkKept checks what must be as it was: the plain files, the untouched file's lstat, the bytes behind the
// test's handle, which still writes.
func (l *toLoad) checkKept(t *testing.T) {
	t.Helper()
	m := l.m
	if diffs := toSnapshotDiff(l.plainBefore, toSnapshot(t, m.Path("plain"))); len(diffs) > 0 {
		t.Errorf("the plain files changed across the %s:\n%s", l.what, strings.Join(diffs, "\n"))
	}
	if after := toStatLine(t, m.Path("untouched")); after != l.untouched {
		t.Errorf("an untouched file's lstat changed across the %s:\n  before %s\n  after  %s", l.what, l.untouched, after)
	}
	got := make([]byte, len(l.heldData))
	if n, err := l.held.ReadAt(got, 0); err != nil || n != len(got) || firstDiff(got, l.heldData) >= 0 {
		t.Errorf("read through the handle held across the %s: %d bytes, %v, differs at %d", l.what, n, err, firstDiff(got, l.heldData))
	}
	if _, err := l.held.WriteAt([]byte("after"), 10); err != nil {
		t.Errorf("write through the handle held across the %s: %v", l.what, err)
	}
}

// sessionEnds kills the session's writer: its files must go with it.
func (l *toLoad) sessionEnds(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-l.sess.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-l.sess.done
	tlWaitGone(t, l.m.Path("sess"), filepath.Base(l.sessDir), "after its session was killed")
	if st := daemonStats(t, l.m.Dir); toStat(st, "owners_gone") < 1 || toStat(st, "removed.max_age") != 0 {
		t.Errorf("stats after the session went: owners_gone %v (want 1 or more), removed.max_age %v (want 0)",
			st["owners_gone"], toStat(st, "removed.max_age"))
	}
}

// closeHandles closes the template holder's handle and the test's: the template file goes, and no handle is
// left open; then the counters must agree with a walk of the tree. It returns the stats.
func (l *toLoad) closeHandles(t *testing.T) map[string]any {
	t.Helper()
	m := l.m
	eventually(t, tlGoneTimeout, "open handles reach 2 (the template's and the test's)", func() bool {
		return toStat(daemonStats(t, m.Dir), "open_handles") == 2
	})
	l.tmpl.send(t, "close")
	l.tmpl.await(t, "closed")
	l.tmpl.exit(t)
	tlWaitGone(t, filepath.Dir(l.tmplPath), filepath.Base(l.tmplPath), "after its last close")
	if err := l.held.Close(); err != nil {
		t.Errorf("close of the held handle: %v", err)
	}
	eventually(t, tlGoneTimeout, "open handles reach 0", func() bool {
		return toStat(daemonStats(t, m.Dir), "open_handles") == 0
	})
	files, dirs, others := toWalkCounts(t, m.Dir)
	st := daemonStats(t, m.Dir)
	if toStat(st, "files") != float64(files) || toStat(st, "dirs") != float64(dirs) || toStat(st, "others") != float64(others) {
		t.Errorf("stats count files %v, dirs %v, others %v; a walk finds %d, %d, %d",
			st["files"], st["dirs"], st["others"], files, dirs, others)
	}
	return st
}

// empty removes everything from the mount and waits until its counters are zero and, as held says (a
// description of descriptors still held, "" for none), no backing file is kept; then the store must hold
// nothing but its lock.
func (l *toLoad) empty(t *testing.T, store string, held func() string) {
	t.Helper()
	m := l.m
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(m.Path(e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	zero := []string{"files", "dirs", "others", "disk_files", "disk_bytes", "memory_files", "ram_bytes", "arena_files", "open_handles"}
	left := func() string {
		st := daemonStats(t, m.Dir)
		var nonzero []string
		for _, k := range zero {
			if v := toStat(st, k); v != 0 {
				nonzero = append(nonzero, fmt.Sprintf("%s=%v", k, v))
			}
		}
		if h := held(); h != "" {
			nonzero = append(nonzero, h)
		}
		return strings.Join(nonzero, " ")
	}
	deadline := time.Now().Add(tlGoneTimeout)
	for left() != "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := left(); s != "" {
		t.Errorf("the emptied mount is not empty: %s (a walk finds %q); the log:\n%s", s, listDir(t, m.Dir), m.Log())
	}
	if entries, err := os.ReadDir(store); err != nil || len(entries) > 1 || len(entries) == 1 && entries[0].Name() != ".lock" {
		t.Errorf("the store of the emptied mount holds %v (%v)", entries, err)
	}
}
