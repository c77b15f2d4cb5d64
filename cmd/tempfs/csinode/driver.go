// Package csinode is the Kubernetes CSI node plugin of tempfs (`tempfs csi`; docs/guarantees.md, Kubernetes): the Identity and
// Node services over gRPC for inline ephemeral volumes. It holds no filesystem logic: each volume is a
// `tempfs mount` daemon of its own, started from the plugin's own executable, which the plugin records in its
// state directory, finds again after a restart, and stops and cleans up after.
package csinode

// Lock order: Driver.mu is a leaf, held only around the volumes, busy and grants maps, never across a daemon's
// start or stop. An operation on a volume holds that volume's busy mark instead (see Driver.claim).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Mounts is what the plugin asks of the mount table; `tempfs csi` answers through the fs package's helpers.
type Mounts interface {
	// IsLive reports whether path is the mountpoint of a tempfs mount whose daemon answers.
	IsLive(path string) bool
	// IsStale reports whether path is a FUSE mount whose daemon is gone.
	IsStale(path string) bool
	// Unmount unmounts path; lazy detaches it even if files are open there.
	Unmount(path string, lazy bool) error
}

// Usage is a volume's space and entries, as NodeGetVolumeStats reports them.
type Usage struct {
	BytesTotal, BytesAvailable, BytesUsed    int64
	InodesTotal, InodesAvailable, InodesUsed int64
}

// Config is what the plugin is told at start.
type Config struct {
	DriverName string // the CSI driver's name, as the CSIDriver object names it
	NodeID     string
	Version    string
	// StateDir holds one record per published volume; it must outlive the plugin's process (a hostPath). The plugin
	// holds a lock in it for its life.
	StateDir string
	// StoreRoot is where each volume gets its own directory for its daemon's disk store.
	StoreRoot string
	// Executable is the tempfs binary that serves volumes (`EXE mount ...`).
	Executable string
	// BudgetWarning, when set, says at start that MemoryBudget was clamped under the plugin's memory limit.
	BudgetWarning string
	// KubeletDir is the kubelet's root directory: every target path must lie under its pods directory once
	// symlinks are followed (in both).
	KubeletDir string
	// MemoryBudget is the RAM all volumes' file data may take together; DefaultMemory is what a volume without a
	// memory attribute asks for; ParseSize reads the memory attribute (as the --memory flag does).
	MemoryBudget  int64
	DefaultMemory int64
	ParseSize     func(string) (int64, error)
	// DaemonLog receives the daemons' logs (the plugin's own stderr).
	DaemonLog *os.File
	// AttributeFlags are the `tempfs mount` flags a pod may set, each by the volume attribute AttributeName
	// names, in the order they are passed; CheckFlag checks a value with the flag's own parser.
	AttributeFlags []string
	CheckFlag      FlagChecker
	VolumeUsage    func(mountpoint string) (Usage, error)
	Mounts         Mounts
	Logger         *slog.Logger
}

// How long a daemon may take to go once its mount is gone (it exits at once unless files are still open on a
// detached mount), and how long after SIGKILL.
const (
	daemonExitTimeout = 10 * time.Second
	daemonKillTimeout = 10 * time.Second
	// daemonStartWait is how long a restarted plugin waits for a daemon that was still starting to mount.
	daemonStartWait = 10 * time.Second
)

// storePrefix starts the name of each volume's store directory under StoreRoot.
const storePrefix = "tempfs-csi-"

// Driver serves the Identity and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	cfg     Config
	log     *slog.Logger
	records records
	lock    *os.File // the state directory's lock, held for the plugin's life

	mu      sync.Mutex
	volumes map[string]*volume // by volume id
	busy    map[string]bool    // volume ids with an operation in progress
	grants  map[string]int64   // RAM granted from the node's budget, by volume id (see budget.go)
}

// volume is a published volume: its record and its daemon.
type volume struct {
	rec    *volumeRecord
	daemon *daemon // nil when the daemon was not found (killed)
}

var (
	_ csi.IdentityServer = (*Driver)(nil)
	_ csi.NodeServer     = (*Driver)(nil)
)

// ErrStateDirInUse is New's error when another plugin holds the state directory.
var ErrStateDirInUse = errors.New("another tempfs csi uses this state directory")

// New takes the state directory (one plugin per state directory: a second one would clear the first one's
// volumes), then adopts the volumes whose daemons still serve them and clears the others (their dead mounts
// detached, their stores and records removed). StateDir and StoreRoot must exist.
func New(cfg Config) (*Driver, error) {
	lock, err := lockDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:     cfg,
		log:     cfg.Logger,
		records: records{dir: cfg.StateDir, log: cfg.Logger},
		lock:    lock,
		volumes: map[string]*volume{},
		busy:    map[string]bool{},
		grants:  map[string]int64{},
	}
	if err := d.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return d, nil
}

// lockWait is how long New waits for the state directory's lock. The descriptor is close-on-exec, but a daemon
// that a killed plugin was starting holds a copy of it from fork to exec: the lock outlives the plugin by that
// long. Another plugin holds it for good.
const lockWait = 5 * time.Second

// lockDir takes an exclusive flock on dir/.lock for the plugin's life; the kernel drops it when the plugin dies,
// however it dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", dir, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", dir, ErrStateDirInUse)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close releases the state directory. The volumes' daemons keep running.
func (d *Driver) Close() error { return d.lock.Close() }

// storeOf is the directory of a volume's disk store: the only directory the plugin ever removes with its content.
func (d *Driver) storeOf(volumeID string) string {
	return filepath.Join(d.cfg.StoreRoot, storePrefix+volumeKey(volumeID))
}

// recover adopts or clears the recorded volumes, then removes store directories that no record names and no
// daemon uses (left by a plugin that died between making one and recording it).
func (d *Driver) recover() error {
	recs, err := d.records.load()
	if err != nil {
		return fmt.Errorf("reading the volume records in %s: %w", d.cfg.StateDir, err)
	}
	stores := map[string]bool{}
	for _, rec := range recs {
		if rec.Store != d.storeOf(rec.VolumeID) {
			// Not a record this plugin wrote with this --store: its store is not ours to remove.
			d.log.Warn("a volume record names another store directory; leaving that directory alone", "volume", rec.VolumeID,
				"store", rec.Store, "expected", d.storeOf(rec.VolumeID))
		}
		stores[d.storeOf(rec.VolumeID)] = true
		if rec.MountPath == "" {
			// An older plugin's record: it mounted at the target path as given, where the kernel followed its symlinks.
			rec.MountPath = rec.TargetPath
			if real, err := resolveTarget(rec.TargetPath); err == nil {
				rec.MountPath = real
			}
		}
		v := &volume{rec: rec, daemon: findDaemon(rec.Store)}
		if v.daemon != nil && !d.cfg.Mounts.IsLive(rec.MountPath) {
			d.awaitMount(v)
		}
		if v.daemon != nil && d.cfg.Mounts.IsLive(rec.MountPath) {
			d.volumes[rec.VolumeID] = v
			held := rec.MemoryGranted
			if held == 0 {
				// An older plugin's volume: its daemon took its memory attribute, or the default, whatever the budget.
				if ask, err := d.memoryAsked(rec.Attributes); err == nil {
					held = ask
				}
			}
			if !d.regrant(rec.VolumeID, held) {
				d.log.Warn("the volumes adopted hold more RAM than the node's budget: new volumes get none until they go",
					"volume", rec.VolumeID, "memory", held, "granted", d.granted(), "budget", d.cfg.MemoryBudget)
			}
			d.log.Info("adopted a volume", "volume", rec.VolumeID, "target", rec.TargetPath, "mount", rec.MountPath,
				"pid", v.daemon.pid, "memory", held)
			continue
		}
		if err := d.teardown(v, false); err != nil {
			d.log.Error("clearing a dead volume", "volume", rec.VolumeID, "target", rec.TargetPath, "err", err)
			continue
		}
		d.log.Info("cleared a dead volume", "volume", rec.VolumeID, "target", rec.TargetPath)
	}
	entries, err := os.ReadDir(d.cfg.StoreRoot)
	if err != nil {
		return err
	}
	for _, e := range entries {
		store := filepath.Join(d.cfg.StoreRoot, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), storePrefix) || stores[store] {
			continue
		}
		if dm := findDaemon(store); dm != nil {
			dm.close()
			continue
		}
		if err := os.RemoveAll(store); err != nil {
			d.log.Warn("removing a store no volume uses", "store", store, "err", err)
		}
	}
	return nil
}

// awaitMount waits for the daemon of a volume whose mount is not there yet: one that the last plugin was starting
// when it died. It mounts within moments, or fails and exits; either way the kernel decides when, so this polls
// with a deadline.
func (d *Driver) awaitMount(v *volume) {
	deadline := time.Now().Add(daemonStartWait)
	for v.daemon.running() && !d.cfg.Mounts.IsLive(v.rec.MountPath) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// Serve answers gRPC requests on lis until ctx ends, then stops gracefully. The volumes' daemons keep running:
// they serve pods, not the plugin.
func (d *Driver) Serve(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.logCalls))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		done := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			srv.Stop() // a call stuck in a daemon's start must not keep the plugin from exiting
		}
	}()
	err := srv.Serve(lis)
	if ctx.Err() != nil {
		<-stopped
		return nil
	}
	return err
}

// logCalls logs every call at debug level and every failed one at warning level, with its status.
func (d *Driver) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		d.log.Warn("call failed", "method", info.FullMethod, "code", status.Code(err), "err", status.Convert(err).Message(),
			"duration", time.Since(start))
	} else {
		d.log.Debug("call", "method", info.FullMethod, "duration", time.Since(start))
	}
	return resp, err
}

// claim marks a volume id busy for one operation; release ends it. A second operation on the same volume while
// one runs is refused with Aborted, as the CSI spec asks, and the CO retries it.
func (d *Driver) claim(volumeID string) (release func(), err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[volumeID] {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is in progress", volumeID)
	}
	d.busy[volumeID] = true
	return func() {
		d.mu.Lock()
		delete(d.busy, volumeID)
		d.mu.Unlock()
	}, nil
}

func (d *Driver) lookup(volumeID string) *volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.volumes[volumeID]
}

func (d *Driver) set(volumeID string, v *volume) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v == nil {
		delete(d.volumes, volumeID)
	} else {
		d.volumes[volumeID] = v
	}
}

// live reports whether a volume still serves its target path.
func (d *Driver) live(v *volume) bool {
	return v.daemon != nil && v.daemon.running() && d.cfg.Mounts.IsLive(v.rec.MountPath)
}

// teardown ends a volume, live or dead: its mount goes (detached if busy), its daemon exits (killed if it does not
// go in time), a mount the daemon left dead is detached, then its store directory, its target directory and its
// record are removed, and its RAM grant goes back to the node's budget. It may be called again after an error.
// Everything happens at the volume's real path (MountPath), where mountinfo shows the mount. At unpublish, a
// target path whose last component is a symlink to that path goes too.
func (d *Driver) teardown(v *volume, unpublish bool) error {
	target := v.rec.MountPath
	if err := d.unmount(target); err != nil {
		return err
	}
	if v.daemon != nil {
		if !v.daemon.waitExit(daemonExitTimeout) {
			d.log.Warn("the volume's daemon did not exit after its unmount: killing it", "volume", v.rec.VolumeID, "pid", v.daemon.pid)
			v.daemon.kill()
			if !v.daemon.waitExit(daemonKillTimeout) {
				return fmt.Errorf("the daemon of volume %s (pid %d) did not exit after SIGKILL", v.rec.VolumeID, v.daemon.pid)
			}
		}
		v.daemon.close()
		v.daemon = nil
	}
	// A daemon that was still mounting when the first look found nothing, or that was killed, left a mount.
	if err := d.unmount(target); err != nil {
		return err
	}
	// The daemon removed its own store at exit; a killed one left an empty directory and its lock file.
	if v.rec.Store == d.storeOf(v.rec.VolumeID) {
		if err := os.RemoveAll(v.rec.Store); err != nil {
			return fmt.Errorf("removing the store of volume %s: %w", v.rec.VolumeID, err)
		}
	}
	// The CSI spec asks the plugin to remove the target path it made. Only an empty directory goes.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the target path: %w", err)
	}
	// At unpublish, a target path whose last component is a symlink (to the directory just removed) goes too, as
	// the target path of a volume without one does. Otherwise (a dead volume cleared to be published again, or at
	// the plugin's start, a failed publish undone) it stays: the kubelet's path must lead to the volume again.
	if named := v.rec.TargetPath; unpublish && named != target && d.inPods(filepath.Dir(named)) {
		if fi, err := os.Lstat(named); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if err := os.Remove(named); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing the target path's symlink: %w", err)
			}
		}
	}
	if err := d.records.remove(v.rec.VolumeID); err != nil {
		return err
	}
	d.ungrant(v.rec.VolumeID)
	return nil
}

// unmount unmounts a tempfs mount at target, live or dead, detaching it when it is busy; anything else there is
// left alone.
func (d *Driver) unmount(target string) error {
	if !d.cfg.Mounts.IsLive(target) && !d.cfg.Mounts.IsStale(target) {
		return nil
	}
	if err := d.cfg.Mounts.Unmount(target, false); err != nil {
		d.log.Info("unmount failed: detaching", "target", target, "err", err)
		if err := d.cfg.Mounts.Unmount(target, true); err != nil {
			return fmt.Errorf("detaching %s: %w", target, err)
		}
	}
	return nil
}
