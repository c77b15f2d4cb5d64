package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/handover"
	"github.com/tempfs/tempfs/fs/owner"
)

// Take-over (docs/takeover.md): `tempfs mount --takeover MOUNTPOINT` starts a daemon that takes a live mount
// over from the daemon serving it, which then exits without unmounting. The serving daemon listens on an
// abstract Unix socket named after the mount's device number, for peers of its own user; the new one
// connects, receives the mount's settings, its state and descriptors (package handover), rebuilds it, says
// "ready", waits until the old daemon is gone, and serves. Until "ready" the old daemon can go on as if
// nothing happened, and does on any refusal or error.

// takeoverSocketPrefix names the socket: "@tempfs-takeover/MAJ:MIN" in the abstract namespace, which
// leaves nothing behind.
const takeoverSocketPrefix = "@tempfs-takeover/"

// takeoverFreezeTimeout bounds the wait for the requests in flight when freezing; takeoverReadyTimeout the
// new daemon's rebuilding.
const (
	takeoverFreezeTimeout = 10 * time.Second
	takeoverReadyTimeout  = 60 * time.Second
)

// takeoverSettings are the mount's settings: the new daemon serves with these, not with its own flags.
type takeoverSettings struct {
	MaxSize            int64         `json:"max_size"`
	Memory             int64         `json:"memory"`
	MemoryExplicit     int64         `json:"memory_explicit"`
	MemorySource       string        `json:"memory_source"`
	Disk               int64         `json:"disk"`
	Mode               uint32        `json:"mode"`
	Options            []string      `json:"options,omitempty"`
	KernelOptions      []string      `json:"kernel_options,omitempty"`
	AllowOther         bool          `json:"allow_other"`
	DefaultPermissions bool          `json:"default_permissions"`
	Debug              bool          `json:"debug"`
	FuseLogs           bool          `json:"fuse_logs"`
	MaxAge             time.Duration `json:"max_age"`
	Metrics            string        `json:"metrics,omitempty"`
	Owner              string        `json:"owner"`
	OwnerQuota         int64         `json:"owner_quota"`
	LogFile            string        `json:"log_file,omitempty"`
	StoreParent        string        `json:"store_parent"`
	StoreOnFUSE        bool          `json:"store_on_fuse"`
	RootUID            uint32        `json:"root_uid"`
	RootGID            uint32        `json:"root_gid"`
}

// takeoverMessage is the state handover carries.
type takeoverMessage struct {
	Settings takeoverSettings      `json:"settings"`
	Mount    *tempfs.TakeoverState `json:"mount"`
	// FrozenAt is when the old daemon froze, CLOCK_MONOTONIC nanoseconds: the new one reports the pause.
	FrozenAt int64 `json:"frozen_at"`
}

// takeoverAnswer is the new daemon's last word: ready (the old one exits) or why not.
type takeoverAnswer struct {
	Ready  bool   `json:"ready,omitempty"`
	Refuse string `json:"refuse,omitempty"`
}

// takeoverLast is the old daemon's last message, after "ready": the FORGETs the kernel sent since the freeze.
type takeoverLast struct {
	Forgets []tempfs.Forget `json:"forgets"`
}

// metricsFDName names the metrics listener among the descriptors handed over.
const metricsFDName = "metrics"

func monotonicNanos() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func (o *mountOptions) settings(p *prepared) takeoverSettings {
	return takeoverSettings{
		MaxSize: o.maxSize.bytes, Memory: p.memory, MemoryExplicit: p.memoryExplicit, MemorySource: p.memorySource,
		Disk: o.disk.bytes, Mode: uint32(o.mode), Options: o.options, KernelOptions: p.kernelOpts,
		AllowOther: p.allowOther, DefaultPermissions: p.defaultPermissions, Debug: o.debug, FuseLogs: o.fuseLogs,
		MaxAge: o.maxAge.d, Metrics: p.metricsAddr, Owner: o.owner.scope.String(), OwnerQuota: o.ownerQuota.bytes,
		LogFile: o.logFile, StoreParent: p.storeParent, StoreOnFUSE: p.storeOnFUSE,
		RootUID: uint32(os.Getuid()), RootGID: uint32(os.Getgid()),
	}
}

// takeoverSocket is the address of the take-over socket of the mount at mountpoint.
func takeoverSocket(mountpoint string) (string, error) {
	dev, err := tempfs.MountDevice(mountpoint)
	if err != nil {
		return "", err
	}
	return takeoverSocketPrefix + dev, nil
}

// listenForTakeover serves take-over requests for the mount until the process ends. A daemon that cannot
// listen (another daemon's socket of the same name: not possible for a live mount) logs it and serves on.
func (s *served) listenForTakeover(settings takeoverSettings) {
	addr, err := takeoverSocket(s.mount.Mountpoint())
	if err == nil {
		s.takeoverLn, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	}
	if err != nil {
		s.log.Warn("no take-over socket: this mount cannot be taken over", "err", err)
		return
	}
	go func() {
		for {
			conn, err := s.takeoverLn.AcceptUnix()
			if err != nil {
				return // closed at unmount
			}
			s.handOver(conn, settings)
			conn.Close()
		}
	}()
}

// peerCred is the credentials of the process at the other end of conn.
func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

// handOver hands the mount to the daemon at the other end of conn; it returns if the mount stays here,
// and exits the process once the new daemon is ready.
func (s *served) handOver(conn *net.UnixConn, settings takeoverSettings) {
	cred, err := peerCred(conn)
	if err != nil || cred.Uid != uint32(os.Geteuid()) {
		s.log.Warn("take-over refused: the peer is not this daemon's user", "err", err, "peer", cred)
		return
	}
	log := s.log.With("new_pid", cred.Pid)
	if s.mount.CrashRecorded() {
		// The holder (or systemd) would take this daemon's exit for an unmount and let the descriptors go.
		log.Warn("take-over refused: this mount keeps a crash record with a holder of its descriptors; upgrade it by restarting the daemon, which the holder follows with the new binary")
		return
	}
	log.Info("taking over: a new daemon asks for the mount")
	// Every page present before the freeze: a reader of /dev/fuse killed at the exit while the kernel copies
	// a request into a page it must fault in fails that request with EIO.
	if took, err := tempfs.LockMemoryForExit(); err != nil {
		log.Warn("mlockall failed: a request read at the exit may fail with EIO", "err", err)
	} else {
		log.Debug("memory locked", "took", took)
	}
	defer func() { _ = unix.Munlockall() }()
	ctx, cancel := context.WithTimeout(context.Background(), takeoverFreezeTimeout)
	defer cancel()
	frozenAt := monotonicNanos()
	if err := s.mount.Freeze(ctx); err != nil {
		log.Warn("take-over refused: could not freeze", "err", err)
		return
	}
	thaw := true
	defer func() {
		if thaw {
			s.mount.Thaw()
			log.Info("take-over did not happen; serving on")
		}
	}()
	st, fds, err := s.mount.ExportState()
	if err != nil {
		log.Error("take-over refused: describing the mount", "err", err)
		return
	}
	if s.metricsFile != nil {
		fds = append(fds, handover.NamedFD{Name: metricsFDName, FD: int(s.metricsFile.Fd())})
	}
	msg := handover.Message{Version: tempfs.StateVersion, From: "tempfs " + versionString(), FDs: fds,
		State: takeoverMessage{Settings: settings, Mount: st, FrozenAt: frozenAt}}
	if err := handover.Send(conn, msg); err != nil {
		log.Warn("take-over failed while sending", "err", err)
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(takeoverReadyTimeout))
	var answer takeoverAnswer
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err == nil {
		err = json.Unmarshal(buf[:n], &answer)
	}
	switch {
	case err != nil:
		log.Warn("take-over failed: no answer from the new daemon", "err", err)
		return
	case !answer.Ready:
		log.Warn("take-over refused by the new daemon", "reason", answer.Refuse)
		return
	}
	thaw = false
	last := takeoverLast{Forgets: s.mount.HeldForgets()}
	if b, err := json.Marshal(last); err == nil {
		_, _ = conn.Write(b)
	}
	log.Info("handed the mount over; exiting", "files", st.Tree.Counters.Files, "handles", len(st.Tree.Handles),
		"forgets_since_freeze", len(last.Forgets))
	// Nothing is unmounted or removed: the mount, its store and its descriptors are the new daemon's.
	os.Exit(0)
}

// takeoverFlagsAllowed are the flags --takeover may come with: the mount's settings are the old daemon's.
var takeoverFlagsAllowed = map[string]bool{"takeover": true, "daemon": true, "ready-fd": true}

// runTakeover is `tempfs mount --takeover MOUNTPOINT`.
func runTakeover(ctx context.Context, o *mountOptions, flags *pflag.FlagSet, arg string, ready *readyNotifier) error {
	var other []string
	flags.Visit(func(f *pflag.Flag) {
		if !takeoverFlagsAllowed[f.Name] {
			other = append(other, "--"+f.Name)
		}
	})
	if len(other) > 0 {
		return usageErrorf("--takeover serves the mount with the settings of the daemon it takes over from: leave out %s", strings.Join(other, ", "))
	}
	mp, err := resolveMountpoint(arg)
	if err != nil {
		return err
	}
	if !tempfs.IsTempfsMount(mp) {
		return usageErrorf("%s is not a tempfs mount: nothing to take over", mp)
	}
	closeInheritedBelow(mp, o.readyFD)
	addr, err := takeoverSocket(mp)
	if err != nil {
		return failure(err)
	}
	// Every disk file of the mount comes as a descriptor: room for them first.
	nofileBefore, _, err := raiseDescriptors()
	if err != nil {
		slog.Warn("could not raise the descriptor limit", "err", err)
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: addr, Net: "unixpacket"})
	if err != nil {
		return failure(fmt.Errorf("no tempfs daemon for %s answers at its take-over socket (a daemon of another user, or one too old to hand over): %w", mp, err))
	}
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		return failure(fmt.Errorf("take-over socket: %w", err))
	}
	if cred.Uid != uint32(os.Geteuid()) {
		return usageErrorf("the daemon serving %s runs as uid %d: only that user can take its mount over", mp, cred.Uid)
	}
	// The old daemon's pidfd, taken before it can exit, so that its pid cannot be another process's by then.
	oldPidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return failure(fmt.Errorf("watching the daemon serving %s (pid %d): %w", mp, cred.Pid, err))
	}
	defer unix.Close(oldPidfd)
	received, err := handover.Receive(conn, handover.ReceiveOptions{Versions: []int{tempfs.StateVersion}})
	receivedAt := monotonicNanos()
	if err != nil {
		return failure(fmt.Errorf("take-over of %s: %w", mp, err))
	}
	fds := make(map[string]int, len(received.FDs))
	for _, f := range received.FDs {
		fds[f.Name] = f.FD
	}
	closeRest := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	refuse := func(err error) error {
		closeRest()
		b, _ := json.Marshal(takeoverAnswer{Refuse: err.Error()})
		_, _ = conn.Write(b)
		return failure(fmt.Errorf("take-over of %s refused, the daemon serving it goes on: %w", mp, err))
	}
	var msg takeoverMessage
	if err := received.DecodeState(&msg); err != nil {
		return refuse(err)
	}
	if os.Getenv("TEMPFS_TAKEOVER_REFUSE") == "1" {
		// Test-only: the new daemon refuses after receiving everything, as one that cannot read the state would.
		return refuse(errors.New("TEMPFS_TAKEOVER_REFUSE is set"))
	}
	if msg.Mount == nil {
		return refuse(errors.New("the state describes no mount"))
	}
	set := msg.Settings
	scope, err := owner.ParseScope(set.Owner)
	if err != nil {
		return refuse(err)
	}
	o.logFile, o.debug, o.fuseLogs = set.LogFile, set.Debug, set.FuseLogs
	log, err := o.openMountLog(set.StoreParent, mp)
	if err != nil {
		return refuse(err)
	}
	defer log.Close()
	slog.SetDefault(log.Logger)
	var metricsLn net.Listener
	if fd, ok := fds[metricsFDName]; ok {
		delete(fds, metricsFDName)
		f := os.NewFile(uintptr(fd), "metrics")
		metricsLn, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return refuse(fmt.Errorf("metrics listener: %w", err))
		}
	}
	closeMetrics := func() {
		if metricsLn != nil {
			metricsLn.Close()
		}
	}
	if path := os.Getenv("TEMPFS_TEST_CLOCK"); path != "" {
		tempfs.UseClock(tempfs.TestClockFile(path))
	}
	opts, cfg := set.adoptOptions(mp, log, metricsLn)
	m, err := tempfs.AdoptMount(mp, opts, cfg, scope, msg.Mount, fds)
	if err != nil {
		closeMetrics()
		return refuse(err)
	}
	closeRest()
	buf := make([]byte, 0, 1<<20)
	rebuiltAt := monotonicNanos()
	b, _ := json.Marshal(takeoverAnswer{Ready: true})
	if _, err := conn.Write(b); err != nil {
		// The old daemon froze before it described the mount and applied nothing since, so if it died
		// meanwhile the state is still the mount's: serve it. If it lives, it went on serving: this one must not.
		if waitExited(oldPidfd, 0) != nil {
			closeMetrics()
			return failure(fmt.Errorf("take-over of %s: telling the old daemon: %w", mp, err))
		}
		log.Warn("the old daemon died before it heard ready; serving the state it handed over", "pid", cred.Pid)
	}
	// The old daemon's last word: the FORGETs it held (none if it died).
	var last takeoverLast
	_ = conn.SetReadDeadline(time.Now().Add(takeoverReadyTimeout))
	if n, err := conn.Read(buf[:cap(buf)]); err == nil {
		if err := json.Unmarshal(buf[:n], &last); err != nil {
			log.Warn("the old daemon's last message does not decode; the FORGETs it held are lost", "err", err)
		}
	}
	// The old daemon exits on "ready"; its readers must be gone before this one resends and reads.
	if err := waitExited(oldPidfd, takeoverReadyTimeout); err != nil {
		closeMetrics()
		return failure(fmt.Errorf("take-over of %s: the old daemon (pid %d) did not exit: %w", mp, cred.Pid, err))
	}
	m.ApplyForgets(last.Forgets)
	exitedAt := monotonicNanos()
	if err := m.ServeAdopted(); err != nil {
		closeMetrics()
		return failure(fmt.Errorf("take-over of %s: %w", mp, err))
	}
	now := monotonicNanos()
	// The pause, from the old daemon's freeze to this one serving, and its parts: describing and sending,
	// rebuilding, the old daemon's exit.
	log.Info("took the mount over", "mountpoint", mp, "from_pid", cred.Pid, "from", received.From,
		"pause", time.Duration(now-msg.FrozenAt), "send", time.Duration(receivedAt-msg.FrozenAt),
		"rebuild", time.Duration(rebuiltAt-receivedAt), "old_exit", time.Duration(exitedAt-rebuiltAt),
		"files", msg.Mount.Tree.Counters.Files, "handles", len(msg.Mount.Tree.Handles), "descriptors", len(received.FDs))

	s := servedAdopted(m, set, log.Logger, metricsLn, nofileBefore)
	s.listenForTakeover(set)
	signals := make(chan os.Signal, 4)
	signalNotify(signals)
	ready.ready()
	s.waitAndShutdown(ctx, signals)
	notifyStopping()
	log.Info("unmounted", "mountpoint", mp)
	return nil
}

// adoptOptions are the options of a mount served by a new daemon (a take-over, a recovery) with settings s.
func (s takeoverSettings) adoptOptions(mp string, log *mountLog, metricsLn net.Listener) (tempfs.Options, tempfs.MountConfig) {
	return tempfs.Options{
			Mountpoint: mp, RootMode: s.Mode, RootUID: s.RootUID, RootGID: s.RootGID,
			OwnerQuota: s.OwnerQuota, StoreOnFUSE: s.StoreOnFUSE,
			EntryTimeout: time.Hour, AttrTimeout: time.Hour, Logger: log.Logger, MemorySource: s.MemorySource,
			LogWhere: log.where, PanicProbe: os.Getenv("TEMPFS_TEST_PANIC") == "1", MetricsAddress: listenerAddress(metricsLn),
		}, tempfs.MountConfig{AllowOther: s.AllowOther, DefaultPermissions: s.DefaultPermissions,
			Options: s.KernelOptions, Debug: s.FuseLogs}
}

// servedAdopted is a mount a new daemon serves (a take-over, a recovery), with the daemon's own work started:
// the memory watch, metrics, the reaper.
func servedAdopted(m *tempfs.Mount, set takeoverSettings, log *slog.Logger, metricsLn net.Listener, nofileBefore unix.Rlimit) *served {
	s := &served{mount: m, store: m.FS().Store(), log: log, stopReaper: func() {}, stopOwners: m.FS().StopOwners,
		nofileBefore: nofileBefore}
	s.stopMemoryWatch = watchMemoryLimit(m.FS(), set.MemoryExplicit, memoryCap{bytes: set.Memory, source: set.MemorySource}, log)
	s.startMetrics(metricsLn)
	if set.MaxAge > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		m.FS().StartReaper(rctx, set.MaxAge)
		s.stopReaper = cancel
	}
	return s
}

// closeInheritedBelow closes the descriptors this process inherited that are open on files below mountpoint
// (a shell's redirections, the caller's working files): a daemon holding a file of its own mount would keep a
// detached mount, and itself, alive forever.
func closeInheritedBelow(mountpoint string, keep int) {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 || fd == keep {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && (target == mountpoint || strings.HasPrefix(target, strings.TrimSuffix(mountpoint, "/")+"/")) {
			unix.Close(fd)
		}
	}
}

// waitExited waits until the process behind pidfd has exited; a timeout of 0 only looks.
func waitExited(pidfd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(max(time.Until(deadline), 0).Milliseconds()))
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return err
		case n > 0:
			return nil
		case time.Now().After(deadline):
			return errors.New("timed out")
		}
	}
}
