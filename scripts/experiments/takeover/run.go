package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitLimit bounds every wait for a server's event or a client's result.
const waitLimit = 10 * time.Second

// blockedProbe is how long a client must stay unanswered to be reported as blocked. It is a measurement,
// not a synchronization: a client reported blocked is checked again later for its final outcome.
const blockedProbe = time.Second

// summary holds the findings; the test checks them.
type summary struct {
	Kernel                 string            `json:"kernel"`
	InitOffersHasResend    bool              `json:"init_offers_has_resend"`
	ServedWithoutInit      bool              `json:"served_without_init"`
	CatAfterHandover       string            `json:"cat_after_handover"`
	BlockedAfterHandover   map[string]bool   `json:"blocked_after_handover"`
	AnswerHeldWrite        string            `json:"answer_held_write"`
	AnswerHeldClient       string            `json:"answer_held_client"`
	ResendWrite            string            `json:"resend_write"`
	OwnInFlightResent      bool              `json:"own_in_flight_resent"`
	LateReplyWrite         string            `json:"late_reply_write"`
	Resent                 []resentReq       `json:"resent"`
	AfterResend            map[string]string `json:"after_resend"`
	MountedAfterKill9      bool              `json:"mounted_after_kill9"`
	QueuedWhileHolderHolds bool              `json:"queued_while_holder_holds"`
	AfterCrashResend       map[string]string `json:"after_crash_resend"`
	CrashResent            []resentReq       `json:"crash_resent"`
	LastCloseInFlight      string            `json:"last_close_in_flight"`
	LastCloseNew           string            `json:"last_close_new"`
	GoFuseBefore           string            `json:"gofuse_before"`
	GoFuseTakeover         string            `json:"gofuse_takeover"`
	GoFuseAfter            string            `json:"gofuse_after"`
	GoFuseSecondServed     bool              `json:"gofuse_second_served"`
	ChainHandovers         int               `json:"chain_handovers"`
	ChainPausesNs          []int64           `json:"chain_pauses_ns"`
	ChainClient            string            `json:"chain_client"`
	ChainParked            int               `json:"chain_parked"`
	ChainResentServed      int               `json:"chain_resent_served"`
	CrashLoop              map[string]string `json:"crash_loop,omitempty"`
	ChainMlock             []mlockFigures    `json:"chain_mlock,omitempty"`
}

// mlockFigures is what one outgoing server's mlockall took (part e with -mlock).
type mlockFigures struct {
	Ns          int64 `json:"ns"`
	RSSBeforeKB int64 `json:"rss_before_kb"`
	RSSAfterKB  int64 `json:"rss_after_kb"`
	LckBeforeKB int64 `json:"lck_before_kb"`
	LckAfterKB  int64 `json:"lck_after_kb"`
}

type resentReq struct {
	Op       string `json:"op"`
	Name     string `json:"name"`
	Original string `json:"original"`
	Resent   string `json:"resent"`
	Srv      string `json:"srv"`
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	ctl    int
	events chan event
	fds    chan recvd
	exited chan struct{}
	all    []event // every event, under driver.mu
}

type recvd struct {
	st  json.RawMessage
	fds []int
}

type driver struct {
	self, mnt, mnt2, mnt3 string
	out                   *bufio.Writer
	mu                    sync.Mutex
	procs                 []*proc
	held                  map[uint64]string // unique → name, for the resent table
	mlock                 bool              // part (e): outgoing servers mlockall before freezing
}

func (d *driver) logf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
	d.out.Flush()
}

func runMain(args []string) error {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	dir := fl.String("dir", "", "scratch directory (default: a new one under $TMPDIR)")
	asJSON := fl.Bool("json", false, "print the summary as JSON too")
	chainOnly := fl.Int("chain-only", 0, "run only part (e), with this many hand-overs")
	crashOnly := fl.Int("crash-only", 0, "run only part (f), with this many kills per buffer kind")
	mlock := fl.Bool("mlock", false, "in part (e), each outgoing server mlockalls before it freezes")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		var err error
		if *dir, err = os.MkdirTemp("", "takeover-exp."); err != nil {
			return err
		}
		defer os.RemoveAll(*dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	d := &driver{self: self, mnt: filepath.Join(*dir, "mnt"), mnt2: filepath.Join(*dir, "mnt2"),
		mnt3: filepath.Join(*dir, "mnt3"), out: bufio.NewWriter(os.Stdout), held: map[uint64]string{}}
	for _, m := range []string{d.mnt, d.mnt2, d.mnt3} {
		if err := os.MkdirAll(m, 0o755); err != nil {
			return err
		}
	}
	defer d.cleanup()
	var sum *summary
	d.mlock = *mlock
	if *chainOnly > 0 {
		sum = &summary{}
		err = d.chain(sum, *chainOnly)
	} else if *crashOnly > 0 {
		sum = &summary{}
		err = d.crashLoop(sum, *crashOnly)
	} else {
		sum, err = d.run()
	}
	d.logf("\nsummary:")
	d.printSummary(sum)
	if *asJSON {
		b, _ := json.Marshal(sum)
		d.logf("JSON %s", b)
	}
	return err
}

func (d *driver) printSummary(s *summary) {
	d.logf("  kernel %s; INIT offers HAS_RESEND: %v", s.Kernel, s.InitOffersHasResend)
	d.logf("  (a) second process served the connection without INIT: %v (cat after hand-over: %s)", s.ServedWithoutInit, s.CatAfterHandover)
	d.logf("  (a) requests the first server read and did not answer, still blocked %s after it exited: %v", blockedProbe, s.BlockedAfterHandover)
	d.logf("  (a) successor answers a held CREATE by its original unique id: write %s, client %s", s.AnswerHeldWrite, s.AnswerHeldClient)
	d.logf("  (b) FUSE_NOTIFY_RESEND write: %s", s.ResendWrite)
	for _, r := range s.Resent {
		d.logf("  (b) re-delivered to %s: %s %s original %s as %s", r.Srv, r.Op, r.Name, r.Original, r.Resent)
	}
	d.logf("  (b) client results after resend: %v", s.AfterResend)
	d.logf("  (b) a request the live resending server itself held (l2) was re-delivered too: %v; its reply by the first unique id: %s",
		s.OwnInFlightResent, s.LateReplyWrite)
	d.logf("  (c) mount still listed after kill -9 while a holder keeps the fd: %v; a new request queues (blocked): %v", s.MountedAfterKill9, s.QueuedWhileHolderHolds)
	for _, r := range s.CrashResent {
		d.logf("  (c) re-delivered to %s: %s %s original %s as %s", r.Srv, r.Op, r.Name, r.Original, r.Resent)
	}
	d.logf("  (c) client results after the restarted server's resend: %v", s.AfterCrashResend)
	d.logf("  (c) last descriptor closed: in-flight request got %s, a new request got %s", s.LastCloseInFlight, s.LastCloseNew)
	d.logf("  (d) go-fuse Server: cat before %s; successor: %s; cat after %s; served by the successor: %v",
		s.GoFuseBefore, s.GoFuseTakeover, s.GoFuseAfter, s.GoFuseSecondServed)
	if len(s.ChainPausesNs) > 0 {
		p := slices.Clone(s.ChainPausesNs)
		slices.Sort(p)
		d.logf("  (e) %d planned go-fuse hand-overs under a reading loop: pause median %s, worst %s; client: %s; requests parked by a frozen server %d, re-delivered ones served %d",
			s.ChainHandovers, time.Duration(p[len(p)/2]), time.Duration(p[len(p)-1]), s.ChainClient, s.ChainParked, s.ChainResentServed)
	}
	if m := s.ChainMlock; len(m) > 0 {
		ns := make([]int64, len(m))
		var added, rss int64
		for i, f := range m {
			ns[i] = f.Ns
			added += f.RSSAfterKB - f.RSSBeforeKB
			rss += f.RSSAfterKB
		}
		slices.Sort(ns)
		d.logf("  (e) mlockall by %d outgoing servers: took median %s, worst %s; RSS added mean %d KiB (to %d KiB); VmLck after %d KiB (first)",
			len(m), time.Duration(ns[len(ns)/2]), time.Duration(ns[len(ns)-1]), added/int64(len(m)), rss/int64(len(m)), m[0].LckAfterKB)
	}
	for _, k := range []string{"pooled buffer", "fresh buffers"} {
		if r, ok := s.CrashLoop[k]; ok {
			d.logf("  (f) kill -9 of a raw server reading into %s, successor resends: client %s", k, r)
		}
	}
}

// start runs a server process; peer, if not -1, becomes its fd 4.
func (d *driver) start(name string, peer int, args ...string) (*proc, error) {
	return d.startRole("server", name, peer, args...)
}

func (d *driver) startRole(role, name string, peer int, args ...string) (*proc, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.self, append([]string{role, "-name", name}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(pair[1]), "ctl")}
	if peer >= 0 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(peer), "peer"))
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	unix.Close(pair[1])
	p := &proc{name: name, cmd: cmd, ctl: pair[0], events: make(chan event, 256), fds: make(chan recvd, 4), exited: make(chan struct{})}
	d.procs = append(d.procs, p)
	go func() {
		for {
			var raw json.RawMessage
			fds, err := recvMsg(p.ctl, &raw)
			if err != nil {
				close(p.events)
				return
			}
			if len(fds) > 0 {
				d.logf("[driver] received %d descriptor(s) and a state record from %s", len(fds), name)
				p.fds <- recvd{st: raw, fds: fds}
				continue
			}
			var e event
			if json.Unmarshal(raw, &e) == nil {
				d.logf("%s", e)
				d.mu.Lock()
				p.all = append(p.all, e)
				d.mu.Unlock()
				p.events <- e
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		d.logf("[driver] server %s exited: %v", name, err)
		close(p.exited)
	}()
	return p, nil
}

func (d *driver) cmd(p *proc, m ctlMsg) error { return sendMsg(p.ctl, m) }

// waitEv waits for p's first event matching ok; the events before it are dropped (they were logged).
func (d *driver) waitEv(p *proc, ok func(event) bool) (event, error) {
	deadline := time.After(waitLimit)
	for {
		select {
		case e, open := <-p.events:
			if !open {
				return event{}, fmt.Errorf("server %s closed its control socket", p.name)
			}
			if ok(e) {
				return e, nil
			}
		case <-deadline:
			return event{}, fmt.Errorf("timeout waiting for an event of %s", p.name)
		}
	}
}

// events returns every event p reported so far: a ping answered means all earlier events have arrived.
func (d *driver) events(p *proc) ([]event, error) {
	if err := d.cmd(p, ctlMsg{Cmd: "ping"}); err != nil {
		return nil, err
	}
	if _, err := d.waitEv(p, isEv("pong")); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]event(nil), p.all...), nil
}

type client struct {
	label string
	done  chan string
}

func (d *driver) client(op, name string, arg ...string) *client {
	c := &client{label: op + " " + name, done: make(chan string, 1)}
	cmd := exec.Command(d.self, append([]string{"client", op, filepath.Join(d.mnt, name)}, arg...)...)
	go func() {
		out, err := cmd.Output()
		res := strings.TrimSpace(string(out))
		if err != nil {
			res += " (" + err.Error() + ")"
		}
		d.logf("[client] %s -> %s", c.label, res)
		c.done <- res
	}()
	return c
}

// result waits for the client's outcome, up to the wait limit.
func (c *client) result() string {
	select {
	case r := <-c.done:
		c.done <- r
		return r
	case <-time.After(waitLimit):
		return "still blocked after " + waitLimit.String()
	}
}

func (c *client) blocked() bool {
	select {
	case r := <-c.done:
		c.done <- r
		return false
	case <-time.After(blockedProbe):
		return true
	}
}

func (d *driver) mounted() bool { return mountedAt(d.mnt) }

func mountedAt(dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == dir {
			return true
		}
	}
	return false
}

func (d *driver) cleanup() {
	for _, p := range d.procs {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	for _, m := range []string{d.mnt, d.mnt2, d.mnt3} {
		if mountedAt(m) {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				d.logf("[driver] unmount %s: %v", m, err)
			}
		}
	}
}

func isReq(op, name string) func(event) bool {
	return func(e event) bool { return e.Ev == "req" && e.Op == op && e.Name == name }
}

func isEv(ev string) func(event) bool { return func(e event) bool { return e.Ev == ev } }

func (d *driver) resentTable(evs []event) []resentReq {
	var out []resentReq
	for _, e := range evs {
		if e.Ev == "req" && e.Resent {
			out = append(out, resentReq{Op: e.Op, Name: e.Name, Original: fmt.Sprintf("%#x", e.Unique&^uniqueResend),
				Resent: fmt.Sprintf("%#x", e.Unique), Srv: e.Srv})
		}
	}
	return out
}

func (d *driver) run() (*summary, error) {
	var uts unix.Utsname
	unix.Uname(&uts)
	s := &summary{Kernel: unix.ByteSliceToString(uts.Release[:]), BlockedAfterHandover: map[string]bool{},
		AfterResend: map[string]string{}, AfterCrashResend: map[string]string{}}

	d.logf("== setup: server A mounts %s and serves", d.mnt)
	peer, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return s, err
	}
	a, err := d.start("A", peer[0], "-mount", d.mnt)
	if err != nil {
		return s, err
	}
	unix.Close(peer[0])
	e, err := d.waitEv(a, isEv("init"))
	if err != nil {
		return s, err
	}
	s.InitOffersHasResend = strings.Contains(e.Detail, "HAS_RESEND=true")
	for _, op := range [][]string{{"create-excl", "f0"}, {"write", "f0", "hello"}, {"cat", "f0"}} {
		c := d.client(op[0], op[1], op[2:]...)
		if r := c.result(); !strings.HasPrefix(r, "ok") {
			return s, fmt.Errorf("%s: %s", c.label, r)
		}
	}

	d.logf("\n== (a) A holds requests, then hands the connection to B over SCM_RIGHTS and exits")
	holds := []ctlMsg{
		{Cmd: "hold", Op: "CREATE", Name: "c1", Apply: true},
		{Cmd: "hold", Op: "CREATE", Name: "c2", Apply: true, Journal: true},
		{Cmd: "hold", Op: "CREATE", Name: "c3", Apply: true},
		{Cmd: "hold", Op: "LOOKUP", Name: "l1"},
	}
	for _, h := range holds {
		if err := d.cmd(a, h); err != nil {
			return s, err
		}
		if _, err := d.waitEv(a, isEv("ack")); err != nil {
			return s, err
		}
	}
	clients := map[string]*client{
		"c1": d.client("create-excl", "d1/c1"), "c2": d.client("create-excl", "d2/c2"),
		"c3": d.client("create-excl", "d3/c3"), "l1": d.client("stat", "d4/l1"),
	}
	for i := 0; i < len(holds); i++ {
		if _, err := d.waitEv(a, isEv("held")); err != nil {
			return s, err
		}
	}
	b, err := d.start("B", peer[1], "-recv", "peer")
	if err != nil {
		return s, err
	}
	unix.Close(peer[1])
	if err := d.cmd(a, ctlMsg{Cmd: "handover", Via: "peer", Exit: true}); err != nil {
		return s, err
	}
	if err := waitClosed(a.exited); err != nil {
		return s, err
	}
	if _, err := d.waitEv(b, isEv("received")); err != nil {
		return s, err
	}
	s.CatAfterHandover = d.client("cat", "f0").result()
	_, err = d.waitEv(b, isReq("LOOKUP", "f0"))
	s.ServedWithoutInit = err == nil && strings.HasPrefix(s.CatAfterHandover, "ok")
	for _, n := range []string{"c1", "c2", "c3", "l1"} {
		s.BlockedAfterHandover[n] = clients[n].blocked()
	}

	d.logf("\n== (a) B answers A's held CREATE c3 with its original unique id (no resend)")
	if err := d.cmd(b, ctlMsg{Cmd: "answer-held", Name: "c3"}); err != nil {
		return s, err
	}
	e, err = d.waitEv(b, isEv("answered-held"))
	if err != nil {
		return s, err
	}
	s.AnswerHeldWrite = e.Errno
	s.AnswerHeldClient = clients["c3"].result()

	d.logf("\n== (b) B holds a LOOKUP l2 of its own, then sends FUSE_NOTIFY_RESEND; B is naive for c1 (no journal), journaled for c2")
	if err := d.cmd(b, ctlMsg{Cmd: "hold", Op: "LOOKUP", Name: "l2"}); err != nil {
		return s, err
	}
	if _, err := d.waitEv(b, isEv("ack")); err != nil {
		return s, err
	}
	clients["l2"] = d.client("stat", "l2")
	e, err = d.waitEv(b, isEv("held"))
	if err != nil {
		return s, err
	}
	l2Unique := e.Unique
	if err := d.cmd(b, ctlMsg{Cmd: "resend"}); err != nil {
		return s, err
	}
	e, err = d.waitEv(b, isEv("resend-notify"))
	if err != nil {
		return s, err
	}
	s.ResendWrite = e.Errno
	for _, n := range []string{"c1", "c2", "l1", "l2"} {
		s.AfterResend[n] = clients[n].result()
	}
	if err := d.cmd(b, ctlMsg{Cmd: "late-reply", Unique: l2Unique}); err != nil {
		return s, err
	}
	if e, err = d.waitEv(b, isEv("late-reply")); err != nil {
		return s, err
	}
	s.LateReplyWrite = e.Errno
	evs, err := d.events(b)
	if err != nil {
		return s, err
	}
	s.Resent = d.resentTable(evs)
	for _, r := range s.Resent {
		if r.Name == "l2" {
			s.OwnInFlightResent = true
		}
	}

	d.logf("\n== (c) B hands a duplicate of the fd to the driver (the holder), holds CREATE c4, and is killed with SIGKILL")
	if err := d.cmd(b, ctlMsg{Cmd: "handover", Via: "ctl"}); err != nil {
		return s, err
	}
	var rec recvd
	select {
	case rec = <-b.fds:
	case <-time.After(waitLimit):
		return s, errors.New("no descriptor from B")
	}
	holderFd := rec.fds[0]
	if err := d.cmd(b, ctlMsg{Cmd: "hold", Op: "CREATE", Name: "c4", Apply: true}); err != nil {
		return s, err
	}
	c4 := d.client("create-excl", "d1/c4")
	if _, err := d.waitEv(b, isEv("held")); err != nil {
		return s, err
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	if err := waitClosed(b.exited); err != nil {
		return s, err
	}
	s.MountedAfterKill9 = d.mounted()
	queued := d.client("cat", "f0")
	s.QueuedWhileHolderHolds = queued.blocked()

	d.logf("\n== (c) C receives the holder's descriptor and state record, and sends FUSE_NOTIFY_RESEND before reading")
	// C resends before it reads anything: a resend while it serves would re-queue its own requests too.
	c, err := d.start("C", -1, "-recv", "ctl", "-resend-first")
	if err != nil {
		return s, err
	}
	if err := unix.Sendmsg(c.ctl, rec.st, unix.UnixRights(holderFd), nil, 0); err != nil {
		return s, err
	}
	if _, err := d.waitEv(c, isEv("received")); err != nil {
		return s, err
	}
	s.AfterCrashResend["c4"] = c4.result()
	s.AfterCrashResend["cat f0 (queued)"] = queued.result()
	if evs, err = d.events(c); err != nil {
		return s, err
	}
	s.CrashResent = d.resentTable(evs)

	d.logf("\n== (c) the last descriptor closes: the holder closes its copy, C holds LOOKUP l9 and is killed")
	if err := unix.Close(holderFd); err != nil {
		return s, err
	}
	if err := d.cmd(c, ctlMsg{Cmd: "hold", Op: "LOOKUP", Name: "l9"}); err != nil {
		return s, err
	}
	l9 := d.client("stat", "l9")
	if _, err := d.waitEv(c, isEv("held")); err != nil {
		return s, err
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	if err := waitClosed(c.exited); err != nil {
		return s, err
	}
	s.LastCloseInFlight = l9.result()
	s.LastCloseNew = d.client("stat", "f0").result()
	if err := d.goFuse(s); err != nil {
		return s, err
	}
	return s, d.chain(s, chainLength)
}

// chainLength is how many planned hand-overs part (e) makes.
const chainLength = 10

// chain hands a go-fuse mount over n times in a row, each server freezing its gate, handing over and
// exiting, each successor waiting for that exit, resending and serving, while a client reads a file in a
// loop (part e).
func (d *driver) chain(s *summary, n int) error {
	d.logf("\n== (e) %d planned go-fuse hand-overs of %s while a client reads /f0 in a loop", n, d.mnt3)
	role := []string{"-quiet"}
	if d.mlock {
		role = append(role, "-mlock")
	}
	prev, err := d.startRole("gofuse", "E0", -1, append(role, "-mount", d.mnt3)...)
	if err != nil {
		return err
	}
	if _, err := d.waitEv(prev, isEv("serving")); err != nil {
		return err
	}
	loop := exec.Command(d.self, "client", "loop", filepath.Join(d.mnt3, "f0"))
	stdin, err := loop.StdinPipe()
	if err != nil {
		return err
	}
	var out strings.Builder
	loop.Stdout = &out
	if err := loop.Start(); err != nil {
		return err
	}
	defer func() {
		if loop.ProcessState == nil {
			loop.Process.Kill()
			loop.Wait()
		}
	}()
	for k := 1; k <= n; k++ {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		next, err := d.startRole("gofuse", fmt.Sprintf("E%d", k), pair[1], role...)
		unix.Close(pair[1])
		if err != nil {
			unix.Close(pair[0])
			return err
		}
		err = sendMsg(prev.ctl, ctlMsg{Cmd: "handover", Via: "peer", Exit: true}, pair[0])
		unix.Close(pair[0])
		if err != nil {
			return err
		}
		if err := waitClosed(prev.exited); err != nil {
			return err
		}
		d.addCounts(s, prev)
		e, err := d.waitEv(next, func(e event) bool { return e.Ev == "serving" || e.Ev == "refused" })
		if err != nil {
			return err
		}
		if e.Ev != "serving" {
			return fmt.Errorf("hand-over %d: %s", k, e.Detail)
		}
		s.ChainHandovers++
		s.ChainPausesNs = append(s.ChainPausesNs, e.Pause)
		prev = next
	}
	stdin.Close()
	if err := loop.Wait(); err != nil {
		return fmt.Errorf("client loop: %v", err)
	}
	if _, err := d.events(prev); err != nil {
		return err
	}
	d.addCounts(s, prev)
	s.ChainClient = strings.TrimSpace(out.String())
	d.logf("[client] loop -> %s", s.ChainClient)
	return nil
}

// goFuse hands a connection served by go-fuse's fuse.Server to a second go-fuse Server (part d).
func (d *driver) goFuse(s *summary) error {
	d.logf("\n== (d) go-fuse: G1 mounts %s with fuse.NewServer, hands over to G2, which replays INIT into its own NewServer", d.mnt2)
	peer, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	g1, err := d.startRole("gofuse", "G1", peer[0], "-mount", d.mnt2)
	if err != nil {
		return err
	}
	unix.Close(peer[0])
	if _, err := d.waitEv(g1, isEv("serving")); err != nil {
		return err
	}
	cat := func() string {
		c := &client{label: "cat mnt2/f0", done: make(chan string, 1)}
		go func() {
			out, _ := exec.Command(d.self, "client", "cat", filepath.Join(d.mnt2, "f0")).Output()
			r := strings.TrimSpace(string(out))
			d.logf("[client] %s -> %s", c.label, r)
			c.done <- r
		}()
		return c.result()
	}
	s.GoFuseBefore = cat()
	g2, err := d.startRole("gofuse", "G2", peer[1])
	if err != nil {
		return err
	}
	unix.Close(peer[1])
	if err := d.cmd(g1, ctlMsg{Cmd: "handover", Via: "peer", Exit: true}); err != nil {
		return err
	}
	if err := waitClosed(g1.exited); err != nil {
		return err
	}
	e, err := d.waitEv(g2, func(e event) bool { return e.Ev == "serving" || e.Ev == "refused" })
	if err != nil {
		return err
	}
	s.GoFuseTakeover = e.Ev + ": " + e.Detail
	s.GoFuseAfter = cat()
	evs, err := d.events(g2)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if e.Ev == "req" && e.Op == "READ" {
			s.GoFuseSecondServed = true
		}
	}
	return nil
}

// crashLoop kills a raw server with SIGKILL n times while a client reads a file in a loop; the driver
// holds a duplicate of the descriptor, and each successor resends before reading (part f). It runs once
// with servers that read into one buffer, faulted in long before, and once with servers that read each
// request into a newly mapped buffer, to tell whether a reader killed while the kernel copies a request
// to it fails that request.
func (d *driver) crashLoop(s *summary, n int) error {
	s.CrashLoop = map[string]string{}
	for _, kind := range []string{"pooled buffer", "fresh buffers"} {
		var extra []string
		if kind == "fresh buffers" {
			extra = []string{"-fresh"}
		}
		d.logf("\n== (f) %d kills of a raw server reading into %s, under a reading loop on %s", n, kind, d.mnt3)
		srv, err := d.start("K0", -1, append([]string{"-quiet", "-seed", "-mount", d.mnt3}, extra...)...)
		if err != nil {
			return err
		}
		if _, err := d.waitEv(srv, isEv("init")); err != nil {
			return err
		}
		if err := d.cmd(srv, ctlMsg{Cmd: "handover", Via: "ctl"}); err != nil {
			return err
		}
		var rec recvd
		select {
		case rec = <-srv.fds:
		case <-time.After(waitLimit):
			return errors.New("no descriptor from K0")
		}
		loop := exec.Command(d.self, "client", "loop", filepath.Join(d.mnt3, "f0"))
		stdin, err := loop.StdinPipe()
		if err != nil {
			return err
		}
		var out strings.Builder
		loop.Stdout = &out
		if err := loop.Start(); err != nil {
			return err
		}
		for k := 1; k <= n; k++ {
			// Let the loop run into the server for a moment: the kill is the stimulus, not a
			// synchronization.
			time.Sleep(time.Duration(5+k%20) * time.Millisecond)
			srv.cmd.Process.Signal(syscall.SIGKILL)
			if err := waitClosed(srv.exited); err != nil {
				return err
			}
			if srv, err = d.start(fmt.Sprintf("K%d", k), -1, append([]string{"-quiet", "-recv", "ctl", "-resend-first"}, extra...)...); err != nil {
				return err
			}
			if err := unix.Sendmsg(srv.ctl, rec.st, unix.UnixRights(rec.fds[0]), nil, 0); err != nil {
				return err
			}
			if _, err := d.waitEv(srv, isEv("received")); err != nil {
				return err
			}
		}
		stdin.Close()
		if err := loop.Wait(); err != nil {
			return fmt.Errorf("client loop: %v", err)
		}
		s.CrashLoop[kind] = strings.TrimSpace(out.String())
		d.logf("[client] loop -> %s", s.CrashLoop[kind])
		srv.cmd.Process.Signal(syscall.SIGKILL)
		waitClosed(srv.exited)
		unix.Close(rec.fds[0])
		if err := unix.Unmount(d.mnt3, unix.MNT_DETACH); err != nil {
			return err
		}
	}
	return nil
}

// addCounts adds the parked and re-delivered counts p reported last (at its hand-over, or to a ping).
func (d *driver) addCounts(s *summary, p *proc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(p.all) - 1; i >= 0; i-- {
		e := p.all[i]
		if e.Ev != "handed-over" && e.Ev != "pong" {
			continue
		}
		var parked, resent int
		if i := strings.Index(e.Detail, "parked="); i >= 0 {
			fmt.Sscanf(e.Detail[i:], "parked=%d resent_served=%d", &parked, &resent)
		}
		s.ChainParked += parked
		s.ChainResentServed += resent
		if i := strings.Index(e.Detail, "mlock_ns="); i >= 0 {
			var ns, rss0, rss1, lck0, lck1 int64
			fmt.Sscanf(e.Detail[i:], "mlock_ns=%d rss_kb=%d->%d lck_kb=%d->%d", &ns, &rss0, &rss1, &lck0, &lck1)
			s.ChainMlock = append(s.ChainMlock, mlockFigures{Ns: ns, RSSBeforeKB: rss0, RSSAfterKB: rss1, LckBeforeKB: lck0, LckAfterKB: lck1})
		}
		return
	}
}

func waitClosed(ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-time.After(waitLimit):
		return errors.New("timeout waiting for a process to exit")
	}
}
