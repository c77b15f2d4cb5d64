package spool

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestStat(t *testing.T) {
	pool := newTestPool(t, Config{MaxSize: 64 * kib, MemoryCap: mib})
	f := pool.NewFile()
	defer f.Close()
	if st := f.Stat(); st != (Stat{}) {
		t.Fatalf("empty file: %+v, want zero", st)
	}
	if _, err := f.WriteAt(make([]byte, 5000), 0); err != nil {
		t.Fatal(err)
	}
	if st := f.Stat(); st.Size != 5000 || st.Blocks == 0 || st.External || st.ModTime != 0 {
		t.Fatalf("RAM file: %+v, want size 5000, some blocks, not external", st)
	}
	if err := f.Rollover(); err != nil {
		t.Fatal(err)
	}
	f.NoteExternalWrite()
	fd, ok := f.PassthroughFd()
	if !ok {
		t.Fatal("no passthrough fd on disk")
	}
	// The kernel writes the backing file directly; only fstat can know.
	if _, err := unix.Pwrite(fd, []byte("tail"), 9000); err != nil {
		t.Fatal(err)
	}
	if st := f.Stat(); st.Size != 9004 || !st.External || st.ModTime == 0 {
		t.Fatalf("passthrough-written file: %+v, want size 9004, external, an mtime", st)
	}
}
