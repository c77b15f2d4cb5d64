package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/tempfs/tempfs/fs/fdstore"
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

// sdNotify sends one state line to systemd when NOTIFY_SOCKET is set (a path, or @abstract); a failure to
// reach it changes nothing for the mount.
func sdNotify(state string) { _ = fdstore.Notify(state) }
