package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/handover"
	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/fs/reqstats"
	"github.com/tempfs/tempfs/spool"
)

// Take-over (docs/takeover.md): the daemon serving a mount freezes, describes itself (ExportState) and hands
// that and its descriptors to a new daemon, which rebuilds everything (AdoptMount), tells the old one to go,
// and serves the same FUSE connection once it is gone (ServeAdopted).

// StateVersion is the version of TakeoverState. It changes with any change of meaning; a binary takes over
// only from the versions it reads.
const StateVersion = 1

// fuseFDName names the FUSE connection among the descriptors handed over.
const fuseFDName = "fuse"

// TakeoverState is a mount as data: everything a new daemon needs beside the descriptors.
type TakeoverState struct {
	Tree    treeState           `json:"tree"`
	Pool    spool.PoolState     `json:"pool"`
	Owners  *owner.TrackerState `json:"owners,omitempty"`
	Journal []JournalEntry      `json:"journal,omitempty"`
	// Init is the INIT request the kernel sent on the connection, InitReply the answer it got: the new
	// daemon's go-fuse must answer it the same.
	Init      []byte `json:"init"`
	InitReply []byte `json:"init_reply"`
	// What the kernel negotiated and the daemon learned while serving.
	Passthrough  bool `json:"passthrough"`
	DirectWrites bool `json:"direct_writes"`
	ACL          bool `json:"acl"`
	// Requests are the request counters, which go on.
	Requests reqstats.State `json:"requests"`
}

// Freeze stops the mount for a take-over: requests from now on are parked unanswered (the new daemon gets
// them again from the kernel), and it returns once those being served are done and no background work (the
// reaper, owner removal, a move of the memory cap) runs. Thaw undoes it. On error nothing is frozen.
func (m *Mount) Freeze(ctx context.Context) error {
	if m.initReply == nil {
		return errors.New("this mount's INIT reply was not recorded: it cannot be taken over")
	}
	if err := m.raw.freeze(ctx); err != nil {
		return err
	}
	m.fs.background.Lock()
	return nil
}

// Thaw lets a frozen mount serve again (the take-over was refused or failed).
func (m *Mount) Thaw() {
	m.fs.background.Unlock()
	m.raw.thaw()
}

// ExportState describes a frozen mount and names the descriptors that go with it (the FUSE connection,
// "fuse", and the spool's). They stay this process's: handover.Send passes copies.
func (m *Mount) ExportState() (*TakeoverState, []handover.NamedFD, error) {
	fsys := m.fs
	x, err := fsys.exportTree()
	if err != nil {
		return nil, nil, err
	}
	m.exportedOwners = x.owners
	st := &TakeoverState{Tree: x.state, Journal: m.raw.journalEntries(), Init: m.initRecord, InitReply: m.initReply,
		Passthrough: fsys.passthrough.Load(), DirectWrites: fsys.directWrites.Load(), ACL: fsys.acl.Load(),
		Requests: fsys.requests.Export()}
	pool, descriptors, err := fsys.pool.Export(x.files, x.accounts)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	st.Pool = pool
	if fsys.owners != nil {
		owners, err := fsys.owners.tracker.Export(x.owners)
		if err != nil {
			return nil, nil, fmt.Errorf("owners: %w", err)
		}
		st.Owners = &owners
	}
	fds := []handover.NamedFD{{Name: fuseFDName, FD: m.fd}}
	for _, d := range descriptors {
		fds = append(fds, handover.NamedFD{Name: d.Name, FD: d.FD})
	}
	return st, fds, nil
}

// AdoptMount rebuilds a mount taken over: st and the descriptors fds (by name, as received) from the daemon
// serving mountpoint. opts and cfg are the mount's (the new daemon takes them from the old one's settings);
// opts.Pool is ignored: the pool is st's. Every descriptor the state names is taken out of fds (and closed on
// error); the rest stay the caller's. The mount returned does not serve yet: the caller tells the old daemon
// to go, waits for it to be gone, then calls ServeAdopted.
func AdoptMount(mountpoint string, opts Options, cfg MountConfig, scope owner.Scope, st *TakeoverState, fds map[string]int) (m *Mount, err error) {
	return adoptMount(mountpoint, opts, cfg, scope, st, fds, false)
}

// adoptMount is AdoptMount; recovered: st comes from a crash record (the pool's counters follow from its files).
func adoptMount(mountpoint string, opts Options, cfg MountConfig, scope owner.Scope, st *TakeoverState, fds map[string]int, recovered bool) (m *Mount, err error) {
	fd, ok := fds[fuseFDName]
	if !ok {
		return nil, errors.New("no FUSE descriptor among those handed over")
	}
	delete(fds, fuseFDName)
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	importPool := spool.ImportPool
	if recovered {
		importPool = spool.ImportRecoveredPool
	}
	pool, files, accounts, err := importPool(st.Pool, fds, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if err != nil {
			_ = pool.Config().Store.Close()
		}
	}()
	opts.Pool = pool
	fsys := New(opts)
	fsys.passthrough.Store(st.Passthrough)
	fsys.directWrites.Store(st.DirectWrites)
	fsys.acl.Store(st.ACL)
	if err := fsys.requests.Add(st.Requests); err != nil {
		return nil, err
	}
	var owners []*owner.Owner
	if scope != owner.None {
		if st.Owners == nil {
			return nil, fmt.Errorf("--owner %s, but the state has no owners", scope)
		}
		if err := fsys.watchOwners(scope, false); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				fsys.owners.tracker.Close()
			}
		}()
		if owners, err = fsys.owners.tracker.Import(*st.Owners); err != nil {
			return nil, fmt.Errorf("owners: %w", err)
		}
	} else if st.Owners != nil {
		return nil, errors.New("the state has owners, and no --owner scope")
	}
	nodeOpts, raw := fsys.serving(cfg)
	nodes, err := fsys.importTree(&st.Tree, files, accounts, owners)
	if err != nil {
		return nil, err
	}
	handles, err := fsys.importHandles(&st.Tree, nodes)
	if err != nil {
		return nil, err
	}
	serverOpts := serverOptions(&nodeOpts.MountOptions)
	server, err := adoptServer(fd, st.Init, raw, serverOpts, st.InitReply)
	if err != nil {
		return nil, err
	}
	if err := fsys.adopt(raw.fs.(bridgeOf).bridge(), server, handles); err != nil {
		return nil, err
	}
	raw.loadJournal(st.Journal)
	m = &Mount{server: server, fs: fsys, mountpoint: mountpoint, raw: raw, opts: serverOpts, fd: fd,
		viaHelper: syscall.Geteuid() != 0, initRecord: st.Init, initReply: st.InitReply}
	return m, nil
}

// HeldForgets are the FORGETs the kernel sent since the freeze: the new daemon applies them (ApplyForgets)
// before it serves. A FORGET read after this call, before the process exits, is lost (see docs/takeover.md).
func (m *Mount) HeldForgets() []Forget { return m.raw.heldForgets() }

// ApplyForgets applies the FORGETs the old daemon held, before this one serves.
func (m *Mount) ApplyForgets(fs []Forget) { m.raw.applyForgets(fs) }

// ServeAdopted starts serving a mount AdoptMount rebuilt, once the old daemon is gone: the kernel is asked to
// send again what the old daemon read and did not answer, before this one reads anything (a resend while
// serving would re-queue this daemon's own requests in flight).
func (m *Mount) ServeAdopted() error {
	if err := notifyResend(m.fd); err != nil {
		return err
	}
	go m.server.Serve()
	if m.fs.owners != nil {
		go m.fs.removeGoneOwners()
	}
	CloseOnExec()
	return nil
}

// bridgeOf is what sits right below recordingFS: it gives go-fuse's bridge, which adopt drives directly.
type bridgeOf interface {
	bridge() fuse.RawFileSystem
}

func (t tableFS) bridge() fuse.RawFileSystem { return t.RawFileSystem }

func (u umaskFS) bridge() fuse.RawFileSystem { return u.RawFileSystem.(bridgeOf).bridge() }

// MountDevice is the device number ("MAJ:MIN") of the mount at mountpoint.
func MountDevice(mountpoint string) (string, error) { return mountDevice(mountpoint) }

// FS is the mounted tree.
func (m *Mount) FS() *FS { return m.fs }

// Store is the disk store of the tree's pool.
func (fsys *FS) Store() *spool.Store { return fsys.pool.Config().Store }
