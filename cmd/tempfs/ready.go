package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
)

// readyNotifier tells whoever started the daemon that the mount is ready, or why it is not: a line on an
// inherited file descriptor (--ready-fd, used by --daemon and the integration tests) and systemd's
// NOTIFY_SOCKET (Type=notify units).
type readyNotifier struct {
	fd *os.File
}

func newReadyNotifier(fd int) *readyNotifier {
	r := &readyNotifier{}
	if fd > 0 {
		r.fd = os.NewFile(uintptr(fd), "ready-fd")
	}
	return r
}

// ready reports success: "ready\n" on the fd, READY=1 to systemd.
func (r *readyNotifier) ready() {
	if r.fd != nil {
		fmt.Fprintln(r.fd, "ready")
		r.fd.Close()
		r.fd = nil
	}
	sdNotify("READY=1")
}

// fail reports why the mount did not come up: "error: ...\n" on the fd (the --daemon parent prints it).
func (r *readyNotifier) fail(err error) {
	if r.fd != nil {
		fmt.Fprintf(r.fd, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		r.fd.Close()
		r.fd = nil
	}
}

// notifyStopping tells systemd the service is shutting down; sent once, as soon as the shutdown starts.
func notifyStopping() { stoppingOnce.Do(func() { sdNotify("STOPPING=1") }) }

var stoppingOnce sync.Once

// sdNotify sends one state line to systemd when NOTIFY_SOCKET is set (a path, or @abstract).
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
