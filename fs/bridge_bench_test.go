package fs

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Benchmarks of the namespace requests through go-fuse's raw bridge, without a kernel: the daemon's own cost
// of LOOKUP, GETATTR and a create cycle, and how it scales with threads. Run them with -cpu 1,2 (or more):
// each parallel goroutine works in its own directory, as separate clients do, so that a request waits only
// for a lock that is shared across directories. scripts/lockprofile runs them with -mutexprofile and lists
// which code held the locks that were waited for.
//
//	go test -run '^$' -bench Bridge -cpu 1,2 ./fs

// benchDirs gives each parallel goroutine its own directory, made through the bridge, with one file "f"
// (its node id) in it.
func benchDirs(b *testing.B, br *bridge) func() (dir, file uint64) {
	var next atomic.Int64
	return func() (uint64, uint64) {
		i := next.Add(1)
		d, st := br.mkdir(fuse.FUSE_ROOT_ID, fmt.Sprintf("client%d", i), br.pid)
		if st != fuse.OK {
			b.Fatal(st)
		}
		f, st := br.create(d.NodeId, "f", 0, br.pid)
		if st != fuse.OK {
			b.Fatal(st)
		}
		br.release(f.NodeId, f.Fh)
		return d.NodeId, f.NodeId
	}
}

func BenchmarkBridgeLookup(b *testing.B) {
	br := newBridge(b)
	client := benchDirs(b, br)
	b.RunParallel(func(pb *testing.PB) {
		dir, _ := client()
		var out fuse.EntryOut
		h := br.hdr(dir, br.pid)
		for pb.Next() {
			if st := br.raw.Lookup(nil, &h, "f", &out); st != fuse.OK {
				b.Error(st)
				return
			}
			br.raw.Forget(out.NodeId, 1) // as the kernel does, eventually: keep the lookup count flat
		}
	})
}

func BenchmarkBridgeGetattr(b *testing.B) { benchGetattr(b, false) }

// BenchmarkBridgeGetattrDir is GETATTR of a directory (its size and link count count its entries).
func BenchmarkBridgeGetattrDir(b *testing.B) { benchGetattr(b, true) }

// benchGetattr is GETATTR of each client's file, or of its directory.
func benchGetattr(b *testing.B, ofDir bool) {
	br := newBridge(b)
	client := benchDirs(b, br)
	b.RunParallel(func(pb *testing.PB) {
		node, file := client()
		if !ofDir {
			node = file
		}
		in := &fuse.GetAttrIn{InHeader: br.hdr(node, br.pid)}
		var out fuse.AttrOut
		for pb.Next() {
			if st := br.raw.GetAttr(nil, in, &out); st != fuse.OK {
				b.Error(st)
				return
			}
		}
	})
}

// BenchmarkBridgeCreate is the small cycle's namespace part: CREATE with O_EXCL, RELEASE, UNLINK.
func BenchmarkBridgeCreate(b *testing.B) {
	br := newBridge(b)
	client := benchDirs(b, br)
	b.RunParallel(func(pb *testing.PB) {
		dir, _ := client()
		h := br.hdr(dir, br.pid)
		in := &fuse.CreateIn{InHeader: h, Flags: syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL, Mode: 0o600}
		var out fuse.CreateOut
		for pb.Next() {
			if st := br.raw.Create(nil, in, "c", &out); st != fuse.OK {
				b.Error(st)
				return
			}
			br.raw.Release(nil, &fuse.ReleaseIn{InHeader: br.hdr(out.NodeId, br.pid), Fh: out.Fh})
			if st := br.raw.Unlink(nil, &h, "c"); st != fuse.OK {
				b.Error(st)
				return
			}
			br.raw.Forget(out.NodeId, 1)
		}
	})
}

// BenchmarkBridgeTemplateCreate is the template cycle: CREATE of a template, RELEASE (the name goes).
func BenchmarkBridgeTemplateCreate(b *testing.B) {
	br := newBridge(b)
	client := benchDirs(b, br)
	b.RunParallel(func(pb *testing.PB) {
		dir, _ := client()
		in := &fuse.CreateIn{InHeader: br.hdr(dir, br.pid), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o600}
		var out fuse.CreateOut
		for pb.Next() {
			if st := br.raw.Create(nil, in, "jobXXXXXX", &out); st != fuse.OK {
				b.Error(st)
				return
			}
			br.raw.Release(nil, &fuse.ReleaseIn{InHeader: br.hdr(out.NodeId, br.pid), Fh: out.Fh})
			br.raw.Forget(out.NodeId, 1)
		}
	})
}

var benchSink atomic.Uint64

// BenchmarkBridgeControl does no request: pure arithmetic in each goroutine, with nothing shared. Its
// speed-up from -cpu 1 to 2 is what the machine gives two threads at the time (on a shared machine, often
// well under 2); the others' speed-ups mean something only beside it.
func BenchmarkBridgeControl(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		x := uint64(1)
		for pb.Next() {
			for range 50 {
				x = x*6364136223846793005 + 1442695040888963407
			}
		}
		benchSink.Add(x)
	})
}
