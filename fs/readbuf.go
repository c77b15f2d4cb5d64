package fs

import (
	"errors"
	"reflect"
	"sync"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// go-fuse reads each request into a buffer from a pool whose New makes it with make: fresh heap memory, which
// Go does not touch (it knows it to be zero), so the kernel's copy of a request is the first touch of its
// pages. The kernel fails that copy, and the request with EIO, never to be sent again, when the reader is
// being killed while a page must be faulted in (docs/takeover.md, part (f)): a daemon killed while it reads,
// which a take-over's exit and a crash under a keeper of descriptors both are. Measured with the take-over
// experiment against a go-fuse whose New writes one byte per page: 0 failed reads in 330 hand-overs, 4 in
// 300 without; the crash test under the race detector failed one request in two CI runs without it.
//
// go-fuse keeps the pool unexported (Server.readPool), so the pool's New is wrapped here, once, before the
// server serves: the same buffer, with every page written. This is the four-line change docs/takeover.md
// describes for go-fuse itself, done from outside it; TestReadPoolIsThere fails if a go-fuse upgrade moves
// the pool.

// touchReadBuffers makes every read buffer the server's pool hands out present before the kernel copies a
// request into it. Call it before the server reads anything more (before Serve).
func touchReadBuffers(s *fuse.Server) error {
	pool, err := readPool(s)
	if err != nil {
		return err
	}
	made := pool.New
	if made == nil {
		return errors.New("go-fuse's read buffer pool makes no buffers")
	}
	pool.New = func() any {
		b := made()
		if buf, ok := b.([]byte); ok {
			for i := 0; i < len(buf); i += pageSize {
				buf[i] = 0
			}
		}
		return b
	}
	return nil
}

const pageSize = 4096

// readPool is go-fuse's Server.readPool.
func readPool(s *fuse.Server) (*sync.Pool, error) {
	f := reflect.ValueOf(s).Elem().FieldByName("readPool")
	if !f.IsValid() || f.Type() != reflect.TypeOf(sync.Pool{}) {
		return nil, errors.New("go-fuse's Server has no readPool of type sync.Pool")
	}
	return (*sync.Pool)(unsafe.Pointer(f.UnsafeAddr())), nil
}
