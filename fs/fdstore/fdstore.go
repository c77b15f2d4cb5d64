// Package fdstore speaks systemd's file descriptor store protocol, from both ends: a service sends the
// descriptors it wants kept across its own death to its NOTIFY_SOCKET (Store), and a restarted service
// finds them again at fd 3 onwards (Passed). The receiving end (Listener) is what `tempfs mount --hold`
// runs when no systemd unit keeps the descriptors, so that the daemon has one code path either way.
//
// The messages are sd_notify's: one datagram of "KEY=VALUE\n" lines, the descriptors in SCM_RIGHTS.
//
//	FDSTORE=1\nFDNAME=<name>\n     keep the attached descriptor(s) under name
//	FDSTOREREMOVE=1\nFDNAME=<name>\n   drop every descriptor kept under name
//	READY=1, STOPPING=1, ...         states, no descriptors
//
// The environment says whether a store exists: NOTIFY_SOCKET (a path, or @name in the abstract namespace)
// and FDSTORE=<how many descriptors it keeps at most>, as systemd sets for a unit with
// FileDescriptorStoreMax=. A restarted service gets LISTEN_FDS=<n>, LISTEN_FDNAMES=<name>:<name>... and
// LISTEN_PID=<its pid>. The holder cannot set LISTEN_PID (it does not know its child's pid before the child
// runs): it leaves LISTEN_PID out and sets HolderPIDEnv to its own pid instead, which Passed checks against
// the parent's pid. Either way a descendant that inherits the variables does not mistake them for its own.
//
// This package knows nothing of FUSE.
package fdstore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HolderPIDEnv names the variable a holder sets to its own pid in place of LISTEN_PID: the descriptors are
// for the process whose parent has that pid.
const HolderPIDEnv = "TEMPFS_HOLDER_PID"

// NameMax is the longest descriptor name systemd accepts.
const NameMax = 255

// Store is the sending end: the service's side of the notify socket.
type Store struct {
	// addr is NOTIFY_SOCKET as given: a path or "@name" (golang.org/x/sys/unix makes a leading @ the
	// abstract namespace's NUL).
	addr string
	max  int
	// fd is an unbound datagram socket; sendmsg on it is atomic per message, so no lock is needed.
	fd int
}

// FromEnv returns the store the environment names, or nil (and no error) when there is none: NOTIFY_SOCKET
// unset or FDSTORE unset or 0.
func FromEnv() (*Store, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	max := os.Getenv("FDSTORE")
	if addr == "" || max == "" || max == "0" {
		return nil, nil
	}
	n, err := strconv.Atoi(max)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("FDSTORE=%q is not a count of descriptors", max)
	}
	return New(addr, n)
}

// New opens a store at the notify socket addr (a path, or @name) that keeps at most max descriptors.
func New(addr string, max int) (*Store, error) {
	if err := checkAddr(addr); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return &Store{addr: addr, max: max, fd: fd}, nil
}

// checkAddr accepts what systemd writes in NOTIFY_SOCKET for a Unix socket: an absolute path or @name.
func checkAddr(addr string) error {
	if len(addr) < 2 || (addr[0] != '/' && addr[0] != '@') {
		return fmt.Errorf("NOTIFY_SOCKET=%q is neither an absolute path nor an @abstract name", addr)
	}
	return nil
}

// Max is how many descriptors the store keeps at most (FDSTORE); past it the receiver drops new ones.
func (s *Store) Max() int { return s.max }

// Close closes the sending socket; the descriptors already stored stay stored.
func (s *Store) Close() error { return unix.Close(s.fd) }

// Add stores fd under name. It returns once the message is in the receiver's queue, so a message sent
// after Add returns (a record naming the descriptor, say) is read after it; the receiver takes its own
// reference, and the caller keeps (and may close) fd.
func (s *Store) Add(name string, fd int) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("fd store: no descriptor to store as %q", name)
	}
	return s.send("FDSTORE=1\nFDNAME="+name+"\n", []int{fd})
}

// Remove drops every descriptor stored under name. Removing a name that is not stored is no error (the
// receiver cannot answer).
func (s *Store) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return s.send("FDSTOREREMOVE=1\nFDNAME="+name+"\n", nil)
}

// Notify sends state lines ("READY=1", "STOPPING=1", "STATUS=...") without descriptors.
func (s *Store) Notify(state string) error { return s.send(state, nil) }

func (s *Store) send(msg string, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	to := &unix.SockaddrUnix{Name: s.addr}
	for {
		// Blocking: when the receiver's queue is full, wait rather than lose a descriptor.
		err := unix.Sendmsg(s.fd, []byte(msg), oob, to, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("notify socket %s: %w", s.addr, err)
		}
		return nil
	}
}

// Notify sends state lines to NOTIFY_SOCKET, whether or not a store exists; nothing when the variable is
// unset.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	s, err := New(addr, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Notify(state)
}

// ValidName checks a descriptor name as systemd does: 1 to NameMax printable ASCII characters, no ':'
// (LISTEN_FDNAMES separates names with it). systemd names an unnamed descriptor "stored"; here every
// descriptor is named by its sender, so the empty name is refused.
func ValidName(name string) error {
	if name == "" {
		return errors.New("fd store: empty descriptor name")
	}
	if len(name) > NameMax {
		return fmt.Errorf("fd store: descriptor name of %d bytes (at most %d)", len(name), NameMax)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("fd store: descriptor name %q has %q (printable ASCII but ':' only)", name, c)
		}
	}
	return nil
}

// fields parses a notify message into its KEY=VALUE lines; a later line overrides an earlier one.
func fields(msg []byte) map[string]string {
	f := make(map[string]string)
	for _, line := range strings.Split(string(msg), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			f[k] = v
		}
	}
	return f
}
