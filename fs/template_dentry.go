package fs

import (
	"syscall"
	"time"
)

// templateDentry is the kernel's dentry for a template name after CREATE. The kernel binds the name the caller
// opened (jobXXXXXX) to the new file, expired at once (entry timeout 0); left there, the next open of the
// template pays two LOOKUPs, one revalidating it and then the lookup proper. Invalidating it saves one, but
// the invalidation waits for the directory's lock, which the kernel holds until it has the CREATE reply: it
// cannot be sent from Create itself.
//
// The CREATE handle carries it until the file's first WRITE, which the caller makes after open returned, with
// the directory's lock free: the write waits for the invalidation (up to templateDentryWait), so that the
// caller's next open finds the name gone. A goroutine started at CREATE instead arrived too late in most
// cycles (measured 1.3 to 1.7 LOOKUPs per template open): with every P of the runtime held by a reader blocked
// in read(2) on /dev/fuse, it waited for the scheduler's monitor to hand it one. Blocking the handler on it
// runs it on the handler's own P at once.
//
// The wait is bounded because of one interleaving: a task holding the directory's lock (a rename or unlink of
// the file's real name) may wait for the file's inode lock, which the writer holds until the WRITE is
// answered. The WRITE is then answered after the bound, and the invalidation completes once that task goes on.
// A handle that never writes sends the invalidation at its release.
type templateDentry struct {
	dir  *Dir
	name string
}

const templateDentryWait = time.Millisecond

// dropTemplateDentry invalidates the template dentry of the handle's CREATE, once; wait bounds how long the
// caller waits for the kernel to take it.
func (h *handle) dropTemplateDentry(wait bool) {
	td := h.templateDentry.Swap(nil)
	if td == nil {
		return
	}
	// go-fuse linked the node under the template name when CREATE returned; the name was never an entry
	// (Lookup and Readdir read only Dir.children), and go-fuse's tree is told it is gone with the kernel.
	td.dir.forgetChild(td.name, h.file)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if errno := td.dir.NotifyEntry(td.name); errno != 0 && errno != syscall.ENOENT {
			td.dir.fs.log.Debug("notify entry", "name", td.name, "errno", errno)
		}
	}()
	if !wait {
		return
	}
	timer := time.NewTimer(templateDentryWait)
	select {
	case <-done:
	case <-timer.C:
	}
	timer.Stop()
}
