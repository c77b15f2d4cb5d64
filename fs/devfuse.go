package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The FUSE connection, owned by tempfs: a take-over hands the open /dev/fuse file to a new process, and go-fuse
// keeps its descriptor unexported. So tempfs opens and mounts /dev/fuse itself (mount(2) as root, fusermount3
// for users, as go-fuse would) and gives go-fuse the magic mountpoint /dev/fd/N, which go-fuse reads without
// mounting anything. The INIT request the kernel sent, and go-fuse's reply to it, are kept: a new process
// replays that INIT into its own go-fuse server (adoptServer), since the kernel sends INIT once per
// connection, and refuses to serve if its go-fuse answers otherwise. The cost of owning the descriptor is that
// go-fuse's Server.Unmount cannot unmount (it does not know the mountpoint): Mount.Unmount does it.

// fuseConn is a mounted FUSE connection before go-fuse serves it.
type fuseConn struct {
	fd int
	// viaHelper: fusermount3 mounted it, so only fusermount3 -u may unmount it (a user may not umount(2)).
	viaHelper bool
	// helperSaid is what fusermount3 wrote to stderr on a successful mount (a warning), on one line.
	helperSaid string
}

// openConnection mounts a new FUSE connection at mountpoint with the source, type, flags and options go-fuse
// v2.12.1 would use for opts (its mountDirect, then its callFusermount when that fails or for users), and
// returns the /dev/fuse descriptor (close-on-exec). opts must have been through effectiveMaxWrite.
func openConnection(mountpoint string, opts *fuse.MountOptions) (fuseConn, error) {
	if opts.DirectMount {
		fd, err := mountDirect(mountpoint, opts)
		if err == nil {
			return fuseConn{fd: fd}, nil
		}
		if opts.Debug {
			opts.Logger.Printf("mount: failed to do direct mount: %s", err)
		}
	}
	return mountWithHelper(mountpoint, opts)
}

// mountDirect opens /dev/fuse and mounts it, as go-fuse's mountDirect does: the source is fsname (or the
// subtype), the type fuse.SUBTYPE, and the options the kernel's fd, rootmode, user_id, group_id and max_read,
// then the caller's, with [no]dev, [no]suid and [no]exec turned into flags.
func mountDirect(mountpoint string, opts *fuse.MountOptions) (int, error) {
	source := opts.FsName
	if source == "" {
		source = opts.Name
	}
	var flags uintptr = syscall.MS_NOSUID | syscall.MS_NODEV
	if opts.DirectMountFlags != 0 {
		flags = opts.DirectMountFlags
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return -1, err
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	r := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", opts.MaxWrite),
	}
	for _, o := range opts.Options {
		switch o {
		case "nodev":
			flags |= syscall.MS_NODEV
		case "dev":
			flags &^= syscall.MS_NODEV
		case "nosuid":
			flags |= syscall.MS_NOSUID
		case "suid":
			flags &^= syscall.MS_NOSUID
		case "noexec":
			flags |= syscall.MS_NOEXEC
		case "exec":
			flags &^= syscall.MS_NOEXEC
		default:
			r = append(r, o)
		}
	}
	if opts.AllowOther {
		r = append(r, "allow_other")
	}
	if opts.Debug {
		opts.Logger.Printf("mountDirect: calling syscall.Mount(%q, %q, %q, %#x, %q)",
			source, mountpoint, "fuse."+opts.Name, flags, strings.Join(r, ","))
	}
	if err := syscall.Mount(source, mountpoint, "fuse."+opts.Name, flags, strings.Join(r, ",")); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// helperOptions are the -o options go-fuse gives fusermount3 (its optionsStrings), escaped.
func helperOptions(opts *fuse.MountOptions) string {
	r := append([]string(nil), opts.Options...)
	if opts.AllowOther {
		r = append(r, "allow_other")
	}
	if opts.FsName != "" {
		r = append(r, "fsname="+opts.FsName)
	}
	if opts.Name != "" {
		r = append(r, "subtype="+opts.Name)
	}
	r = append(r, fmt.Sprintf("max_read=%d", opts.MaxWrite))
	for i, s := range r {
		r[i] = strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `,`, `\,`)
	}
	return strings.Join(r, ",")
}

// fusermountBinary is fusermount3, or fusermount, from PATH or /bin.
func fusermountBinary() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		if p, err := exec.LookPath("/bin/" + name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mounting as a user needs fusermount3 (apt-get install fuse3)")
}

// mountWithHelper has fusermount3 open /dev/fuse and mount it, and receives the descriptor over the socket
// named by _FUSE_COMMFD, as go-fuse's callFusermount does. fusermount3's stderr is caught: on failure it is
// the error (a MountHelperError, its words being the cause a user can act on), on success a warning.
func mountWithHelper(mountpoint string, opts *fuse.MountOptions) (fuseConn, error) {
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fuseConn{}, os.NewSyscallError("socketpair", err)
	}
	local, remote := os.NewFile(uintptr(pair[0]), "fusermount-local"), os.NewFile(uintptr(pair[1]), "fusermount-remote")
	defer local.Close()
	defer remote.Close()
	bin, err := fusermountBinary()
	if err != nil {
		return fuseConn{}, err
	}
	args := []string{mountpoint, "-o", helperOptions(opts)}
	if opts.Debug {
		opts.Logger.Printf("callFusermount: executing %q", append([]string{bin}, args...))
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"_FUSE_COMMFD=3"}
	cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout
	cmd.Stderr = &limitedWriter{w: &stderr, n: maxHelperOutput}
	cmd.ExtraFiles = []*os.File{remote}
	err = cmd.Run()
	said := oneLine(stderr.Bytes())
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("fusermount exited with code %v", exit.Sys())
		}
		if said != "" {
			return fuseConn{}, &MountHelperError{Message: said, Err: err}
		}
		return fuseConn{}, err
	}
	remote.Close()
	fd, err := receiveDescriptor(local)
	if err != nil {
		return fuseConn{}, fmt.Errorf("fusermount3 sent no /dev/fuse descriptor: %w", err)
	}
	unix.CloseOnExec(fd)
	return fuseConn{fd: fd, viaHelper: true, helperSaid: said}, nil
}

// limitedWriter keeps the first n bytes written and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// receiveDescriptor reads the one descriptor fusermount3 sends.
func receiveDescriptor(local *os.File) (int, error) {
	conn, err := net.FileConn(local)
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	var data [4]byte
	control := make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := conn.(*net.UnixConn).ReadMsgUnix(data[:], control)
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(control[:oobn])
	if err != nil {
		return -1, err
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return -1, err
		}
		fds = append(fds, got...)
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("%d descriptors received, want 1", len(fds))
	}
	return fds[0], nil
}

// effectiveMaxWrite sets opts.MaxWrite to what go-fuse's NewServer would use (it caps the value at the
// kernel's max_pages_limit), since the mount options and the INIT reply carry it.
func effectiveMaxWrite(opts *fuse.MountOptions) {
	limit := 256
	if b, err := os.ReadFile("/proc/sys/fs/fuse/max_pages_limit"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = n
		}
	}
	if opts.MaxWrite <= 0 {
		opts.MaxWrite = 128 << 10 // go-fuse's default
	}
	opts.MaxWrite = min(opts.MaxWrite, limit*syscall.Getpagesize())
}

// unmountConnection unmounts a connection mounted by openConnection: umount2 for a direct mount, and
// fusermount3 -u for one fusermount3 made or when umount2 is refused (as go-fuse's unmount does).
func unmountConnection(mountpoint string, viaHelper, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	if !viaHelper {
		if err := syscall.Unmount(mountpoint, flags); err == nil {
			return nil
		}
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	return fusermount(append(args, mountpoint)...)
}

// unmountRetrying unmounts, trying again a few times over about 0.1 s, as go-fuse's Server.Unmount did: the
// kernel sends RELEASE asynchronously, so a file closed a moment ago can keep the mount busy.
func unmountRetrying(mountpoint string, viaHelper bool) error {
	var err error
	delay := time.Duration(0)
	for try := 0; try < 5; try++ {
		if err = unmountConnection(mountpoint, viaHelper, false); err == nil {
			return nil
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	return err
}

// magicMountpoint is the mountpoint that makes go-fuse serve descriptor fd without mounting.
func magicMountpoint(fd int) string { return "/dev/fd/" + strconv.Itoa(fd) }

// serverOptions is opts for a go-fuse server given a magic mountpoint: go-fuse must not mount anything.
func serverOptions(opts *fuse.MountOptions) *fuse.MountOptions {
	o := *opts
	o.DirectMount, o.DirectMountStrict = false, false
	return &o
}

// initRecordSize is the size of an INIT record: the request header and fuse_init_in, as go-fuse keeps them
// (fuse.InitIn).
const initRecordSize = int(unsafe.Sizeof(fuse.InitIn{}))

// recordInit is the INIT request server answered, as the kernel sent it (header included).
func recordInit(server *fuse.Server) []byte {
	return bytes.Clone(structBytes(server.KernelSettings()))
}

// pollHackName is the name go-fuse answers itself (fuse/poll.go), so that opening it makes the kernel send
// POLL once and learn from the ENOSYS answer not to send it again: Go's runtime polls files it opens, and a
// POLL waiting for a reader while every thread is taken would deadlock the daemon.
const pollHackName = ".go-fuse-epoll-hack"

// pollHack is go-fuse's WaitMount step that a magic mountpoint skips: open the poll-hack file under the real
// mountpoint and poll it.
func pollHack(mountpoint string) error {
	fd, err := syscall.Open(mountpoint+"/"+pollHackName, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return syscall.Close(fd)
}

// replayInit starts a go-fuse server on one end of a socket pair carrying the INIT request initRecord, and
// returns the server (not serving), the descriptor number it reads, and the reply it wrote. go-fuse calls
// raw.Init with this server. The descriptor belongs to the server's *os.File (go-fuse closes it, or its
// finalizer does): the caller never closes it.
func replayInit(raw fuse.RawFileSystem, initRecord []byte, opts *fuse.MountOptions) (*fuse.Server, int, []byte, error) {
	if len(initRecord) != initRecordSize {
		return nil, -1, nil, fmt.Errorf("INIT record of %d bytes, want %d", len(initRecord), initRecordSize)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, nil, os.NewSyscallError("socketpair", err)
	}
	defer unix.Close(pair[1])
	if _, err := unix.Write(pair[1], initRecord); err != nil {
		unix.Close(pair[0])
		return nil, -1, nil, fmt.Errorf("writing the INIT record: %w", err)
	}
	server, err := fuse.NewServer(raw, magicMountpoint(pair[0]), serverOptions(opts))
	if err != nil {
		// go-fuse closed pair[0] with its *os.File, or never took it.
		return nil, -1, nil, fmt.Errorf("go-fuse refused the replayed INIT: %w", err)
	}
	reply := make([]byte, 4096)
	n, err := unix.Read(pair[1], reply)
	if err != nil {
		return nil, -1, nil, fmt.Errorf("reading go-fuse's INIT reply: %w", err)
	}
	return server, pair[0], reply[:n], nil
}

// initReplyOf is the reply go-fuse gives initRecord with opts: the reply is not kept anywhere, so the INIT is
// replayed into a throwaway server, which never serves.
func initReplyOf(initRecord []byte, opts *fuse.MountOptions) ([]byte, error) {
	_, _, reply, err := replayInit(fuse.NewDefaultRawFileSystem(), initRecord, opts)
	return reply, err
}

// adoptServer makes a go-fuse server for raw that serves the live FUSE connection fd, whose INIT was answered
// by another server (of this or an earlier process): the kernel sends INIT once per connection. It replays
// initRecord (Mount.InitRecord) into a new server through a socket pair, compares go-fuse's reply with
// wantReply (Mount.InitReply) byte for byte, and refuses on any difference: the negotiation is fixed for the
// connection's life, and a go-fuse that negotiates otherwise would read requests the kernel lays out
// differently. Then it moves a duplicate of fd onto the descriptor number the server reads (dup3). The server
// is returned not serving: the caller sends notifyResend, once the old server can read no more, and then
// calls Serve. fd stays the caller's. opts are the first server's (Mount's); go-fuse called raw.Init with
// the returned server, also on a refusal, after which raw must not be used.
func adoptServer(fd int, initRecord []byte, raw fuse.RawFileSystem, opts *fuse.MountOptions, wantReply []byte) (*fuse.Server, error) {
	server, n, reply, err := replayInit(raw, initRecord, opts)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(reply, wantReply) {
		return nil, fmt.Errorf("this go-fuse answers the connection's INIT otherwise (%x, the mount's server answered %x): the negotiation cannot change on a live connection", reply, wantReply)
	}
	if err := unix.Dup3(fd, n, unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("dup3 of the FUSE descriptor: %w", err)
	}
	if err := touchReadBuffers(server); err != nil {
		return nil, err
	}
	return server, nil
}

// notifyResendCode is FUSE_NOTIFY_RESEND (fuse.h). A notification is a reply with unique id 0 whose error
// field holds the code, positive (go-fuse's fuse.NOTIFY_RESEND is the code negated, -7).
const notifyResendCode = -fuse.NOTIFY_RESEND

// notifyResend asks the kernel to re-deliver every request of the connection fd that was read and not yet
// answered, with bit 63 of their unique ids set (FUSE_UNIQUE_RESEND). Measured on 6.18 to work without
// HAS_RESEND in the INIT reply. Send it only when nothing of this process is in flight on the connection:
// requests a server is processing are re-delivered too, and their first answer is then refused.
func notifyResend(fd int) error {
	h := fuse.OutHeader{Length: uint32(unsafe.Sizeof(fuse.OutHeader{})), Status: notifyResendCode}
	if _, err := unix.Write(fd, structBytes(&h)); err != nil {
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}
