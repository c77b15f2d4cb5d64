package fdstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// messageMax is the largest notify message read, as systemd's NOTIFY_BUFFER_MAX; fdsMax the most
// descriptors one message carries (the kernel's SCM_MAX_FD).
const (
	messageMax = 4096
	fdsMax     = 253
)

// ErrNoMessage is Receive's answer when no message is queued.
var ErrNoMessage = errors.New("fd store: no message queued")

// Listener is the receiving end of a notify socket, as systemd runs it for a unit: a datagram socket with
// SO_PASSCRED, so that each message comes with its sender's pid and uid, set by the kernel.
type Listener struct {
	fd   int
	addr string
}

// Message is one notify datagram.
type Message struct {
	// Fields are its KEY=VALUE lines.
	Fields map[string]string
	// FDs are the descriptors it carried, close-on-exec, owned by the caller.
	FDs []int
	// PID and UID are the sender's, as the kernel saw it send.
	PID int
	UID int
	// Truncated: the message or its descriptors did not fit (the descriptors that did are in FDs).
	Truncated bool
}

// Listen binds a non-blocking notify socket at addr (a path or @name); "" picks a random abstract name,
// which leaves nothing behind and cannot be guessed by another user to send to first.
func Listen(addr string) (*Listener, error) {
	if addr == "" {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		addr = "@tempfs-fdstore/" + hex.EncodeToString(b[:])
	}
	if err := checkAddr(addr); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify socket: SO_PASSCRED: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	return &Listener{fd: fd, addr: addr}, nil
}

// Addr is the socket's address as NOTIFY_SOCKET names it.
func (l *Listener) Addr() string { return l.addr }

// FD is the socket's descriptor, to poll for POLLIN.
func (l *Listener) FD() int { return l.fd }

// Close closes the socket; messages still queued are lost, with the descriptors they carry.
func (l *Listener) Close() error { return unix.Close(l.fd) }

// Receive reads the next queued message, or returns ErrNoMessage at once when there is none.
func (l *Listener) Receive() (*Message, error) {
	buf := make([]byte, messageMax)
	oob := make([]byte, unix.CmsgSpace(fdsMax*4)+unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(l.fd, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return nil, ErrNoMessage
		}
		if err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		m := &Message{Fields: fields(buf[:n]), PID: -1, UID: -1,
			Truncated: flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0}
		scms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return m, fmt.Errorf("notify socket: control message: %w", err)
		}
		for i := range scms {
			if fds, err := unix.ParseUnixRights(&scms[i]); err == nil {
				m.FDs = append(m.FDs, fds...)
			} else if cred, err := unix.ParseUnixCredentials(&scms[i]); err == nil {
				m.PID, m.UID = int(cred.Pid), int(cred.Uid)
			}
		}
		return m, nil
	}
}

// CloseFDs closes the descriptors a message carried (one that is refused or dropped).
func (m *Message) CloseFDs() {
	for _, fd := range m.FDs {
		unix.Close(fd)
	}
	m.FDs = nil
}
