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
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/limits"
	"github.com/tempfs/tempfs/cmd/tempfs/metrics"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/mountinfo"
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
	maxAge   durationValue
	metrics  metricsAddrValue
	owner    scopeValue
	// ownerQuota caps each owner's file data (--owner-quota).
	ownerQuota sizeValue
	logFile    string
	// takeover: take a live mount over from the daemon serving it (takeover.go).
	takeover bool
	// hold: run the daemon under a holder that keeps its descriptors and restarts it (hold.go).
	hold bool
}

func newMountOptions() *mountOptions {
	o := &mountOptions{mode: 01777}
	o.maxSize = sizeValue{bytes: 1 << 20}
	return o
}

// AddFlags registers the mount flags on fs. They are also the fstab -o options and the CSI volume attributes
// (mountflags.go), in this order.
func (o *mountOptions) AddFlags(fs *pflag.FlagSet) {
	fs.Var(&o.maxSize, "max-size", "roll a file over from RAM to the disk store once it is larger than this (0: never by size)")
	fs.Var(&o.memory, "memory", "cap on the RAM allocated to file data (holes are free); files past it roll over to disk; kept under three quarters of the daemon's memory cgroup limit, also when it moves (default: a quarter of the smaller of host RAM and the cgroup memory limit)")
	fs.Var(&o.disk, "disk", "cap on the bytes allocated in the disk store (holes are free); writes past it fail with ENOSPC; turns passthrough off (default: no cap but free space)")
	fs.StringVar(&o.store, "store", "", "parent directory of the private disk store (default: the first usable of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, . that is neither on a FUSE filesystem nor under the mountpoint)")
	fs.Var(&o.mode, "mode", "permission bits of the mount's root (0 means 0000)")
	fs.StringSliceVarP(&o.options, "options", "o", nil, "mount options, comma-separated: allow_other, default_permissions, nonempty (mount over a non-empty directory or another filesystem's mountpoint, never over a live tempfs mount), fsname=SOURCE, and the standard ro, noexec, sync, dirsync, lazytime, noatime, nodiratime, relatime, strictatime, nosymfollow; nosuid and nodev are always on")
	fs.Var(&o.maxAge, "max-age", "remove ordinary and kept entries neither opened, read nor modified for this long, unless open, counted as the daemon lived it: wall-clock steps do not count (e.g. 24h or 10d; 0: never)")
	fs.Var(&o.owner, "owner", "bind each new entry to the process, group, session or cgroup that made it, and remove it when that owner is gone: "+owner.ScopeList())
	fs.Var(&o.ownerQuota, "owner-quota", "cap on the file data of each owner (by file size); a write, truncate or fallocate past it fails with EDQUOT (needs --owner; default: no cap)")
	fs.Var(&o.metrics, "metrics", "serve Prometheus metrics at http://ADDR/metrics; a bare PORT or :PORT listens on 127.0.0.1 only, HOST:PORT where named (default: off)")
	fs.StringVar(&o.logFile, "log", "", "append the log to `FILE` (default: stderr; with --daemon the system log, see README)")
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

Sizes accept 4096, 64KiB, 1MiB, 2GiB, and K, M, G, T (also Ki, Mi, Gi, Ti) as the same
binary units, as dd reads them; KB, MB, GB, TB are decimal (1KB = 1000); units in any case
(2gb = 2GB, 4mib = 4MiB). Durations accept
s, m, h and d (days): 90m, 24h, 10d.

With --takeover, a new daemon (an upgraded binary, say) takes the live tempfs mount at MOUNTPOINT
over from the daemon serving it, with that daemon's settings: files, open handles and owners are
kept, programs see a pause of milliseconds, and the old daemon exits without unmounting. If the
take-over cannot happen, the old daemon serves on.

With --hold, tempfs runs the daemon under a small holder process that keeps the descriptors the
daemon stores (the FUSE connection, the files' data), as systemd's file descriptor store does for
a unit with FileDescriptorStoreMax=, and starts a new daemon with them if the daemon dies. The new
daemon serves the same mount from the daemon's crash record: files, names, open handles and
directory listings and owners go on, and requests in flight are sent again by the kernel. A daemon
that keeps dying within a second of its start is started at most 5 times in 30 s. Signals to the
holder reach the daemon; the holder exits when the daemon exits after an unmount.

A missing MOUNTPOINT, an empty string or a live tempfs mount is refused (exit status 2); so are
a non-empty directory and another filesystem's mountpoint, unless -o nonempty is given. A dead
tempfs mount left by a killed daemon is detached and mounted afresh. With --daemon, the log goes
to --log FILE, or else to the system log (the journal or /dev/log), or on a machine with
neither to a file of the mount's own in the store's parent directory (tempfs status names it).`,
		Example: `  tempfs mount /scratch
  tempfs mount --max-size 4MiB --memory 2GiB --disk 20GiB /scratch
  tempfs mount -o allow_other --mode 1777 /scratch     # a shared /tmp-like dir
  tempfs mount --daemon --log /var/log/tempfs.log /scratch
  tempfs mount --owner session -o allow_other /scratch # entries go when the session that made them ends
  tempfs mount --daemon --takeover /scratch            # a new binary takes the live mount over
  tempfs mount --daemon --hold /scratch                # a holder keeps the descriptors and restarts a dead daemon`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), o, cmd.Flags(), args[0])
		},
	}
	o.AddFlags(cmd.Flags())
	registerMountCompletions(cmd)
	cmd.Flags().BoolVar(&o.daemon, "daemon", false, "run in the background; return once the mount is ready (exit status 0) or failed")
	cmd.Flags().IntVar(&o.readyFD, "ready-fd", 0, "write \"ready\\n\" to this inherited file descriptor once the mount is ready, then close it")
	cmd.Flags().BoolVar(&o.hold, "hold", false, "run the daemon under a holder process that keeps the descriptors it stores and starts a new daemon with them if it dies")
	cmd.Flags().BoolVar(&o.takeover, "takeover", false, "take the live tempfs mount at MOUNTPOINT over from the daemon serving it (an upgrade): same files, handles and settings, no unmount; the old daemon exits")
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
	// detachedDead: a dead tempfs mount (its daemon was killed) was detached from the mountpoint first.
	detachedDead bool
	memorySource string // where memory came from, for status
	// memoryExplicit is --memory as given (0 when left to the default); memoryWarning says, when not "",
	// that it was clamped under the memory cgroup limit.
	memoryExplicit int64
	memoryWarning  string
	// storeOnFUSE: --store names a directory on a FUSE filesystem (the default search skips those).
	storeOnFUSE bool
	// logWhere says where the daemon's log goes, for status.
	logWhere string
}

// prepare checks the request and turns bad input into usage errors (exit status 2), before mounting.
func (o *mountOptions) prepare(arg string) (*prepared, error) {
	mp, err := resolveMountpoint(arg)
	if err != nil {
		return nil, err
	}
	p := &prepared{mountpoint: mp}
	nonempty, err := p.parseOptions(o.options)
	if err != nil {
		return nil, err
	}
	if tempfs.IsTempfsMount(mp) && tempfs.IsStale(mp) {
		// A daemon died without unmounting: clear the dead mount so that a fresh one can take its place.
		if err := tempfs.Unmount(mp, true); err != nil {
			return nil, failure(fmt.Errorf("%s is a dead tempfs mount and could not be detached: %w", mp, err))
		}
		p.detachedDead = true
	}
	if tempfs.IsTempfsMount(mp) {
		return nil, usageErrorf("%s is already a tempfs mount (tempfs unmount %s first)", mp, mp)
	}
	st, err := os.Stat(mp)
	switch {
	case err != nil:
		return nil, usageErrorf("mountpoint %s: %v", mp, errnoOf(err))
	case !st.IsDir():
		return nil, usageErrorf("mountpoint %s is not a directory", mp)
	}
	if err := checkFUSEDevice(); err != nil {
		return nil, err
	}
	if p.allowOther && os.Geteuid() != 0 {
		if err := checkUserAllowOther(fuseConfPath); err != nil {
			return nil, err
		}
	}
	if err := o.prepareStore(p); err != nil {
		return nil, err
	}
	if o.memory.set && o.memory.bytes <= 0 {
		return nil, usageErrorf("--memory must be larger than 0")
	}
	if o.memory.set {
		p.memoryExplicit = o.memory.bytes
	}
	fit := fitMemoryCap(p.memoryExplicit)
	p.memory, p.memorySource, p.memoryWarning = fit.bytes, fit.source, fit.warning
	if p.memory <= 0 {
		return nil, usageErrorf("--memory must be larger than 0")
	}
	if o.disk.set && o.disk.bytes == 0 {
		return nil, usageErrorf("--disk 0 would refuse every byte on disk: leave --disk out for no cap but the free space")
	}
	if !nonempty {
		if err := checkMountpointFree(mp); err != nil {
			return nil, err
		}
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

// parseOptions reads the -o options into p; nonempty is tempfs's own (it is not passed to the kernel).
func (p *prepared) parseOptions(options []string) (nonempty bool, err error) {
	for _, opt := range options {
		switch opt {
		case "allow_other":
			p.allowOther = true
		case "default_permissions":
			p.defaultPermissions = true
		case "nonempty":
			nonempty = true
		case "", "nosuid", "nodev", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail",
			"silent", "loud", "iversion", "noiversion", "nomand":
			// nosuid and nodev: every tempfs mount has them. The rest mean something to mount(8) alone, or
			// nothing to a filesystem without on-disk state, as on tmpfs.
		case "suid", "dev":
			return false, usageErrorf("-o %s is not supported: tempfs mounts are always nosuid and nodev", opt)
		default:
			if strings.HasPrefix(opt, "x-") {
				continue // userspace-only options of mount(8) and systemd
			}
			// The kernel's flags (ro, sync, noatime, ...) and the source shown for the mount (fsname=).
			if tempfs.IsMountFlagOption(opt) || strings.HasPrefix(opt, "fsname=") {
				p.kernelOpts = append(p.kernelOpts, opt)
				continue
			}
			return false, usageErrorf("unknown mount option %q (tempfs takes allow_other, default_permissions, nonempty, fsname=SOURCE and the standard ro, rw, noexec, sync, dirsync, lazytime, noatime, nodiratime, relatime, strictatime, nosymfollow)", opt)
		}
	}
	return nonempty, nil
}

// checkMountpointFree refuses a mountpoint that holds entries or another mount: tempfs would hide them (an
// unset variable in `tempfs mount "$DIR"` once hid a whole /tmp). -o nonempty skips this check.
func checkMountpointFree(mp string) error {
	if mi, mounted := mountinfo.Find(mp); mounted {
		return usageErrorf("%s is already a mountpoint (%s): tempfs would hide it; give -o nonempty to mount over it anyway", mp, mi.FSType)
	}
	d, err := os.Open(mp)
	if err != nil {
		return nil // unreadable to this user: the mount itself decides
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return usageErrorf("mountpoint %s is not empty: tempfs would hide what is there; give -o nonempty to mount over it anyway", mp)
	}
	return nil
}

// checkFUSEDevice refuses to start when /dev/fuse is missing or this user cannot open it, with the fix in one
// line, instead of fusermount3's two lines and a raw wait status.
func checkFUSEDevice() error {
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		return usageErrorf("/dev/fuse is missing: load the fuse module (modprobe fuse), or give a container --device /dev/fuse")
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if !haveFusermount() {
		return usageErrorf("mounting as a user needs fusermount3: apt-get install fuse3 (or run as root)")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		return usageErrorf("cannot open /dev/fuse: %v (mode %04o, owner uid %d): mount as root, or let users open it (chmod 0666 /dev/fuse)",
			errnoOf(err), st.Mode&07777, st.Uid)
	}
	return nil
}

// prepareStore settles the disk store's parent: --store with its symlinks resolved (so that a link into the
// mountpoint is caught), or the first usable temporary directory outside the mountpoint.
func (o *mountOptions) prepareStore(p *prepared) error {
	if o.store == "" {
		parent, err := naming.GetStoreDir(p.mountpoint)
		if err != nil {
			return usageErrorf("no directory for the disk store: %v (give one with --store)", err)
		}
		p.storeParent = parent
		return nil
	}
	abs, err := filepath.Abs(o.store)
	if err != nil {
		return usageErrorf("store %q: %v", o.store, err)
	}
	parent, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return usageErrorf("store %s: %v", abs, errnoOf(err))
	}
	if naming.IsUnder(parent, p.mountpoint) {
		return usageErrorf("store %s is inside the mountpoint %s: the daemon must never write through its own mount", parent, p.mountpoint)
	}
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		return usageErrorf("store %s is not a directory", parent)
	}
	p.storeParent = parent
	// Allowed when asked for by name, at a cost said once at start (serve).
	p.storeOnFUSE, _ = naming.IsOnFUSE(parent)
	return nil
}

// resolveMountpoint makes a mountpoint argument absolute with its symlinks resolved, as /proc/self/mountinfo
// names mounts. A dead mount cannot be looked at, so only its parent is resolved then.
func resolveMountpoint(arg string) (string, error) {
	abs, err := absMountpoint(arg)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	switch {
	case err == nil:
		return resolved, nil
	case errors.Is(err, os.ErrNotExist):
		return "", usageErrorf("mountpoint %s does not exist", abs)
	}
	return withParentResolved(abs, err)
}

// mountpointUnseen is resolveMountpoint without looking at the mountpoint itself: a recovering daemon's
// mount is there and unserved, and a stat of it would wait for that very daemon.
func mountpointUnseen(arg string) (string, error) {
	abs, err := absMountpoint(arg)
	if err != nil {
		return "", err
	}
	return withParentResolved(abs, nil)
}

// absMountpoint is a mountpoint argument made absolute.
func absMountpoint(arg string) (string, error) {
	if arg == "" {
		return "", usageErrorf("the mountpoint is an empty string (an unset variable?)")
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", usageErrorf("mountpoint %q: %v", arg, err)
	}
	return abs, nil
}

// withParentResolved is abs with its parent's symlinks resolved; why is why abs itself was not (nil: not
// tried), for the error.
func withParentResolved(abs string, why error) (string, error) {
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		if why == nil {
			why = err
		}
		return "", usageErrorf("mountpoint %s: %v", abs, errnoOf(why))
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
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

// served is a running mount with its store, as runMount and runRun use it.
type served struct {
	mount      *tempfs.Mount
	store      *spool.Store
	log        *slog.Logger
	stopReaper func()
	metrics    *metrics.Server // nil when off
	stopOwners func()
	// detached: the first signal found the mount busy and detached it; a second one forces the exit.
	detached bool
	// nofileBefore is the descriptor limit the process had before serve raised it: what a program that
	// tempfs run starts gets back.
	nofileBefore unix.Rlimit
	// stopMemoryWatch stops following the memory cgroup limit (watchMemoryLimit).
	stopMemoryWatch func()
	// takeoverLn is the take-over socket (takeover.go); metricsFile the metrics listener's descriptor, which a
	// take-over hands on.
	takeoverLn  *net.UnixListener
	metricsFile *os.File
}

// serve mounts a prepared request. On error nothing is left mounted and the store is gone.
func (o *mountOptions) serve(p *prepared, log *slog.Logger) (*served, error) {
	nofileBefore, nofile, err := raiseDescriptors()
	if err != nil {
		log.Warn("could not raise the descriptor limit", "err", err)
	}
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
	store, err := spool.OpenStoreWithLogger(p.storeParent, log)
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
	if path := os.Getenv("TEMPFS_TEST_CLOCK"); path != "" {
		// Test-only: integration tests step the daemon's wall and monotonic clocks without touching the
		// system's (see tempfs.TestClockFile). Never set it on a real mount.
		tempfs.UseClock(tempfs.TestClockFile(path))
		log.Warn("TEMPFS_TEST_CLOCK: the clock is a test's", "file", path)
	}
	if p.storeOnFUSE {
		log.Warn(storeOnFUSEWarning, "store", p.storeParent)
	}
	fsys := tempfs.New(tempfs.Options{
		Mountpoint: p.mountpoint,
		Pool:       pool,
		RootMode:   uint32(o.mode),
		RootUID:    uint32(os.Getuid()),
		RootGID:    uint32(os.Getgid()),
		// With the pool's disk cap, these decide whether passthrough is on (the fs package's rule).
		OwnerQuota:  o.ownerQuota.bytes,
		StoreOnFUSE: p.storeOnFUSE,
		// Every change of a name or an attribute goes through this kernel or is notified to it (files made
		// from templates leaving at last close, --max-age reaping), so the kernel may keep what it was told
		// for long: a stat of a name looked up minutes ago costs no round trip. Template names keep 0.
		EntryTimeout: time.Hour,
		AttrTimeout:  time.Hour,
		Logger:       log,
		MemorySource: p.memorySource,
		LogWhere:     p.logWhere,
		PanicProbe:   os.Getenv("TEMPFS_TEST_PANIC") == "1",
		// The address bound: the port the kernel chose when the user asked for 0.
		MetricsAddress: listenerAddress(metricsLn),
	})
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
		if tempfs.IsMountHelperError(err) {
			// fusermount3 refused the request (a mountpoint this user may not write, an option it forbids):
			// its own words are the cause, and nothing was mounted.
			return nil, usageErrorf("mount %s: %v", p.mountpoint, err)
		}
		return nil, failure(fmt.Errorf("mount %s: %w", p.mountpoint, err))
	}
	log.Info("mounted", "mountpoint", p.mountpoint, "store", store.Path(),
		"max_size", naming.FormatSize(o.maxSize.bytes), "memory", naming.FormatSize(p.memory),
		"memory_from", p.memorySource, "disk", diskCapString(o.disk.bytes), "owner", o.owner.scope, "descriptors", nofile.Cur)
	if p.memoryWarning != "" {
		log.Warn(p.memoryWarning)
	}
	s := &served{mount: m, store: store, log: log, stopReaper: func() {}, stopOwners: fsys.StopOwners,
		nofileBefore: nofileBefore}
	s.stopMemoryWatch = watchMemoryLimit(fsys, p.memoryExplicit, memoryCap{bytes: p.memory, source: p.memorySource}, log)
	s.startMetrics(metricsLn)
	if o.maxAge.d > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		fsys.StartReaper(ctx, o.maxAge.d)
		s.stopReaper = cancel
	}
	s.listenForTakeover(o.settings(p))
	return s, nil
}

// startMetrics serves metrics on ln (nil: off), and keeps its descriptor for a take-over.
func (s *served) startMetrics(ln net.Listener) {
	if ln == nil {
		return
	}
	s.metrics = metrics.Serve(ln, s.mount.Stats, s.log)
	s.log.Info("serving metrics", "url", "http://"+listenerAddress(ln)+"/metrics")
	if tl, ok := ln.(*net.TCPListener); ok {
		if f, err := tl.File(); err == nil {
			s.metricsFile = f
		}
	}
}

// signalNotify delivers the signals that unmount.
func signalNotify(signals chan os.Signal) { signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM) }

// raiseDescriptors raises the descriptor limit: every disk file and every RAM file over the small-file
// arena's size holds a descriptor.
func raiseDescriptors() (before, now unix.Rlimit, err error) { return limits.RaiseDescriptors() }

// listenerAddress is ln's host:port, "" for none.
func listenerAddress(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func diskCapString(n int64) string {
	if n == 0 {
		return "no cap (the store's free space)"
	}
	return naming.FormatSize(n)
}

// waitAndShutdown unmounts on the first signal (detaching a busy mount) and, once the mount was detached, exits at
// once on a later one. It returns when the mount is gone: unmounted by a signal, by `tempfs unmount`, or
// detached and its last handle closed.
func (s *served) waitAndShutdown(ctx context.Context, signals <-chan os.Signal) {
	done := make(chan struct{})
	go func() {
		s.mount.Wait()
		close(done)
	}()
	handled := false
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
			switch {
			case !handled:
				handled = true
				notifyStopping()
				s.log.Info("unmounting", "signal", sig)
				s.stop()
				// Signals that came while unmounting repeat the same request: timeout(1) signals its child and
				// then the child's whole process group, and supervisors repeat themselves. Only one sent after
				// this one was handled forces the exit.
				drainSignals(signals)
			case s.detached:
				s.log.Warn("second signal: exiting now", "signal", sig)
				_ = tempfs.AbortConnection(s.mountpointPath())
				s.cleanup()
				os.Exit(exitFailure)
			default:
				// Unmounted cleanly: the connection is closing, and done follows at once.
				s.log.Info("already unmounting", "signal", sig)
			}
		}
	}
}

// drainSignals discards the signals already delivered to signals.
func drainSignals(signals <-chan os.Signal) {
	for {
		select {
		case <-signals:
		default:
			return
		}
	}
}

func (s *served) mountpointPath() string { return s.mount.Mountpoint() }

// stop unmounts, or detaches the mount when files are still open there.
func (s *served) stop() {
	if err := s.mount.Unmount(); err != nil {
		s.log.Info("mount is busy: detached; exiting after the last open file is closed", "err", err)
		s.detached = true
		if err := s.mount.Detach(); err != nil {
			s.log.Error("detach failed", "err", err)
		}
	}
}

// cleanup removes the store directory; every backing file in it was unlinked from the start.
func (s *served) cleanup() {
	if s.takeoverLn != nil {
		s.takeoverLn.Close()
	}
	s.mount.EndCrashRecord()
	s.stopReaper()
	s.stopMemoryWatch()
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
	if o.hold {
		return runHold(ctx, o, flags, arg, ready)
	}
	if o.takeover {
		err := runTakeover(ctx, o, flags, arg, ready)
		if err != nil {
			ready.fail(err)
		}
		return err
	}
	passed, err := passedConnection()
	if err == nil && passed != nil {
		err = runRecover(ctx, o, arg, passed, ready)
	}
	if err != nil || passed != nil {
		if err != nil {
			ready.fail(err)
		}
		return err
	}
	if path := os.Getenv("TEMPFS_CPUPROFILE"); path != "" {
		// For performance work (scripts/bench): a CPU profile of the daemon's whole life.
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	if path := os.Getenv("TEMPFS_MUTEXPROFILE"); path != "" {
		// For performance work (scripts/bench, scripts/lockprofile): every wait for a lock, attributed to the
		// code that held it, written at unmount.
		runtime.SetMutexProfileFraction(1)
		defer func() {
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("mutex").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	p, err := o.prepare(arg)
	if err != nil {
		ready.fail(err)
		return err
	}
	log, err := o.openMountLog(p.storeParent, p.mountpoint)
	if err != nil {
		ready.fail(err)
		return err
	}
	defer log.Close()
	p.logWhere = log.where
	// The store logs stale-store cleanup through slog's default logger.
	slog.SetDefault(log.Logger)
	if p.detachedDead {
		log.Info("detached a dead tempfs mount (its daemon was killed)", "mountpoint", p.mountpoint)
	}
	signals := make(chan os.Signal, 4)
	signalNotify(signals)
	defer signal.Stop(signals)
	s, err := o.serve(p, log.Logger)
	if err == nil {
		if err = s.startCrashRecord(o.settings(p)); err != nil {
			s.stop()
			s.mount.Wait()
			s.cleanup()
		}
	}
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
