package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/metrics"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/naming"
	"github.com/tempfs/tempfs/spool"
)

// mountOptions are the flags of `tempfs mount` (and of `tempfs run`, which mounts the same way).
type mountOptions struct {
	maxSize  sizeValue
	memory   sizeValue
	disk     sizeValue
	store    string
	mode     modeValue
	options  []string
	daemon   bool
	readyFD  int
	debug    bool
	fuseLogs bool
	maxAge   time.Duration
	metrics  metricsAddrValue
	owner    scopeValue
	// ownerQuota caps each owner's file data (--owner-quota).
	ownerQuota sizeValue
}

func newMountOptions() *mountOptions {
	o := &mountOptions{mode: 01777}
	o.maxSize = sizeValue{bytes: 1 << 20}
	return o
}

// AddFlags registers the mount flags on fs.
func (o *mountOptions) AddFlags(fs *pflag.FlagSet) {
	fs.Var(&o.maxSize, "max-size", "roll a file over from RAM to the disk store once it is larger than this (0: never by size)")
	fs.Var(&o.memory, "memory", "cap on all RAM-resident file data together (default: a quarter of physical RAM)")
	fs.Var(&o.disk, "disk", "cap on bytes in the disk store; writes past it fail with ENOSPC (default: no cap but free space)")
	fs.StringVar(&o.store, "store", "", "parent directory of the private disk store (default: the first usable of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, .)")
	fs.Var(&o.mode, "mode", "permission bits of the mount's root")
	fs.StringSliceVarP(&o.options, "options", "o", nil, "mount options, comma-separated: allow_other, default_permissions, and others passed to the kernel")
	fs.Var(&o.owner, "owner", "bind each new entry to the process, group, session or cgroup that made it, and remove it when that owner is gone: none, process, group, session or cgroup")
	fs.Var(&o.ownerQuota, "owner-quota", "cap on the file data of each owner (by file size); a write, truncate or fallocate past it fails with EDQUOT (needs --owner; default: no cap)")
	fs.DurationVar(&o.maxAge, "max-age", 0, "remove ordinary and kept entries neither opened, read nor modified for this long, unless open (e.g. 24h; 0: never)")
	fs.Var(&o.metrics, "metrics", "serve Prometheus metrics at http://ADDR/metrics; a bare PORT or :PORT listens on 127.0.0.1 only, HOST:PORT where named (default: off)")
	fs.BoolVar(&o.debug, "debug", false, "log at debug level")
	fs.BoolVar(&o.fuseLogs, "fuse-debug", false, "log every FUSE request (very verbose)")
}

func newMountCommand() *cobra.Command {
	o := newMountOptions()
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Serve a tempfs scratch filesystem at MOUNTPOINT",
		Long: `Serve a tempfs scratch filesystem at MOUNTPOINT, in the foreground until SIGINT or SIGTERM
(or 'tempfs unmount MOUNTPOINT'). The first signal unmounts cleanly; if files are still open
the mount is detached and tempfs exits after the last one closes; a second signal exits at once.

Ordinary names behave like a POSIX directory tree. A last path component with a run of six
or more X is a template: open(O_CREAT) makes a fresh 0600 file under a random name, removed
when its last handle closes; mkdir makes a fresh 0700 directory. Every regular file lives in
RAM until it grows past --max-size, then in an unlinked file of a private disk store. Nothing
is left on disk after unmount, or after the daemon dies.

With --owner SCOPE, each entry belongs to the process, process group, session or cgroup v2 that
made it, and is removed (as by unlink: open files live on until closed) once that owner is gone;
user.tempfs.lifetime=keep takes an entry out of its owner's hands.

Sizes accept 4096, 64KiB, 1MiB, 2GiB, and K, M, G, T as the same binary units.`,
		Example: `  tempfs mount /scratch
  tempfs mount --max-size 4MiB --memory 2GiB --disk 20GiB /scratch
  tempfs mount -o allow_other --mode 1777 /scratch     # a shared /tmp-like dir
  tempfs mount --owner session -o allow_other /scratch # entries go when the session that made them ends`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), o, cmd.Flags(), args[0])
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&o.daemon, "daemon", false, "run in the background; return once the mount is ready (exit status 0) or failed")
	cmd.Flags().IntVar(&o.readyFD, "ready-fd", 0, "write \"ready\\n\" to this inherited file descriptor once the mount is ready, then close it")
	return cmd
}

// prepared is a validated mount request: everything checked before anything is mounted.
type prepared struct {
	mountpoint  string
	storeParent string
	allowOther  bool
	// defaultPermissions: the kernel checks permissions (see prepare).
	defaultPermissions bool
	kernelOpts         []string
	memory             int64
	// metricsAddr is where to serve Prometheus metrics (host:port), "" when off.
	metricsAddr string
}

// prepare checks the request and turns bad input into usage errors (exit status 2), before mounting.
func (o *mountOptions) prepare(arg string) (*prepared, error) {
	mp, err := filepath.Abs(arg)
	if err != nil {
		return nil, usageErrorf("mountpoint %q: %v", arg, err)
	}
	if tempfs.IsStale(mp) {
		// A daemon died without unmounting: clear the dead mount so that a fresh one can take its place.
		if err := tempfs.Unmount(mp, true); err != nil {
			return nil, failure(fmt.Errorf("%s is a dead FUSE mount and could not be detached: %w", mp, err))
		}
		slog.Info("detached a dead mount", "mountpoint", mp)
	}
	if tempfs.IsTempfsMount(mp) {
		return nil, usageErrorf("%s is already a tempfs mount (tempfs unmount %s first)", mp, mp)
	}
	st, err := os.Stat(mp)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, usageErrorf("mountpoint %s does not exist", mp)
	case err != nil:
		return nil, usageErrorf("mountpoint %s: %v", mp, err)
	case !st.IsDir():
		return nil, usageErrorf("mountpoint %s is not a directory", mp)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, usageErrorf("/dev/fuse is missing: load the fuse module (modprobe fuse), or give a container --device /dev/fuse")
	}
	if os.Geteuid() != 0 && !haveFusermount() {
		return nil, usageErrorf("mounting as a user needs fusermount3: apt-get install fuse3 (or run as root)")
	}
	p := &prepared{mountpoint: mp}
	for _, opt := range o.options {
		switch opt {
		case "allow_other":
			p.allowOther = true
		case "default_permissions":
			p.defaultPermissions = true
		case "":
		case "rw", "nosuid", "nodev", "noexec", "suid", "dev", "exec", "noatime", "relatime", "auto", "noauto", "user", "nouser", "_netdev":
			if opt == "nosuid" || opt == "nodev" || opt == "noexec" || opt == "noatime" {
				p.kernelOpts = append(p.kernelOpts, opt)
			}
		default:
			if strings.HasPrefix(opt, "x-") {
				continue // userspace-only options of mount(8) and systemd
			}
			return nil, usageErrorf("unknown mount option %q (tempfs takes allow_other, default_permissions, nosuid, nodev, noexec, noatime)", opt)
		}
	}
	if o.store != "" {
		parent, err := filepath.Abs(o.store)
		if err != nil {
			return nil, usageErrorf("store %q: %v", o.store, err)
		}
		if naming.IsUnder(parent, mp) {
			return nil, usageErrorf("store %s is inside the mountpoint %s: the daemon must never write through its own mount", parent, mp)
		}
		if st, err := os.Stat(parent); err != nil || !st.IsDir() {
			return nil, usageErrorf("store %s is not a directory", parent)
		}
		p.storeParent = parent
	} else {
		parent, err := naming.GetTempDir(mp)
		if err != nil {
			return nil, usageErrorf("no directory for the disk store: %v (give one with --store)", err)
		}
		p.storeParent = parent
	}
	p.memory = o.memory.bytes
	if !o.memory.set {
		p.memory = physicalMemory() / 4
	}
	if p.memory <= 0 {
		return nil, usageErrorf("--memory must be larger than 0")
	}
	if o.maxAge < 0 {
		return nil, usageErrorf("--max-age must not be negative")
	}
	p.metricsAddr = o.metrics.addr
	if o.ownerQuota.bytes > 0 && o.owner.scope == owner.None {
		return nil, usageErrorf("--owner-quota needs --owner process, group, session or cgroup")
	}
	// The kernel checks permissions (default_permissions) whenever anyone but root can reach the mount: with
	// allow_other, or when a user mounted it. A root mount without allow_other is reachable by root alone,
	// which passes every check anyway; leaving the checks out there saves the GETATTR of the directory that
	// the kernel sends before each lookup after a create or unlink.
	p.defaultPermissions = p.defaultPermissions || p.allowOther || os.Geteuid() != 0
	return p, nil
}

func haveFusermount() bool {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		for _, name := range []string{"fusermount3", "fusermount"} {
			if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode()&0o111 != 0 {
				return true
			}
		}
	}
	return false
}

func physicalMemory() int64 {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 1 << 30
	}
	return int64(info.Totalram) * int64(info.Unit)
}

// raiseFileLimit lifts RLIMIT_NOFILE to its hard limit: every non-empty file holds a descriptor.
func raiseFileLimit() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}

func newLogger(o *mountOptions, w *os.File) *slog.Logger {
	level := slog.LevelInfo
	if o.debug || o.fuseLogs {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// served is a running mount with its store, as runMount and runRun use it.
type served struct {
	mount      *tempfs.Mount
	store      *spool.Store
	log        *slog.Logger
	stopReaper func()
	metrics    *metrics.Server // nil when off
	stopOwners func()
}

// serve mounts a prepared request. On error nothing is left mounted and the store is gone.
func (o *mountOptions) serve(p *prepared, log *slog.Logger) (*served, error) {
	raiseFileLimit()
	// The metrics address is bound first: a busy or unusable one fails the mount before anything is made.
	var metricsLn net.Listener
	if p.metricsAddr != "" {
		ln, err := metrics.Listen(p.metricsAddr)
		if err != nil {
			return nil, usageErrorf("--metrics: %v", err)
		}
		metricsLn = ln
	}
	closeMetrics := func() {
		if metricsLn != nil {
			metricsLn.Close()
		}
	}
	if os.Getenv("GOGC") == "" {
		// The daemon's heap is almost all node metadata (file data lives in memfds and the store), and its
		// size is the product's memory footprint: collect at 50% growth instead of Go's 100%.
		debug.SetGCPercent(50)
	}
	store, err := spool.OpenStore(p.storeParent)
	if err != nil {
		// An unusable store parent (not ours, writable by others without the sticky bit) is bad input.
		closeMetrics()
		return nil, usageErrorf("disk store: %v", err)
	}
	pool, err := spool.NewPool(spool.Config{
		MaxSize:   o.maxSize.bytes,
		MemoryCap: p.memory,
		DiskCap:   o.disk.bytes,
		Store:     store,
		Logger:    log,
	})
	if err != nil {
		store.Close()
		closeMetrics()
		return nil, usageErrorf("%v", err)
	}
	fsys := tempfs.New(tempfs.Options{
		Mountpoint: p.mountpoint,
		Pool:       pool,
		RootMode:   uint32(o.mode),
		RootUID:    uint32(os.Getuid()),
		RootGID:    uint32(os.Getgid()),
		// The daemon must see every write to keep --disk and --owner-quota.
		Passthrough: o.disk.bytes == 0 && o.ownerQuota.bytes == 0,
		// Every change of a name or an attribute goes through this kernel or is notified to it (files made
		// from templates leaving at last close, --max-age reaping), so the kernel may keep what it was told
		// for long: a stat of a name looked up minutes ago costs no round trip. Template names keep 0.
		EntryTimeout: time.Hour,
		AttrTimeout:  time.Hour,
		Logger:       log,
		PanicProbe:   os.Getenv("TEMPFS_TEST_PANIC") == "1",
		// The address bound: the port the kernel chose when the user asked for 0.
		MetricsAddress: listenerAddress(metricsLn),
	})
	fsys.SetOwnerQuota(o.ownerQuota.bytes)
	if err := fsys.WatchOwners(o.owner.scope); err != nil {
		store.Close()
		closeMetrics()
		return nil, usageErrorf("--owner %s: %v", o.owner.scope, err)
	}
	m, err := tempfs.MountFS(p.mountpoint, fsys, tempfs.MountConfig{
		AllowOther:         p.allowOther,
		DefaultPermissions: p.defaultPermissions,
		Options:            p.kernelOpts,
		Debug:              o.fuseLogs,
	})
	if err != nil {
		fsys.StopOwners()
		store.Close()
		closeMetrics()
		return nil, failure(fmt.Errorf("mount %s: %w", p.mountpoint, err))
	}
	log.Info("mounted", "mountpoint", p.mountpoint, "store", store.Path(),
		"max_size", naming.FormatSize(o.maxSize.bytes), "memory", naming.FormatSize(p.memory),
		"disk", diskCapString(o.disk.bytes), "owner", o.owner.scope)
	s := &served{mount: m, store: store, log: log, stopReaper: func() {}, stopOwners: fsys.StopOwners}
	if metricsLn != nil {
		s.metrics = metrics.Serve(metricsLn, m.Stats, log)
		log.Info("serving metrics", "url", "http://"+listenerAddress(metricsLn)+"/metrics")
	}
	if o.maxAge > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		fsys.StartReaper(ctx, o.maxAge)
		s.stopReaper = cancel
	}
	return s, nil
}

// listenerAddress is ln's host:port, "" for none.
func listenerAddress(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func diskCapString(n int64) string {
	if n == 0 {
		return "free space"
	}
	return naming.FormatSize(n)
}

// waitAndShutdown unmounts on the first signal (detaching a busy mount) and exits at once on the second. It returns
// when the mount is gone: unmounted by a signal, by `tempfs unmount`, or detached and its last handle closed.
func (s *served) waitAndShutdown(ctx context.Context, signals <-chan os.Signal) {
	done := make(chan struct{})
	go func() {
		s.mount.Wait()
		close(done)
	}()
	first := true
	for {
		select {
		case <-done:
			s.cleanup()
			return
		case <-ctx.Done():
			s.stop()
			<-done
			s.cleanup()
			return
		case sig := <-signals:
			if !first {
				s.log.Warn("second signal: exiting now", "signal", sig)
				_ = tempfs.AbortConnection(s.mountpointPath())
				s.cleanup()
				os.Exit(exitFailure)
			}
			first = false
			notifyStopping()
			s.log.Info("unmounting", "signal", sig)
			s.stop()
		}
	}
}

func (s *served) mountpointPath() string { return s.mount.Mountpoint() }

// stop unmounts, or detaches the mount when files are still open there.
func (s *served) stop() {
	if err := s.mount.Unmount(); err != nil {
		s.log.Info("mount is busy: detached; exiting after the last open file is closed", "err", err)
		if err := s.mount.Detach(); err != nil {
			s.log.Error("detach failed", "err", err)
		}
	}
}

// cleanup removes the store directory; every backing file in it was unlinked from the start.
func (s *served) cleanup() {
	s.stopReaper()
	s.stopOwners()
	if s.metrics != nil {
		_ = s.metrics.Close()
	}
	if err := s.store.Close(); err != nil {
		s.log.Error("removing the disk store", "err", err)
	}
}

func runMount(ctx context.Context, o *mountOptions, flags *pflag.FlagSet, arg string) error {
	if o.daemon {
		return daemonize(o, flags, arg)
	}
	ready := newReadyNotifier(o.readyFD)
	if path := os.Getenv("TEMPFS_CPUPROFILE"); path != "" {
		// For performance work (scripts/bench, issue notes): a CPU profile of the daemon's whole life.
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	p, err := o.prepare(arg)
	if err != nil {
		ready.fail(err)
		return err
	}
	log := newLogger(o, os.Stderr)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	s, err := o.serve(p, log)
	if err != nil {
		ready.fail(err)
		return err
	}
	ready.ready()
	s.waitAndShutdown(ctx, signals)
	notifyStopping()
	log.Info("unmounted", "mountpoint", p.mountpoint)
	return nil
}
