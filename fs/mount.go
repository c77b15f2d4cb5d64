package fs

import (
	"fmt"
	"log"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/tempfs/tempfs/fs/owner"
	"golang.org/x/sys/unix"
)

// MountConfig is how the tree is presented to the kernel.
type MountConfig struct {
	// AllowOther lets other users in.
	AllowOther bool
	// DefaultPermissions makes the kernel check permissions against the modes tempfs answers. The daemon does
	// not check them itself, so it must be on whenever anyone but a fully privileged root can reach the mount.
	DefaultPermissions bool
	// Options are extra -o options for the kernel; the mount flags among them (ro, noatime, ...) and fsname=
	// are read as mountopts.go says.
	Options []string
	// Debug logs every FUSE request.
	Debug bool
}

// Mount is a served tempfs.
type Mount struct {
	server     *fuse.Server
	fs         *FS
	mountpoint string
	// raw is what the server serves: the gate and journal of a take-over are there.
	raw *recordingFS
	// opts are the server's options; a server adopting the connection must use the same (adoptServer).
	opts *fuse.MountOptions
	// fd is the /dev/fuse descriptor the server reads (devfuse.go); viaHelper: fusermount3 mounted it.
	fd        int
	viaHelper bool
	// initRecord is the INIT request the kernel sent, initReply go-fuse's answer.
	initRecord, initReply []byte
	// exportedOwners are the owners of the last ExportState, in the order its state numbers them.
	exportedOwners []*owner.Owner
}

// fsName is the mount's subtype, and its source unless fsname= gives one: the kernel lists every tempfs mount
// as type fuse.tempfs, which is how `tempfs unmount` tells tempfs mounts from others (IsTempfs).
const fsName = "tempfs"

// maxWrite is the largest request the kernel sends: 1 MiB requests halve the round trips of bulk I/O
// compared to go-fuse's 128 KiB default (docs/kernel.md, Data path: 644 against 369 MiB/s).
const maxWrite = 1 << 20

// MountFS serves fsys at mountpoint and returns once the kernel has answered INIT, so that the mount is ready.
func MountFS(mountpoint string, fsys *FS, cfg MountConfig) (*Mount, error) {
	nodeOpts, raw := fsys.serving(cfg)
	// tempfs mounts and keeps the /dev/fuse descriptor itself, and go-fuse serves it as /dev/fd/N: a
	// take-over hands that descriptor on (devfuse.go).
	conn, err := openConnection(mountpoint, &nodeOpts.MountOptions)
	if err != nil {
		return nil, err
	}
	if conn.helperSaid != "" {
		fsys.log.Warn("fusermount3 mounted, and said", "output", conn.helperSaid)
	}
	serverOpts := serverOptions(&nodeOpts.MountOptions)
	server, err := fuse.NewServer(raw, magicMountpoint(conn.fd), serverOpts)
	if err != nil {
		// go-fuse closed the descriptor; the mount is left without a server.
		_ = unmountConnection(mountpoint, conn.viaHelper, true)
		return nil, err
	}
	if err := touchReadBuffers(server); err != nil {
		fsys.log.Warn("go-fuse's read buffers cannot be made present: a request read at the moment the daemon is killed may fail with EIO", "err", err)
	}
	m := &Mount{server: server, fs: fsys, mountpoint: mountpoint, raw: raw, opts: serverOpts, fd: conn.fd,
		viaHelper: conn.viaHelper, initRecord: recordInit(server)}
	if m.initReply, err = initReplyOf(m.initRecord, serverOpts); err != nil {
		fsys.log.Warn("go-fuse's INIT reply not recorded: this mount cannot be taken over", "err", err)
	}
	go server.Serve()
	if err := pollHack(mountpoint); err != nil {
		_ = m.Unmount()
		return nil, err
	}
	fsys.directWrites.Store(server.KernelSettings().Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0)
	if want := uint64(fuse.CAP_POSIX_ACL | fuse.CAP_DONT_MASK); cfg.DefaultPermissions && server.KernelSettings().Flags64()&want != want {
		fsys.acl.Store(false)
		fsys.log.Warn("the kernel offers no POSIX ACLs to FUSE; setfacl answers EOPNOTSUPP", "init_flags", fmt.Sprintf("%#x", server.KernelSettings().Flags64()))
	}
	raiseReadAhead(mountpoint, fsys.log)
	CloseOnExec()
	return m, nil
}

// serving is what go-fuse serves for fsys with cfg: its options and the chain of wrappers over the node tree
// (recordingFS, umaskFS with ACLs, tableFS, go-fuse's bridge). A mount and a take-over build it alike.
func (fsys *FS) serving(cfg MountConfig) (*fusefs.Options, *recordingFS) {
	flags, opts, source, atime := mountOptions(cfg.Options)
	if cfg.DefaultPermissions {
		opts = append([]string{"default_permissions"}, opts...)
	}
	if source == "" {
		source = fsName
	}
	fsys.atime = atime
	stdLog := log.New(slogWriter{fsys.log}, "", 0)
	nodeOpts := &fusefs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:  cfg.AllowOther,
			Options:     opts,
			FsName:      source,
			Name:        fsName,
			MaxWrite:    maxWrite,
			DirectMount: os.Geteuid() == 0,

			// The flags of a root mount (a user mount passes them to fusermount3 as options).
			DirectMountFlags: flags,
			// KILLPRIV_V2: the kernel stops asking GETXATTR security.capability before every write (tempfs
			// drops suid/sgid itself, see attrs.killPrivLocked). ATOMIC_O_TRUNC: open(O_TRUNC) truncates
			// in OPEN instead of a separate SETATTR round trip. READDIRPLUS_AUTO: the kernel asks for
			// attributes with directory entries only when lookups follow (as ls -l), and plain READDIR,
			// five times denser, otherwise: listing 5,000 names went from 10.2 to 3.8 ms.
			// DIRECT_IO_ALLOW_MMAP: files stay mmap-able through handles opened with FOPEN_DIRECT_IO
			// (see handle.directIO); without it tempfs opens no handle so.
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_READDIRPLUS_AUTO |
				fuse.CAP_DIRECT_IO_ALLOW_MMAP | aclCapabilities(cfg.DefaultPermissions),
			// POSIX ACLs (acl.go) where the kernel checks permissions anyway: FUSE_POSIX_ACL turns
			// default_permissions on, which a root mount without allow_other leaves off to save a GETATTR
			// before lookups (cmd/tempfs, prepare); such a mount, reachable by root alone, has no ACLs.
			EnableAcl: cfg.DefaultPermissions,
			// No automatic page-cache invalidation on mtime changes: every change of file data goes through
			// this kernel (writes, truncates, fallocate, mmap), so cached pages stay right, and files opened
			// with FOPEN_KEEP_CACHE keep them across opens (a file read again sends no READ).
			ExplicitDataCacheControl: true,
			Debug:                    cfg.Debug,
			Logger:                   stdLog,
			PanicHandler: func(v any) fuse.Status {
				fsys.log.Error("recovered panic in a request; answering EIO", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				return fuse.EIO
			},
		},
		// Timeouts stay nil: go-fuse's global timeouts would override the 0 that template entries need
		// (docs/kernel.md, Templates); every answer sets its own.
		NullPermissions: true,
		Logger:          stdLog,
	}
	nodeFS := fsys.rawFS(nodeOpts)
	if cfg.DefaultPermissions {
		nodeFS = umaskFS{nodeFS}
		fsys.acl.Store(true) // before the first request; taken back by MountFS if the kernel does not agree
	}
	raw := &recordingFS{fs: nodeFS, rec: fsys.requests, handleKnown: fsys.handleKnown, fsys: fsys}
	effectiveMaxWrite(&nodeOpts.MountOptions)
	return nodeOpts, raw
}

// aclCapabilities is FUSE_DONT_MASK when ACLs are on: the kernel then leaves the umask to the filesystem,
// which must not apply it under a default ACL (acl.go, inheritACL).
func aclCapabilities(on bool) uint64 {
	if on {
		return fuse.CAP_DONT_MASK
	}
	return 0
}

// CloseOnExec marks every descriptor of the process close-on-exec. go-fuse opens the FUSE device (and
// /dev/null for splicing) without that flag, so a program the daemon starts (tempfs run's CMD) inherited
// /dev/fuse: a child holding it keeps the connection alive after the daemon dies, and then hangs in its own
// exit, waiting for an answer to FLUSH that nobody reads. Called after mounting, and before starting children.
func CloseOnExec() {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		// Kernels before 5.11: mark them one by one.
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				syscall.CloseOnExec(fd)
			}
		}
	}
}

// Unmount detaches the mount if nothing uses it, and returns once the server has stopped; it fails with EBUSY
// otherwise. go-fuse's own Server.Unmount cannot: it serves /dev/fd/N and does not know the mountpoint.
func (m *Mount) Unmount() error {
	if err := unmountRetrying(m.mountpoint, m.viaHelper); err != nil {
		return err
	}
	m.server.Wait()
	return nil
}

// Detach lazily unmounts: the name goes now, open handles keep working, and Wait returns after the last one.
func (m *Mount) Detach() error { return unmountConnection(m.mountpoint, m.viaHelper, true) }

// DeviceFD is the /dev/fuse descriptor of the mount's connection, the one go-fuse reads. It belongs to the
// server, which closes it when it stops: a take-over passes a duplicate (SCM_RIGHTS does).
func (m *Mount) DeviceFD() int { return m.fd }

// InitRecord is the INIT request the kernel sent on this connection, header included, as go-fuse read it:
// a new server adopting the connection replays it (adoptServer).
func (m *Mount) InitRecord() []byte { return m.initRecord }

// InitReply is go-fuse's reply to InitRecord, header included: adoptServer refuses a server that answers
// otherwise. Nil if it could not be recorded.
func (m *Mount) InitReply() []byte { return m.initReply }

// Wait blocks until the kernel has closed the connection (after an unmount, or when the last handle of a
// detached mount is gone).
func (m *Mount) Wait() { m.server.Wait() }

// Stats of the mounted tree.
func (m *Mount) Stats() Stats { return m.fs.Stats() }

// slogWriter passes go-fuse's log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimRight(string(p), "\n"), "from", "go-fuse")
	return len(p), nil
}

// Mountpoint is where the tree is mounted.
func (m *Mount) Mountpoint() string { return m.mountpoint }

// readAheadKiB is the read-ahead tempfs asks for on its mount: one READ request of the largest size the
// kernel sends (MaxWrite, also the negotiated max_pages), instead of the 128 KiB FUSE offers at INIT. A cached
// read of a RAM-resident file is served by one round trip per MiB instead of one per 128 KiB.
const readAheadKiB = maxWrite >> 10

// raiseReadAhead sets the mount's read-ahead through its backing device info in sysfs, the only place the
// kernel takes a value above the one it offered at INIT. It affects this mount alone. Without the right to
// write there (a user mount), the kernel's default stays.
func raiseReadAhead(mountpoint string, log *slog.Logger) {
	dev, err := mountDevice(mountpoint)
	if err == nil {
		err = os.WriteFile(filepath.Join("/sys/class/bdi", dev, "read_ahead_kb"), []byte(strconv.Itoa(readAheadKiB)), 0)
	}
	if err != nil {
		log.Debug("read-ahead left at the kernel's default", "err", err)
	}
}
