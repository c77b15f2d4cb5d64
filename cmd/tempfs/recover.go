package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/metrics"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/fdstore"
	"github.com/tempfs/tempfs/fs/owner"
)

// Surviving a crash (docs/takeover.md, "Crash"): when a keeper of descriptors runs the daemon (systemd's fd
// store with FileDescriptorStoreMax=, or `tempfs mount --hold`), the daemon stores its FUSE connection, its
// spool's descriptors and a crash record there (tempfs.StartCrashRecord). A daemon started with those
// descriptors (LISTEN_FDS, among them "fuse") recovers the mount from the record instead of mounting, and
// asks the kernel to send again what the dead daemon read and did not answer.

// crashStore is the keeper of descriptors the daemon was started under, nil when none.
func crashStore() (*fdstore.Store, error) {
	store, err := fdstore.FromEnv()
	if err != nil {
		return nil, usageErrorf("the descriptor store: %v", err)
	}
	return store, nil
}

// startCrashRecord starts the mount's crash record when a keeper of descriptors runs the daemon.
func (s *served) startCrashRecord(settings takeoverSettings) error {
	store, err := crashStore()
	if err != nil || store == nil {
		return err
	}
	b, err := json.Marshal(settings)
	if err != nil {
		return failure(err)
	}
	start := time.Now()
	if err := s.mount.StartCrashRecord(store, store.Max(), b); err != nil {
		return failure(fmt.Errorf("starting the crash record: %w", err))
	}
	s.log.Info("crash record on: the descriptor store keeps this mount's descriptors; a daemon it starts after a crash serves the mount on",
		"store_max", store.Max(), "took", time.Since(start))
	return nil
}

// runRecover serves the mount at arg again after its daemon died, from the descriptors the keeper passed.
func runRecover(ctx context.Context, o *mountOptions, arg string, passed map[string]int, ready *readyNotifier) error {
	// A stop asked while recovering (the holder forwards it) is handled once the mount serves: an unmount.
	signals := make(chan os.Signal, 4)
	signalNotify(signals)
	closeAll := func() {
		for _, fd := range passed {
			unix.Close(fd)
		}
	}
	// The mountpoint is not looked at: until this daemon serves, a stat there waits for it, forever.
	mp, err := mountpointUnseen(arg)
	if err != nil {
		closeAll()
		return err
	}
	store, err := crashStore()
	if err == nil && store == nil {
		err = usageErrorf("descriptors were passed (LISTEN_FDS) without a store to keep them (NOTIFY_SOCKET and FDSTORE)")
	}
	if err != nil {
		closeAll()
		return err
	}
	started := time.Now()
	nofileBefore, _, err := raiseDescriptors()
	if err != nil {
		slog.Warn("could not raise the descriptor limit", "err", err)
	}
	rec, err := tempfs.ReadCrashRecord(passed)
	if err != nil {
		closeAll()
		return failure(fmt.Errorf("recovering %s: %w", mp, err))
	}
	var set takeoverSettings
	if err := json.Unmarshal(rec.Settings, &set); err != nil {
		closeAll()
		return failure(fmt.Errorf("recovering %s: the record's settings: %w", mp, err))
	}
	o.logFile, o.debug, o.fuseLogs = set.LogFile, set.Debug, set.FuseLogs
	log, err := o.openMountLog(set.StoreParent, mp)
	if err != nil {
		closeAll()
		return err
	}
	defer log.Close()
	slog.SetDefault(log.Logger)
	var metricsLn net.Listener
	if set.Metrics != "" {
		// The dead daemon's listener died with it: bind the address again.
		if metricsLn, err = metrics.Listen(set.Metrics); err != nil {
			log.Warn("metrics: could not listen again; serving without them", "address", set.Metrics, "err", err)
		}
	}
	if path := os.Getenv("TEMPFS_TEST_CLOCK"); path != "" {
		tempfs.UseClock(tempfs.TestClockFile(path))
	}
	scope, err := owner.ParseScope(set.Owner)
	if err != nil {
		closeAll()
		return failure(fmt.Errorf("recovering %s: the record's settings: %w", mp, err))
	}
	opts, cfg := set.adoptOptions(mp, log, metricsLn)
	m, err := tempfs.RecoverMount(mp, opts, cfg, scope, rec, passed, store, store.Max())
	if err != nil {
		closeAll()
		if metricsLn != nil {
			metricsLn.Close()
		}
		return failure(fmt.Errorf("recovering %s: %w", mp, err))
	}
	if err := m.ServeAdopted(); err != nil {
		return failure(fmt.Errorf("recovering %s: %w", mp, err))
	}
	log.Info("recovered the mount after its daemon died", "mountpoint", mp, "entries", rec.Entries, "torn_entry", rec.Torn,
		"took", time.Since(started), "files", m.FS().Stats().Files)
	s := servedAdopted(m, set, log.Logger, metricsLn, nofileBefore)
	ready.ready()
	s.waitAndShutdown(ctx, signals)
	notifyStopping()
	log.Info("unmounted", "mountpoint", mp)
	return nil
}

// passedConnection returns the descriptors passed to this daemon when they hold a FUSE connection to serve
// again, nil otherwise (none passed: mount afresh).
func passedConnection() (map[string]int, error) {
	passed, err := fdstore.Passed()
	if err != nil {
		return nil, failure(fmt.Errorf("the descriptors passed to this daemon: %w", err))
	}
	if _, ok := passed["fuse"]; !ok {
		if len(passed) > 0 {
			// Left by a mount that is gone (the store dropped its dead connection): nothing to serve again. They
			// leave the store, and the daemon mounts afresh.
			store, _ := fdstore.FromEnv()
			names := make([]string, 0, len(passed))
			for name, fd := range passed {
				names = append(names, name)
				unix.Close(fd)
				if store != nil {
					_ = store.Remove(name)
				}
			}
			slices.Sort(names)
			slog.Warn("descriptors without a FUSE connection were passed (left by a mount that is gone): dropped; mounting afresh",
				"names", strings.Join(names, ", "))
		}
		return nil, nil
	}
	return passed, nil
}
