package spool

// A crash record (fs) must know every descriptor that holds bytes before anything names it, and which
// descriptors no longer hold any, so that a keeper of descriptors outside the process (systemd's fd store,
// tempfs's holder) has them when the daemon dies. The pool tells its Watcher; without one it tells no one.
//
// Lock order: the Watcher is called with the File's mu (and the arena's mu) held, so it must take no lock of
// the pool's.

import "fmt"

// Watcher learns of the descriptors the pool makes and closes, and of the files its memory budget moved
// to disk on behalf of another file's write.
type Watcher interface {
	// DescriptorMade is called with a new descriptor and the name a handed-over state gives it, before
	// anything uses it. An error refuses the descriptor: the pool closes it and the operation fails.
	DescriptorMade(name string, fd int) error
	// DescriptorClosed is called once the descriptor of that name was closed.
	DescriptorClosed(name string)
	// Moved is called when f's bytes changed place (a rollover to disk).
	Moved(f *File)
	// Later is given work that destroys bytes a record may still name (the punch of an arena slot a file
	// left): the watcher runs it once its record names the file's new place.
	Later(fn func())
}

// SetWatcher makes w the pool's watcher (nil: none). Set it before the pool is used concurrently.
func (p *Pool) SetWatcher(w Watcher) { p.watcher = w }

// descriptorMade tells the watcher of a new descriptor; on its refusal the descriptor is closed and the error
// returned for the operation to fail with.
func (p *Pool) descriptorMade(name string, fd int, close func()) error {
	if p.watcher == nil {
		return nil
	}
	if err := p.watcher.DescriptorMade(name, fd); err != nil {
		close()
		return fmt.Errorf("spool: the descriptor store refused %s: %w", name, err)
	}
	return nil
}

func (p *Pool) descriptorClosed(name string) {
	if p.watcher != nil {
		p.watcher.DescriptorClosed(name)
	}
}

func (p *Pool) moved(f *File) {
	if p.watcher != nil {
		p.watcher.Moved(f)
	}
}

// SetTag keeps t with f for its user (a Watcher finds its own object through it). Call it before f is shared.
func (f *File) SetTag(t any) { f.tag = t }

// Tag is what SetTag kept.
func (f *File) Tag() any { return f.tag }
