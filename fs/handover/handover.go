// Package handover passes a set of named file descriptors and a versioned JSON state from one process to
// another over a Unix SOCK_SEQPACKET socket: the primitive a daemon taking over a live mount is built on
// (docs/takeover.md). It knows nothing of FUSE or of what the descriptors are.
//
// The exchange, one packet per step:
//
//	sender   → header {format, version, from, fds: N, state_bytes} with one descriptor: a sealed memfd
//	           holding {"fds": [names], "state": ...}
//	receiver → {"accept": true} or {"refuse": reason}: an unknown format or version, or N descriptors
//	           more than its RLIMIT_NOFILE leaves room for, is refused before any descriptor is sent
//	sender   → batches {"batch": i, "count": k} of at most MaxFDsPerMessage descriptors each
//	receiver → {"done": true}, or {"refuse": reason} if a batch arrived short or truncated
//
// Nothing here holds a lock.
package handover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Format names the envelope; a header with another format is refused.
const Format = "tempfs-handover"

// MaxFDsPerMessage is the most descriptors one SCM_RIGHTS message carries (SCM_MAX_FD in the kernel; a
// message with more fails with EINVAL).
const MaxFDsPerMessage = 253

// DefaultReserve is how many descriptors a receiver keeps free below its RLIMIT_NOFILE after receiving.
const DefaultReserve = 64

// maxPacket bounds the control packets (headers, answers, batch markers), which are small: the names and
// the state travel in the memfd.
const maxPacket = 64 << 10

var (
	// ErrUnknownVersion is the receiver's error for a version it does not read (or another format).
	ErrUnknownVersion = errors.New("handover: unknown state format or version")
	// ErrTooManyFDs is the receiver's error when the descriptors would not fit under its RLIMIT_NOFILE.
	ErrTooManyFDs = errors.New("handover: too many descriptors for RLIMIT_NOFILE")
	// ErrTruncated is the receiver's error when a batch arrived with fewer descriptors than announced.
	ErrTruncated = errors.New("handover: descriptors lost in transit")
)

// RefusedError is the sender's error when the receiver refused; nothing was taken over.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "handover: refused by the receiver: " + e.Reason }

// NamedFD is a descriptor and the name the receiver knows it by. Names are unique within a message.
type NamedFD struct {
	Name string
	FD   int
}

// Message is what a sender hands over. Send does not close the descriptors.
type Message struct {
	Version int
	From    string // the sending binary, for the receiver's log
	FDs     []NamedFD
	State   any // marshaled to JSON
}

// header is the first packet.
type header struct {
	Format     string `json:"format"`
	Version    int    `json:"version"`
	From       string `json:"from,omitempty"`
	FDs        int    `json:"fds"`
	StateBytes int64  `json:"state_bytes"`
}

// body is the content of the state memfd.
type body struct {
	FDs   []string        `json:"fds"`
	State json.RawMessage `json:"state"`
}

type answer struct {
	Accept bool   `json:"accept,omitempty"`
	Done   bool   `json:"done,omitempty"`
	Refuse string `json:"refuse,omitempty"`
}

type batch struct {
	Batch int `json:"batch"`
	Count int `json:"count"`
}

// Send hands m over on conn, a connected unixpacket socket, and returns once the receiver has every
// descriptor; *RefusedError if it refused.
func Send(conn *net.UnixConn, m Message) error {
	names := make([]string, len(m.FDs))
	seen := make(map[string]bool, len(m.FDs))
	for i, f := range m.FDs {
		if f.Name == "" || seen[f.Name] {
			return fmt.Errorf("handover: descriptor name %q empty or repeated", f.Name)
		}
		seen[f.Name] = true
		names[i] = f.Name
	}
	state, err := json.Marshal(m.State)
	if err != nil {
		return fmt.Errorf("handover: encode state: %w", err)
	}
	content, err := json.Marshal(body{FDs: names, State: state})
	if err != nil {
		return fmt.Errorf("handover: encode state: %w", err)
	}
	memfd, err := sealedMemfd(content)
	if err != nil {
		return err
	}
	defer unix.Close(memfd)
	h := header{Format: Format, Version: m.Version, From: m.From, FDs: len(m.FDs), StateBytes: int64(len(content))}
	if err := writePacket(conn, h, memfd); err != nil {
		return err
	}
	if err := readAnswer(conn); err != nil {
		return err
	}
	for i := 0; i*MaxFDsPerMessage < len(m.FDs); i++ {
		part := m.FDs[i*MaxFDsPerMessage : min(len(m.FDs), (i+1)*MaxFDsPerMessage)]
		fds := make([]int, len(part))
		for j, f := range part {
			fds[j] = f.FD
		}
		if err := writePacket(conn, batch{Batch: i, Count: len(fds)}, fds...); err != nil {
			return err
		}
	}
	return readAnswer(conn)
}

// sealedMemfd returns a memfd holding content that nobody can change any more.
func sealedMemfd(content []byte) (int, error) {
	fd, err := unix.MemfdCreate("tempfs-handover-state", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("handover: memfd: %w", err)
	}
	for off := 0; off < len(content); {
		n, err := unix.Pwrite(fd, content[off:], int64(off))
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("handover: write state: %w", err)
		}
		off += n
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("handover: seal state: %w", err)
	}
	return fd, nil
}

func writePacket(conn *net.UnixConn, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("handover: send: %w", err)
	}
	return nil
}

// readPacket reads one packet into v and returns the descriptors that came with it (close-on-exec), and
// whether the kernel truncated them (MSG_CTRUNC: the receiver could not hold them all).
func readPacket(conn *net.UnixConn, v any, maxFDs int) (fds []int, truncated bool, err error) {
	buf := make([]byte, maxPacket)
	oob := make([]byte, unix.CmsgSpace(4*max(maxFDs, 1)))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, false, fmt.Errorf("handover: receive: %w", err)
	}
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, false, fmt.Errorf("handover: control message: %w", err)
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range got {
				unix.CloseOnExec(fd)
			}
			fds = append(fds, got...)
		}
	}
	truncated = flags&unix.MSG_CTRUNC != 0
	if n == 0 {
		closeAll(fds)
		return nil, truncated, errors.New("handover: the peer closed the connection")
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeAll(fds)
		return nil, truncated, fmt.Errorf("handover: packet: %w", err)
	}
	return fds, truncated, nil
}

func readAnswer(conn *net.UnixConn) error {
	var a answer
	fds, _, err := readPacket(conn, &a, 0)
	closeAll(fds)
	if err != nil {
		return err
	}
	if a.Refuse != "" {
		return &RefusedError{Reason: a.Refuse}
	}
	if !a.Accept && !a.Done {
		return errors.New("handover: empty answer")
	}
	return nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// ReceiveOptions says what a receiver accepts.
type ReceiveOptions struct {
	// Versions are the state versions this binary reads.
	Versions []int
	// Reserve is how many descriptors must stay free below RLIMIT_NOFILE after receiving; 0 means
	// DefaultReserve.
	Reserve int
}

// Received is what a receiver got. The caller owns the descriptors (close-on-exec).
type Received struct {
	Version int
	From    string
	FDs     []NamedFD
	state   json.RawMessage
}

// DecodeState decodes the state into v, refusing fields v does not have: a state that cannot be read
// whole must not be taken over.
func (r *Received) DecodeState(v any) error {
	d := json.NewDecoder(bytes.NewReader(r.state))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("handover: state of version %d: %w", r.Version, err)
	}
	return nil
}

// Close closes every received descriptor.
func (r *Received) Close() {
	for _, f := range r.FDs {
		unix.Close(f.FD)
	}
	r.FDs = nil
}

// Receive takes a hand-over from conn. It refuses (telling the sender why) an unknown format or version,
// ErrUnknownVersion, and more descriptors than RLIMIT_NOFILE leaves room for, ErrTooManyFDs, before any
// descriptor is sent.
func Receive(conn *net.UnixConn, opts ReceiveOptions) (*Received, error) {
	var h header
	fds, _, err := readPacket(conn, &h, 1)
	if err != nil {
		return nil, err
	}
	if len(fds) != 1 {
		closeAll(fds)
		return nil, refuse(conn, fmt.Errorf("handover: header came with %d descriptors, want the state memfd", len(fds)))
	}
	memfd := fds[0]
	defer unix.Close(memfd)
	if h.Format != Format || !accepts(opts.Versions, h.Version) {
		return nil, refuse(conn, fmt.Errorf("%w: %q version %d from %q; this binary reads %q versions %v",
			ErrUnknownVersion, h.Format, h.Version, h.From, Format, opts.Versions))
	}
	reserve := opts.Reserve
	if reserve == 0 {
		reserve = DefaultReserve
	}
	if free, limit, err := freeDescriptors(); err != nil {
		return nil, refuse(conn, err)
	} else if h.FDs+reserve > free {
		return nil, refuse(conn, fmt.Errorf("%w: %d descriptors to receive and %d to keep free, but only %d of %d are free",
			ErrTooManyFDs, h.FDs, reserve, free, limit))
	}
	var b body
	if err := readState(memfd, h.StateBytes, &b); err != nil {
		return nil, refuse(conn, err)
	}
	if len(b.FDs) != h.FDs {
		return nil, refuse(conn, fmt.Errorf("handover: header announces %d descriptors, state names %d", h.FDs, len(b.FDs)))
	}
	if err := writePacket(conn, answer{Accept: true}); err != nil {
		return nil, err
	}
	r := &Received{Version: h.Version, From: h.From, state: b.State}
	for i := 0; len(r.FDs) < h.FDs; i++ {
		var bt batch
		got, truncated, err := readPacket(conn, &bt, MaxFDsPerMessage)
		if err == nil && (truncated || len(got) != bt.Count || bt.Batch != i) {
			err = fmt.Errorf("%w: batch %d (packet %d) announced %d, %d arrived, truncated by the kernel: %v",
				ErrTruncated, i, bt.Batch, bt.Count, len(got), truncated)
		}
		for _, fd := range got {
			if len(r.FDs) < h.FDs {
				r.FDs = append(r.FDs, NamedFD{Name: b.FDs[len(r.FDs)], FD: fd})
			} else {
				unix.Close(fd)
				err = fmt.Errorf("%w: more descriptors than announced", ErrTruncated)
			}
		}
		if err != nil {
			r.Close()
			return nil, refuse(conn, err)
		}
	}
	if err := writePacket(conn, answer{Done: true}); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func accepts(versions []int, v int) bool {
	for _, a := range versions {
		if a == v {
			return true
		}
	}
	return false
}

// refuse tells the sender why and returns err.
func refuse(conn *net.UnixConn, err error) error {
	_ = writePacket(conn, answer{Refuse: err.Error()})
	return err
}

// freeDescriptors is how many more descriptors the process may open: the numbers below the soft
// RLIMIT_NOFILE that no open descriptor uses (the kernel hands out the lowest free number, and descriptors
// opened before the limit was lowered may lie above it).
func freeDescriptors() (free, limit int, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("handover: RLIMIT_NOFILE: %w", err)
	}
	limit = int(min(rl.Cur, math.MaxInt32))
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, fmt.Errorf("handover: count open descriptors: %w", err)
	}
	below := 0
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd < limit {
			below++
		}
	}
	// One of them was the directory's own descriptor, closed by now.
	return limit - below + 1, limit, nil
}

// readState reads the memfd's content into b, after checking that its sender can no longer change it.
func readState(memfd int, size int64, b *body) error {
	seals, err := unix.FcntlInt(uintptr(memfd), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("handover: state is not a sealed memfd: %w", err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE; seals&want != want {
		return fmt.Errorf("handover: state memfd not sealed against writes (seals %#x)", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(memfd, &st); err != nil {
		return fmt.Errorf("handover: state: %w", err)
	}
	if st.Size != size {
		return fmt.Errorf("handover: state holds %d bytes, header says %d", st.Size, size)
	}
	content := make([]byte, size)
	for off := 0; off < len(content); {
		n, err := unix.Pread(memfd, content[off:], int64(off))
		if err != nil {
			return fmt.Errorf("handover: read state: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("handover: state ends at %d of %d bytes", off, size)
		}
		off += n
	}
	if err := json.Unmarshal(content, b); err != nil {
		return fmt.Errorf("handover: state: %w", err)
	}
	return nil
}
