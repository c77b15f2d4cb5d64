package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/mountinfo"
)

// needRootMount skips a test that mounts for real unless it runs as root with /dev/fuse; under CI=true it
// fails instead, so that a CI machine that cannot run it does not pass it silently.
func needRootMount(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "needs root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "needs /dev/fuse"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// mountTestFS mounts a fresh tree with MountFS in a directory of the test's own, and unmounts it in Cleanup
// if the test did not.
func mountTestFS(t *testing.T) (*Mount, string) {
	t.Helper()
	needRootMount(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := MountFS(mp, newTestFS(t), MountConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, ok := mountinfo.Find(mp); ok {
			// A test that stopped half-way can leave requests of its own process unanswered, which would
			// hang its exit: abort the connection first.
			_ = AbortConnection(mp)
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
	return m, mp
}

// TestMountOwnsTheFUSEDescriptor: MountFS mounts /dev/fuse itself (type fuse.tempfs, as go-fuse mounted it),
// keeps the descriptor and the INIT exchange, and Mount.Unmount unmounts and waits for the server.
func TestMountOwnsTheFUSEDescriptor(t *testing.T) {
	m, mp := mountTestFS(t)
	mi, ok := mountinfo.Find(mp)
	if !ok || mi.FSType != "fuse."+fsName {
		t.Fatalf("mount at %s: %+v (listed %v), want type fuse.%s", mp, mi, ok, fsName)
	}
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", m.DeviceFD()))
	if err != nil || target != "/dev/fuse" {
		t.Fatalf("DeviceFD %d is %q (%v), want /dev/fuse", m.DeviceFD(), target, err)
	}
	if got := len(m.InitRecord()); got != initRecordSize {
		t.Fatalf("INIT record of %d bytes, want %d", got, initRecordSize)
	}
	var in fuse.InitIn
	copy(structBytes(&in), m.InitRecord())
	if in.Opcode != 26 || in.Major != 7 || in.Unique == 0 {
		t.Fatalf("INIT record is not an INIT: opcode %d, protocol %d.%d, unique %d", in.Opcode, in.Major, in.Minor, in.Unique)
	}
	reply := m.InitReply()
	var out fuse.OutHeader
	if len(reply) <= len(structBytes(&out)) {
		t.Fatalf("INIT reply of %d bytes", len(reply))
	}
	copy(structBytes(&out), reply)
	if out.Unique != in.Unique || out.Status != 0 || int(out.Length) != len(reply) {
		t.Fatalf("INIT reply header %+v (%d bytes) for request %d", out, len(reply), in.Unique)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("served"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if _, ok := mountinfo.Find(mp); ok {
		t.Fatal("still mounted after Unmount")
	}
}

// adoptChildEnv names, in the environment of a child test process, the mountpoint it mounts and hands over
// (TestAdoptServerChild).
const adoptChildEnv = "TEMPFS_TEST_ADOPT_CHILD"

// handedOver is what the child sends beside the /dev/fuse descriptor.
type handedOver struct {
	InitRecord, InitReply []byte
	// Opts are the child's server options, field by field, without their functions and logger.
	Opts map[string]json.RawMessage
}

// optsFields is opts as JSON values by field name, leaving out what JSON cannot carry (the logger, the panic
// handler).
func optsFields(t *testing.T, opts *fuse.MountOptions) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	v := reflect.ValueOf(opts).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.Type.Kind() == reflect.Func || f.Name == "Logger" {
			continue
		}
		b, err := json.Marshal(v.Field(i).Interface())
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name] = b
	}
	return out
}

// optsFrom is the inverse of optsFields.
func optsFrom(t *testing.T, fields map[string]json.RawMessage) *fuse.MountOptions {
	var opts fuse.MountOptions
	v := reflect.ValueOf(&opts).Elem()
	for name, b := range fields {
		if err := json.Unmarshal(b, v.FieldByName(name).Addr().Interface()); err != nil {
			t.Fatal(name, err)
		}
	}
	opts.Logger = log.New(io.Discard, "", 0)
	return &opts
}

// TestAdoptServerChild is not a test of its own: it is the first daemon of TestAdoptServerServesTheLiveConnection,
// run in a child process. It mounts with MountFS, writes a file through the mount, freezes, sends the
// connection to the parent over descriptor 3, waits until the parent's requests are parked in its gate, and
// exits without unmounting, as an outgoing daemon does.
func TestAdoptServerChild(t *testing.T) {
	mp := os.Getenv(adoptChildEnv)
	if mp == "" {
		return
	}
	m, err := MountFS(mp, newTestFS(t), MountConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "old"), []byte("first server"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.raw.freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := handedOver{InitRecord: m.InitRecord(), InitReply: m.InitReply(), Opts: optsFields(t, m.opts)}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(3, b, unix.UnixRights(m.DeviceFD()), nil, 0); err != nil {
		t.Fatal(err)
	}
	var n [1]byte
	if _, err := unix.Read(3, n[:]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the parent's requests to be parked", func() bool { return m.raw.gate.parked.Load() >= int64(n[0]) })
	os.Exit(0)
}

// TestAdoptServerServesTheLiveConnection: a child process mounts with MountFS, freezes and hands the connection
// over; this process adopts it with a go-fuse server for another tree (adoptServer), waits for the child's
// exit, resends and serves: the requests the child parked are answered, a file of the new tree is read
// through the mount, and the mount unmounts cleanly.
func TestAdoptServerServesTheLiveConnection(t *testing.T) {
	needRootMount(t)
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, ok := mountinfo.Find(mp); ok {
			// A test that stopped half-way can leave requests of its own process unanswered, which would
			// hang its exit: abort the connection first.
			_ = AbortConnection(mp)
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	child := exec.Command(os.Args[0], "-test.run", "^TestAdoptServerChild$", "-test.count", "1")
	child.Env = append(os.Environ(), adoptChildEnv+"="+mp, "TMPDIR="+dir)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	child.ExtraFiles = []*os.File{os.NewFile(uintptr(pair[1]), "peer")}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[1])
	childDone := make(chan error, 1)
	go func() { childDone <- child.Wait() }()
	t.Cleanup(func() { _ = child.Process.Kill(); <-childDone })

	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, 0)
	if err != nil || n == 0 {
		t.Fatalf("nothing from the child (%v)", err)
	}
	var st handedOver
	if err := json.Unmarshal(buf[:n], &st); err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("descriptors: %v, %v", fds, err)
	}
	fd := fds[0]
	defer unix.Close(fd)

	// The new tree, with one file.
	fsys2 := newTestFS(t)
	raw2 := &recordingFS{fs: fusefs.NewNodeFS(fsys2.Root(), &fusefs.Options{NullPermissions: true, FirstAutomaticIno: 2}), rec: fsys2.requests}
	h := fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID, Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: uint32(os.Getpid())}}
	var created fuse.CreateOut
	if st := raw2.Create(nil, &fuse.CreateIn{InHeader: h, Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}, "f", &created); st != fuse.OK {
		t.Fatal(st)
	}
	data := []byte("from the second server")
	wh := h
	wh.NodeId = created.NodeId
	if n, st := raw2.Write(nil, &fuse.WriteIn{InHeader: wh, Fh: created.Fh, Size: uint32(len(data))}, data); st != fuse.OK || int(n) != len(data) {
		t.Fatalf("write: %d, %v", n, st)
	}
	raw2.Release(nil, &fuse.ReleaseIn{InHeader: wh, Fh: created.Fh})

	opts := optsFrom(t, st.Opts)
	// An INIT reply that differs is refused.
	bad := bytes.Clone(st.InitReply)
	bad[len(bad)-1] ^= 1
	if _, err := adoptServer(fd, st.InitRecord, fuse.NewDefaultRawFileSystem(), opts, bad); err == nil {
		t.Fatal("adoptServer accepted an INIT reply that differs")
	}
	server2, err := adoptServer(fd, st.InitRecord, raw2, opts, st.InitReply)
	if err != nil {
		t.Fatal(err)
	}

	// Requests that the frozen child parks, then its exit.
	const parked = 3
	errs := make(chan error, parked)
	for i := 0; i < parked; i++ {
		go func() {
			_, err := os.Stat(filepath.Join(mp, fmt.Sprintf("p%d", i)))
			errs <- err
		}()
	}
	if _, err := unix.Write(pair[0], []byte{parked}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-childDone:
		childDone <- err
		if err != nil {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the child did not exit")
	}
	if _, ok := mountinfo.Find(mp); !ok {
		t.Fatal("the mount went with the child")
	}

	if err := notifyResend(fd); err != nil {
		t.Fatal(err)
	}
	go server2.Serve()
	for i := 0; i < parked; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a stat parked by the first server: %v, want ENOENT from the second", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d parked requests still unanswered after the resend", parked-i, parked)
		}
	}
	if n := raw2.rec.Kind(int(opLookup)).Count; n < parked {
		t.Fatalf("the second server answered %d LOOKUPs, want at least the %d re-delivered", n, parked)
	}
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("read through the mount: %q, %v; want %q", got, err, data)
	}
	if n := fsys2.requests.Kind(int(opRead)).Count; n == 0 {
		t.Fatal("the second server served no READ")
	}

	m := &Mount{server: server2, fs: fsys2, mountpoint: mp, raw: raw2, opts: opts, fd: fd}
	unmounted := make(chan error, 1)
	go func() { unmounted <- m.Unmount() }()
	select {
	case err := <-unmounted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Unmount did not return")
	}
	if _, ok := mountinfo.Find(mp); ok {
		t.Fatal("still mounted after Unmount")
	}
}

// TestReadPoolIsThere: go-fuse's Server keeps its read buffers in a sync.Pool field named readPool, whose New
// touchReadBuffers wraps; a go-fuse that moves it fails here, not by an EIO at a daemon's death.
func TestReadPoolIsThere(t *testing.T) {
	s := &fuse.Server{}
	pool, err := readPool(s)
	if err != nil {
		t.Fatal(err)
	}
	pool.New = func() any { return make([]byte, 3*pageSize+1) }
	if err := touchReadBuffers(s); err != nil {
		t.Fatal(err)
	}
	if b, ok := pool.Get().([]byte); !ok || len(b) != 3*pageSize+1 {
		t.Fatalf("the wrapped pool gives %T of %d bytes", b, len(b))
	}
}
