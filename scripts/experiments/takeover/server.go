package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Lock order: server.mu only (requests are read and answered by one goroutine, commands by another).

// uniqueResend is the bit the kernel sets in a request's unique id when FUSE_NOTIFY_RESEND re-queues it
// (FUSE_UNIQUE_RESEND in include/uapi/linux/fuse.h).
const uniqueResend = uint64(1) << 63

// Opcodes used here (include/uapi/linux/fuse.h); go-fuse keeps its own unexported.
var opNames = map[uint32]string{
	1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 14: "OPEN", 15: "READ", 16: "WRITE", 17: "STATFS",
	18: "RELEASE", 20: "FSYNC", 22: "GETXATTR", 23: "LISTXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR",
	28: "READDIR", 29: "RELEASEDIR", 34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 38: "DESTROY",
	40: "POLL", 42: "BATCH_FORGET", 44: "READDIRPLUS", 52: "STATX",
}

type node struct {
	ID     uint64 `json:"id"`
	Parent uint64 `json:"parent"`
	Mode   uint32 `json:"mode"`
	Data   []byte `json:"data"`
}

// heldReq is a request a server read and did not answer.
type heldReq struct {
	Unique  uint64 `json:"unique"`
	Op      string `json:"op"`
	Name    string `json:"name"`
	Applied bool   `json:"applied"`
	NodeID  uint64 `json:"node_id,omitempty"`
}

// fsState is everything a successor needs: the namespace (names are unique across directories here) and
// the requests left unanswered.
type fsState struct {
	Nodes  map[string]*node `json:"nodes"`
	NextID uint64           `json:"next_id"`
	NextFh uint64           `json:"next_fh"`
	// Journal maps the unique id (without the resend bit) of a CREATE that was applied but not answered
	// to the node it made, so that a re-delivery is answered with that node instead of EEXIST.
	Journal map[uint64]uint64 `json:"journal"`
	Held    []heldReq         `json:"held"`
}

type holdRule struct{ apply, journal bool }

type server struct {
	name string
	fuse int // the /dev/fuse descriptor
	ctl  int

	fresh bool // read into a newly mapped buffer each time
	quiet bool // no req and reply events

	mu    sync.Mutex
	st    fsState
	holds map[string]holdRule // op + "/" + name
}

func serverMain(args []string) error {
	fl := flag.NewFlagSet("server", flag.ContinueOnError)
	name := fl.String("name", "A", "name in events")
	mnt := fl.String("mount", "", "mount a new connection here")
	recv := fl.String("recv", "", "receive the connection and state over: peer (fd 4) or ctl (fd 3)")
	fresh := fl.Bool("fresh", false, "read each request into a newly mapped buffer, whose pages the kernel must fault in")
	seed := fl.Bool("seed", false, "with -mount: start with /f0 holding \"hello\"")
	resendFirst := fl.Bool("resend-first", false, "with -recv: send FUSE_NOTIFY_RESEND before reading")
	quiet := fl.Bool("quiet", false, "do not report each request and reply")
	if err := fl.Parse(args); err != nil {
		return err
	}
	s := &server{name: *name, ctl: 3, holds: map[string]holdRule{}, fresh: *fresh, quiet: *quiet}
	switch {
	case *mnt != "":
		if err := s.mount(*mnt); err != nil {
			return err
		}
		if *seed {
			s.st.Nodes["f0"] = &node{ID: s.st.NextID, Parent: 1, Mode: syscall.S_IFREG | 0o644, Data: []byte("hello")}
			s.st.NextID++
		}
	case *recv != "":
		sock := 3
		if *recv == "peer" {
			sock = 4
		}
		var st fsState
		fds, err := recvMsg(sock, &st)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if len(fds) != 1 {
			return fmt.Errorf("received %d descriptors, want 1", len(fds))
		}
		s.fuse, s.st = fds[0], st
		if *resendFirst {
			h := fuse.OutHeader{Length: 16, Status: -int32(fuse.NOTIFY_RESEND)}
			if _, err := unix.Write(s.fuse, structBytes(&h)); err != nil {
				return fmt.Errorf("resend: %w", err)
			}
		}
		s.emit(event{Ev: "received", Detail: fmt.Sprintf("fd=%d nodes=%d held=%d journal=%d; serving without INIT",
			s.fuse, len(st.Nodes), len(st.Held), len(st.Journal))})
	default:
		return fmt.Errorf("need -mount or -recv")
	}
	go s.commands()
	s.serve()
	return nil
}

func (s *server) emit(e event) {
	e.Srv = s.name
	if err := sendMsg(s.ctl, e); err != nil {
		fmt.Fprintln(os.Stderr, "emit:", err)
	}
}

// mount opens /dev/fuse, mounts it with fd=N and answers INIT.
func (s *server) mount(mnt string) error {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := unix.Mount("takeoverexp", mnt, "fuse.takeoverexp", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	s.fuse = fd
	s.st = fsState{Nodes: map[string]*node{}, NextID: 2, NextFh: 1, Journal: map[uint64]uint64{}}
	// One directory per request held at the same time: a CREATE holds its directory's lock, so a second
	// request in the same directory would wait in the kernel and never reach the server.
	for _, d := range []string{"d1", "d2", "d3", "d4"} {
		s.st.Nodes[d] = &node{ID: s.st.NextID, Parent: 1, Mode: syscall.S_IFDIR | 0o755}
		s.st.NextID++
	}
	buf := make([]byte, 1<<20+4096)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return fmt.Errorf("read INIT: %w", err)
	}
	in := (*fuse.InitIn)(unsafe.Pointer(&buf[0]))
	if n < int(unsafe.Sizeof(fuse.InHeader{})) || in.Opcode != 26 {
		return fmt.Errorf("first request is not INIT")
	}
	out := fuse.InitOut{Major: 7, Minor: in.Minor, MaxReadAhead: in.MaxReadAhead, MaxBackground: 12,
		CongestionThreshold: 9, MaxWrite: 128 << 10, TimeGran: 1}
	// Reply flags 0: in particular the server does not echo CAP_HAS_RESEND, which shows whether the
	// kernel requires it before accepting FUSE_NOTIFY_RESEND.
	werr := s.reply(in.Unique, 0, structBytes(&out))
	s.emit(event{Ev: "init", Unique: in.Unique, Errno: errnoName(werr), Detail: fmt.Sprintf(
		"kernel protocol 7.%d flags=%#x offers HAS_RESEND=%v; replied flags=0", in.Minor, in.Flags64(),
		in.Flags64()&fuse.CAP_HAS_RESEND != 0)})
	return werr
}

func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func (s *server) reply(unique uint64, errno syscall.Errno, body []byte) error {
	h := fuse.OutHeader{Length: uint32(16 + len(body)), Status: -int32(errno), Unique: unique}
	msg := append(append([]byte{}, structBytes(&h)...), body...)
	_, err := unix.Write(s.fuse, msg)
	return err
}

func (s *server) commands() {
	for {
		var m ctlMsg
		if _, err := recvMsg(s.ctl, &m); err != nil {
			fmt.Fprintln(os.Stderr, s.name, "ctl:", err)
			os.Exit(1)
		}
		s.mu.Lock()
		switch m.Cmd {
		case "hold":
			s.holds[m.Op+"/"+m.Name] = holdRule{apply: m.Apply, journal: m.Journal}
			s.emit(event{Ev: "ack", Detail: "hold " + m.Op + " " + m.Name})
		case "handover":
			sock := s.ctl
			if m.Via == "peer" {
				sock = 4
			}
			err := sendMsg(sock, s.st, s.fuse)
			s.emit(event{Ev: "handed-over", Errno: errnoName(err), Detail: "via " + m.Via})
			if m.Exit {
				// The reader goroutine may be blocked in read(2) on the connection; exiting ends it.
				os.Exit(0)
			}
		case "resend":
			// A notification is a reply with unique 0 whose error field carries the positive notify code;
			// go-fuse's NOTIFY_* constants are negated Status values.
			h := fuse.OutHeader{Length: 16, Status: -int32(fuse.NOTIFY_RESEND), Unique: 0}
			_, err := unix.Write(s.fuse, structBytes(&h))
			s.emit(event{Ev: "resend-notify", Errno: errnoName(err)})
		case "answer-held":
			// Answer a predecessor's unanswered CREATE with its original unique id, without any resend.
			for _, h := range append([]heldReq(nil), s.st.Held...) {
				if h.Name != m.Name || !h.Applied {
					continue
				}
				err := s.reply(h.Unique, 0, s.createOut(s.st.Nodes[h.Name]))
				delete(s.st.Journal, h.Unique)
				s.forgetHeld(h.Unique)
				s.emit(event{Ev: "answered-held", Unique: h.Unique, Name: h.Name, Errno: errnoName(err)})
			}
		case "late-reply":
			// A reply to a request by its unique id as first read, after a resend re-queued it.
			err := s.reply(m.Unique, syscall.ENOENT, nil)
			s.emit(event{Ev: "late-reply", Unique: m.Unique, Errno: errnoName(err)})
		case "ping":
			s.emit(event{Ev: "pong"})
		case "exit":
			os.Exit(0)
		}
		s.mu.Unlock()
	}
}

func (s *server) serve() {
	const size = 1<<20 + 4096
	buf := make([]byte, size)
	for {
		if s.fresh {
			var err error
			if buf, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
				s.emit(event{Ev: "read-error", Errno: errnoName(err)})
				return
			}
		}
		n, err := unix.Read(s.fuse, buf)
		if s.fresh && err != nil {
			unix.Munmap(buf)
		}
		if err == unix.EINTR || err == unix.ENOENT || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			s.emit(event{Ev: "read-error", Errno: errnoName(err)})
			return
		}
		s.mu.Lock()
		s.handle(buf[:n])
		s.mu.Unlock()
		if s.fresh {
			unix.Munmap(buf)
		}
	}
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func (s *server) byID(id uint64) *node {
	if id == 1 {
		return &node{ID: 1, Mode: syscall.S_IFDIR | 0o755}
	}
	for _, n := range s.st.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

func attrOf(n *node) fuse.Attr {
	a := fuse.Attr{Ino: n.ID, Size: uint64(len(n.Data)), Mode: n.Mode, Nlink: 1, Blksize: 4096}
	if n.Mode&syscall.S_IFDIR != 0 {
		a.Nlink = 2
	}
	return a
}

func (s *server) entryOut(n *node) []byte {
	e := fuse.EntryOut{NodeId: n.ID, Attr: attrOf(n)}
	return structBytes(&e)
}

func (s *server) createOut(n *node) []byte {
	c := fuse.CreateOut{EntryOut: fuse.EntryOut{NodeId: n.ID, Attr: attrOf(n)}, OpenOut: fuse.OpenOut{Fh: s.st.NextFh}}
	s.st.NextFh++
	return structBytes(&c)
}

func (s *server) handle(b []byte) {
	hsize := int(unsafe.Sizeof(fuse.InHeader{}))
	h := (*fuse.InHeader)(unsafe.Pointer(&b[0]))
	op := opNames[h.Opcode]
	if op == "" {
		op = fmt.Sprintf("OP%d", h.Opcode)
	}
	ev := event{Ev: "req", Op: op, Unique: h.Unique, Node: h.NodeId, Resent: h.Unique&uniqueResend != 0}
	var name string
	var flags uint32
	switch op {
	case "LOOKUP":
		name = cstring(b[hsize:])
	case "CREATE":
		in := (*fuse.CreateIn)(unsafe.Pointer(&b[0]))
		flags = in.Flags
		name = cstring(b[unsafe.Sizeof(fuse.CreateIn{}):])
	}
	ev.Name, ev.Flags = name, flags
	if !s.quiet {
		s.emit(ev)
	}

	if rule, ok := s.holds[op+"/"+name]; ok {
		delete(s.holds, op+"/"+name)
		held := heldReq{Unique: h.Unique, Op: op, Name: name, Applied: rule.apply}
		if rule.apply && op == "CREATE" {
			n := &node{ID: s.st.NextID, Parent: h.NodeId, Mode: syscall.S_IFREG | 0o644}
			s.st.NextID++
			s.st.Nodes[name] = n
			held.NodeID = n.ID
			if rule.journal {
				s.st.Journal[h.Unique] = n.ID
			}
		}
		s.st.Held = append(s.st.Held, held)
		s.emit(event{Ev: "held", Op: op, Unique: h.Unique, Name: name, Detail: fmt.Sprintf("applied=%v journaled=%v",
			rule.apply, rule.journal)})
		return
	}

	var errno syscall.Errno
	var body []byte
	detail := ""
	switch op {
	case "FORGET", "BATCH_FORGET", "INTERRUPT":
		return
	case "LOOKUP":
		if n, ok := s.st.Nodes[name]; ok && n.Parent == h.NodeId {
			body = s.entryOut(n)
		} else {
			errno = syscall.ENOENT
		}
	case "CREATE":
		masked := h.Unique &^ uniqueResend
		if id, ok := s.st.Journal[masked]; ok {
			delete(s.st.Journal, masked)
			body = s.createOut(s.byID(id))
			detail = "answered from the journal"
		} else if n, ok := s.st.Nodes[name]; ok && n.Parent == h.NodeId {
			if flags&syscall.O_EXCL != 0 {
				errno = syscall.EEXIST
			} else {
				body = s.createOut(n)
			}
		} else {
			n := &node{ID: s.st.NextID, Parent: h.NodeId, Mode: syscall.S_IFREG | 0o644}
			s.st.NextID++
			s.st.Nodes[name] = n
			body = s.createOut(n)
		}
	case "GETATTR", "SETATTR":
		n := s.byID(h.NodeId)
		if n == nil {
			errno = syscall.ENOENT
			break
		}
		if op == "SETATTR" {
			valid := binary.LittleEndian.Uint32(b[hsize:])
			size := binary.LittleEndian.Uint64(b[hsize+16:])
			if valid&(1<<3) != 0 && int(size) <= len(n.Data) {
				n.Data = n.Data[:size]
			}
		}
		a := fuse.AttrOut{Attr: attrOf(n)}
		body = structBytes(&a)
	case "OPEN", "OPENDIR":
		o := fuse.OpenOut{Fh: s.st.NextFh}
		s.st.NextFh++
		body = structBytes(&o)
	case "READ":
		in := (*fuse.ReadIn)(unsafe.Pointer(&b[0]))
		if n := s.byID(h.NodeId); n != nil && int(in.Offset) < len(n.Data) {
			body = n.Data[in.Offset:min(len(n.Data), int(in.Offset)+int(in.Size))]
		}
	case "WRITE":
		in := (*fuse.WriteIn)(unsafe.Pointer(&b[0]))
		data := b[unsafe.Sizeof(fuse.WriteIn{}):][:in.Size]
		n := s.byID(h.NodeId)
		if n == nil {
			errno = syscall.ENOENT
			break
		}
		end := int(in.Offset) + len(data)
		if end > len(n.Data) {
			n.Data = append(n.Data, make([]byte, end-len(n.Data))...)
		}
		copy(n.Data[in.Offset:], data)
		w := fuse.WriteOut{Size: in.Size}
		body = structBytes(&w)
	case "READDIR", "READDIRPLUS":
		// An empty listing: the experiment never lists.
	case "FLUSH", "RELEASE", "RELEASEDIR", "FSYNC", "ACCESS":
	default:
		errno = syscall.ENOSYS
	}
	err := s.reply(h.Unique, errno, body)
	s.forgetHeld(h.Unique &^ uniqueResend)
	if s.quiet {
		return
	}
	if errno == 0 {
		s.emit(event{Ev: "reply", Op: op, Unique: h.Unique, Errno: "OK", Detail: detail + writeNote(err)})
	} else {
		s.emit(event{Ev: "reply", Op: op, Unique: h.Unique, Errno: unix.ErrnoName(errno), Detail: detail + writeNote(err)})
	}
}

// forgetHeld drops an answered request from the held list, so that a later state record lists only the
// requests still unanswered.
func (s *server) forgetHeld(unique uint64) {
	for i, h := range s.st.Held {
		if h.Unique == unique {
			s.st.Held = append(s.st.Held[:i], s.st.Held[i+1:]...)
			return
		}
	}
}

func writeNote(err error) string {
	if err == nil {
		return ""
	}
	return " write: " + errnoName(err)
}
