package fs

import (
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tempfs/tempfs/fs/owner"
)

// ownerProcess starts a process that stays alive, to act as an owner, and kills it at cleanup.
func ownerProcess(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// as is a request header from process pid.
func as(pid int, node uint64) fuse.InHeader {
	return fuse.InHeader{NodeId: node, Caller: fuse.Caller{Owner: testCaller.Owner, Pid: uint32(pid)}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOwnerGoneRemovesItsEntries drives the node tree without a kernel: a gone owner's file goes at once and
// the kernel is told; its directory holding a live owner's file stays until that file is unlinked.
func TestOwnerGoneRemovesItsEntries(t *testing.T) {
	tt := newTestTree(t)
	if err := tt.fsys.WatchOwners(owner.Process); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tt.fsys.StopOwners)
	gone, live := ownerProcess(t), ownerProcess(t)

	var file fuse.CreateOut
	in := &fuse.CreateIn{InHeader: as(gone.Process.Pid, fuse.FUSE_ROOT_ID), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}
	if st := tt.raw.Create(nil, in, "theirs", &file); st != fuse.OK {
		t.Fatal(st)
	}
	tt.release(file.NodeId, file.Fh)
	var dir fuse.EntryOut
	if st := tt.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: as(gone.Process.Pid, fuse.FUSE_ROOT_ID), Mode: 0o755}, "shared", &dir); st != fuse.OK {
		t.Fatal(st)
	}
	var inner fuse.CreateOut
	in = &fuse.CreateIn{InHeader: as(live.Process.Pid, dir.NodeId), Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}
	if st := tt.raw.Create(nil, in, "mine", &inner); st != fuse.OK {
		t.Fatal(st)
	}
	tt.release(inner.NodeId, inner.Fh)

	_ = gone.Process.Kill()
	_ = gone.Wait()
	waitFor(t, "the gone owner's file removed", func() bool { return !slices.Contains(tt.names(t), "theirs") })
	tt.server.mu.Lock()
	told := slices.Contains(tt.server.deleted, "theirs")
	tt.server.mu.Unlock()
	if !told {
		t.Error("the kernel was not told that the file went")
	}
	if !slices.Contains(tt.names(t), "shared") {
		t.Fatal("the gone owner's directory went while it held a live owner's file")
	}
	h := as(live.Process.Pid, dir.NodeId)
	if st := tt.raw.Unlink(nil, &h, "mine"); st != fuse.OK {
		t.Fatal(st)
	}
	waitFor(t, "the emptied directory of the gone owner removed", func() bool { return !slices.Contains(tt.names(t), "shared") })
	if st := tt.fsys.Stats(); st.EntriesRemovedWithOwner != 2 || st.Removed["owner_gone"] != 2 || st.OwnersGone != 1 {
		t.Errorf("stats: %d entries removed with their owner, %d names, %d owners gone; want 2, 2, 1",
			st.EntriesRemovedWithOwner, st.Removed["owner_gone"], st.OwnersGone)
	}
}
