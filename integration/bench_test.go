package integration

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Sequential data-path benchmarks: a 256 MiB file written and read with 1 MiB requests through a real
// tempfs mount (--max-size 1MiB, so the file rolls over to the disk store), and the same on a plain directory of
// the filesystem that holds the store, the baseline measured in the same run. Benchmarks run only with -bench:
//
//	go test -run '^$' -bench Sequential -benchtime 5x ./integration/
//
// Reads are warm (the data was just written; scripts/bench measures cold reads, which need drop_caches).

const (
	seqSize  = 256 << 20
	seqChunk = 1 << 20
	seqBlock = 4096
)

// seqTarget is one directory the sequential benchmarks run in.
type seqTarget struct {
	name string
	dir  string
}

// seqTargets mounts tempfs and returns it with the baseline: a fresh directory on the store's filesystem.
func seqTargets(b *testing.B) []seqTarget {
	b.Helper()
	m := startMount(b, "--max-size", "1MiB")
	base := b.TempDir()
	var st1, st2 syscall.Stat_t
	if err := syscall.Stat(m.StoreParent, &st1); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Stat(base, &st2); err != nil {
		b.Fatal(err)
	}
	if st1.Dev != st2.Dev {
		b.Fatalf("baseline %s is not on the store's filesystem (%s)", base, m.StoreParent)
	}
	return []seqTarget{{"tempfs", m.Dir}, {"storefs", base}}
}

// seqStamp writes a counter word, and its complement, at both ends of every 4 KiB block of a chunk whose first
// block has number first, so that a read can check every block cheaply.
func seqStamp(buf []byte, first uint64) {
	for off, n := 0, first; off+seqBlock <= len(buf); off, n = off+seqBlock, n+1 {
		binary.LittleEndian.PutUint64(buf[off:], n)
		binary.LittleEndian.PutUint64(buf[off+seqBlock-8:], ^n)
	}
}

func seqCheck(buf []byte, first uint64) error {
	for off, n := 0, first; off+seqBlock <= len(buf); off, n = off+seqBlock, n+1 {
		if binary.LittleEndian.Uint64(buf[off:]) != n || binary.LittleEndian.Uint64(buf[off+seqBlock-8:]) != ^n {
			return fmt.Errorf("wrong data in the 4 KiB block at offset %d", int64(n)*seqBlock)
		}
	}
	return nil
}

// seqWrite creates path and writes seqSize bytes of the pattern with 1 MiB writes, then closes it (no fsync).
func seqWrite(b *testing.B, path string, buf []byte) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < seqSize; off += seqChunk {
		seqStamp(buf, uint64(off/seqBlock))
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// seqRead reads path with 1 MiB reads and checks its length and every block.
func seqRead(b *testing.B, path string, buf []byte) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Close(fd)
	var off int64
	for {
		got := 0
		for got < len(buf) {
			n, err := syscall.Read(fd, buf[got:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
			got += n
		}
		if got == 0 {
			break
		}
		if err := seqCheck(buf[:got], uint64(off/seqBlock)); err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		off += int64(got)
	}
	if off != seqSize {
		b.Fatalf("%s: read %d bytes, wrote %d", path, off, seqSize)
	}
}

func BenchmarkSequentialWrite256MiB(b *testing.B) {
	for _, tgt := range seqTargets(b) {
		b.Run(tgt.name, func(b *testing.B) {
			buf := make([]byte, seqChunk)
			path := filepath.Join(tgt.dir, "seq-write")
			b.SetBytes(seqSize)
			b.ResetTimer()
			for range b.N {
				seqWrite(b, path, buf)
				b.StopTimer()
				var st syscall.Stat_t
				if err := syscall.Stat(path, &st); err != nil {
					b.Fatal(err)
				}
				if st.Size != seqSize {
					b.Fatalf("%s has %d bytes after writing %d", path, st.Size, seqSize)
				}
				if err := os.Remove(path); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkSequentialRead256MiB(b *testing.B) {
	for _, tgt := range seqTargets(b) {
		b.Run(tgt.name, func(b *testing.B) {
			buf := make([]byte, seqChunk)
			path := filepath.Join(tgt.dir, "seq-read")
			seqWrite(b, path, buf)
			b.Cleanup(func() { os.Remove(path) })
			b.SetBytes(seqSize)
			b.ResetTimer()
			for range b.N {
				seqRead(b, path, buf)
			}
		})
	}
}
