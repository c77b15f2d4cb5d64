package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/cmd/tempfs/csinode"
	"github.com/tempfs/tempfs/cmd/tempfs/limits"
	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

// csiOptions are the flags of `tempfs csi`.
type csiOptions struct {
	endpoint   string
	nodeID     string
	driverName string
	stateDir   string
	store      string
	kubeletDir string
	memory     sizeValue
	debug      bool
	supervise  bool
}

const (
	defaultDriverName = "tempfs.csi"
	defaultStateDir   = "/var/lib/tempfs-csi"
	defaultKubeletDir = "/var/lib/kubelet"
)

// AddFlags registers the flags of `tempfs csi` on fs.
func (o *csiOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.endpoint, "endpoint", "", "the Unix socket to serve CSI on, as unix:///PATH (the kubelet's plugin directory)")
	fs.StringVar(&o.nodeID, "node-id", "", "this node's name, as NodeGetInfo answers it (in a DaemonSet: the pod's spec.nodeName)")
	fs.StringVar(&o.driverName, "driver-name", defaultDriverName, "the CSI driver's name, as the CSIDriver object and pods name it")
	fs.StringVar(&o.stateDir, "state-dir", defaultStateDir, "where the plugin records its volumes, to find them again after a restart (a host directory)")
	fs.StringVar(&o.store, "store", "", "parent of each volume's private disk store (default: STATE-DIR/stores)")
	fs.StringVar(&o.kubeletDir, "kubelet-dir", defaultKubeletDir, "the kubelet's root directory: a target path that does not lie under its pods directory (symlinks followed) is refused")
	fs.Var(&o.memory, "memory", "the node's RAM budget: all volumes' file data in RAM together; each volume's memory is granted from it at publish, and a volume that finds it used keeps its data on disk (default: a quarter of the smaller of host RAM and the plugin's cgroup memory limit)")
	fs.BoolVar(&o.debug, "debug", false, "log every CSI call")
	fs.BoolVar(&o.supervise, "supervise", os.Getpid() == 1, "run the plugin in a child process and start it again when it dies, so that a crash does not end the container and its volumes (default: on when tempfs csi is a container's first process)")
}

func newCSICommand() *cobra.Command {
	o := &csiOptions{}
	cmd := &cobra.Command{
		Use:   "csi --endpoint unix:///PATH --node-id NAME",
		Short: "Serve tempfs as a Kubernetes CSI node plugin for inline ephemeral volumes",
		Long: `Serve the CSI Identity and Node services on a Unix socket, so that the kubelet gives each pod
that asks for it a fresh tempfs as an inline ephemeral volume (deploy/kubernetes has the
CSIDriver, the DaemonSet and an example pod). There is no controller service.

NodePublishVolume starts one 'tempfs mount' daemon per volume at the pod's target path, in a
session of its own, so that a restart of the plugin does not take the pods' scratch space with
it; NodeUnpublishVolume unmounts it (detaching it if busy), waits for the daemon to go and
removes its disk store and the target directory. Each volume is recorded in --state-dir; at
start the plugin adopts the volumes whose daemons still serve them and clears the others.

Target paths are resolved (symlinks followed, also in --kubelet-dir) before anything is mounted,
found, unmounted or removed, and must lie under the kubelet's pods directory.

RAM is bounded per node: --memory is a budget for all volumes together. At publish each volume
is granted its memory attribute (default: the default of tempfs mount --memory) or what is left of
the budget when that is less, down to none; its daemon keeps the rest of its data on disk, so a
write never fails for lack of RAM while the disk has room. The volume's RAM is charged to the
plugin's pod, whose daemons write it: give the plugin container a memory request that covers the
budget.

Volume attributes are the mount flags in camelCase: maxSize, memory, disk, mode, maxAge,
owner, ownerQuota (sizes also as Kubernetes writes them: 4Mi, 2Gi). Anything else, or a bad
value, is refused with InvalidArgument; the kubelet's own csi.storage.k8s.io/* attributes are
ignored. Every volume is mounted with allow_other, nosuid and nodev. The plugin runs as root.

In a container the daemons end with the container's first process: with --supervise (the default
when tempfs csi is PID 1) that process is a supervisor which starts the plugin again when it dies.`,
		Example: `  tempfs csi --endpoint unix:///var/lib/kubelet/plugins/tempfs.csi/csi.sock --node-id "$NODE_NAME"
  tempfs csi --endpoint unix:///csi/csi.sock --node-id node-1 --state-dir /var/lib/tempfs-csi`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCSI(cmd.Context(), o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// driverNamePattern is the CSI spec's rule for a plugin name: at most 63 characters, alphanumerics, '-' and
// '.' inside, beginning and ending with an alphanumeric.
var driverNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$`)

// csiConfig checks the flags (usage errors, exit status 2) and returns the plugin's configuration.
func (o *csiOptions) csiConfig() (csinode.Config, string, error) {
	var cfg csinode.Config
	switch {
	case o.endpoint == "":
		return cfg, "", usageErrorf("--endpoint is required (e.g. unix:///csi/csi.sock)")
	case o.nodeID == "":
		return cfg, "", usageErrorf("--node-id is required (in a DaemonSet, the pod's spec.nodeName)")
	case !driverNamePattern.MatchString(o.driverName):
		return cfg, "", usageErrorf("--driver-name %q: use at most 63 letters, digits, '-' and '.', beginning and ending with a letter or digit", o.driverName)
	case o.stateDir == "":
		return cfg, "", usageErrorf("--state-dir must not be empty")
	case !filepath.IsAbs(o.kubeletDir):
		return cfg, "", usageErrorf("--kubelet-dir %q must be an absolute path", o.kubeletDir)
	case o.memory.set && o.memory.bytes <= 0:
		return cfg, "", usageErrorf("--memory must be larger than 0")
	}
	socket, err := csinode.SocketPath(o.endpoint)
	if err != nil {
		return cfg, "", usageErrorf("--%v", err)
	}
	stateDir, err := filepath.Abs(o.stateDir)
	if err != nil {
		return cfg, "", usageErrorf("--state-dir: %v", err)
	}
	store := filepath.Join(stateDir, "stores")
	if o.store != "" {
		if store, err = filepath.Abs(o.store); err != nil {
			return cfg, "", usageErrorf("--store: %v", err)
		}
	}
	if os.Geteuid() != 0 {
		return cfg, "", usageErrorf("tempfs csi must run as root: it mounts volumes for pods of any user")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return cfg, "", usageErrorf("/dev/fuse is missing: load the fuse module (modprobe fuse), or give the container /dev/fuse")
	}
	exe, err := os.Executable()
	if err != nil {
		return cfg, "", failure(fmt.Errorf("finding this executable, which serves the volumes: %w", err))
	}
	defaultMemory, _ := limits.DefaultMemoryCap()
	budget := defaultMemory
	if o.memory.set {
		budget = o.memory.bytes
	}
	limit, where, limited := limits.CgroupMemoryLimit()
	budget, warning := fitNodeBudget(budget, limit, where, limited)
	return csinode.Config{
		BudgetWarning:  warning,
		KubeletDir:     filepath.Clean(o.kubeletDir),
		MemoryBudget:   budget,
		DefaultMemory:  defaultMemory,
		ParseSize:      naming.ParseSize,
		DriverName:     o.driverName,
		NodeID:         o.nodeID,
		Version:        versionString(),
		StateDir:       filepath.Join(stateDir, "volumes"),
		StoreRoot:      store,
		Executable:     exe,
		DaemonLog:      os.Stderr,
		AttributeFlags: attributeFlags(),
		CheckFlag:      checkMountFlag,
		VolumeUsage:    volumeUsage,
		Mounts:         fsMounts{},
	}, socket, nil
}

func runCSI(ctx context.Context, o *csiOptions) error {
	cfg, socket, err := o.csiConfig()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.supervise && os.Getenv(csinode.SupervisedEnv) == "" {
		// Supervise passes SIGTERM and SIGINT on to the plugin and returns once it has stopped.
		cfg.Logger.Info("supervising the plugin", "endpoint", socket)
		if status := csinode.Supervise(ctx, cfg.Executable, os.Args[1:], cfg.Logger); status != 0 {
			return &exitError{code: status}
		}
		return nil
	}
	for _, dir := range []struct{ flag, path string }{{"--state-dir", cfg.StateDir}, {"--store", cfg.StoreRoot}} {
		if err := os.MkdirAll(dir.path, 0o700); err != nil {
			return usageErrorf("%s: %v", dir.flag, err)
		}
	}
	// The plugin holds a pidfd per volume.
	if _, _, err := limits.RaiseDescriptors(); err != nil {
		cfg.Logger.Warn("could not raise the descriptor limit", "err", err)
	}
	drv, err := csinode.New(cfg)
	if errors.Is(err, csinode.ErrStateDirInUse) {
		return usageErrorf("--state-dir %v", err)
	}
	if err != nil {
		return failure(err)
	}
	defer drv.Close()
	lis, err := csinode.Listen(socket)
	if err != nil {
		return usageErrorf("--endpoint: %v", err)
	}
	defer os.Remove(socket)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	csinode.SupervisedReady()
	if cfg.BudgetWarning != "" {
		cfg.Logger.Warn(cfg.BudgetWarning)
	}
	cfg.Logger.Info("serving CSI", "endpoint", socket, "driver", cfg.DriverName, "node", cfg.NodeID,
		"state_dir", cfg.StateDir, "store", cfg.StoreRoot, "kubelet_dir", cfg.KubeletDir,
		"memory_budget", naming.FormatSize(cfg.MemoryBudget), "version", cfg.Version)
	if err := drv.Serve(ctx, lis); err != nil {
		return failure(err)
	}
	cfg.Logger.Info("stopped; the volumes' daemons keep serving their pods")
	return nil
}

// checkMountFlag checks a volume attribute with the parser of the `tempfs mount` flag it becomes.
func checkMountFlag(name, value string) error {
	flag := mountFlagSet().Lookup(name)
	if flag == nil {
		return fmt.Errorf("tempfs mount has no --%s flag", name)
	}
	// The parser's own error: the caller says which attribute and value (pflag's wrapper would quote it again).
	return flag.Value.Set(value)
}

// volumeUsage reads a volume's bytes and entries from one statfs of the mount, as df and df -i do: total and
// available as statfs gives them (the RAM cap plus what the disk can take), used as total minus free, so that
// used plus available is total. Used bytes are the RAM and disk the files take, in whole blocks; used entries
// count every file, directory and other entry, the root too.
func volumeUsage(mountpoint string) (csinode.Usage, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(mountpoint, &sfs); err != nil {
		return csinode.Usage{}, fmt.Errorf("statfs %s: %w", mountpoint, err)
	}
	return csinode.Usage{
		BytesTotal:      int64(sfs.Blocks) * sfs.Bsize,
		BytesAvailable:  int64(sfs.Bavail) * sfs.Bsize,
		BytesUsed:       int64(sfs.Blocks-sfs.Bfree) * sfs.Bsize,
		InodesTotal:     int64(sfs.Files),
		InodesAvailable: int64(sfs.Ffree),
		InodesUsed:      int64(sfs.Files - sfs.Ffree),
	}, nil
}

// fsMounts answers the plugin's questions about the mount table with the fs package's helpers.
type fsMounts struct{}

func (fsMounts) IsLive(path string) bool              { return tempfs.IsTempfsMount(path) && !tempfs.IsStale(path) }
func (fsMounts) IsStale(path string) bool             { return tempfs.IsStale(path) }
func (fsMounts) Unmount(path string, lazy bool) error { return tempfs.Unmount(path, lazy) }

// fitNodeBudget keeps the node's RAM budget under the plugin's memory cgroup limit, when it has one: the
// volumes' daemons are the plugin's children, in its cgroup, and their RAM files are memfd pages charged there,
// so a budget past the limit would end in an OOM kill of the plugin's pod and every volume with it. As tempfs
// mount does with --memory, a budget that does not fit is clamped to three quarters of the limit with a
// warning, not refused.
func fitNodeBudget(budget, limit int64, where string, limited bool) (int64, string) {
	if !limited || budget <= limits.MemoryCeiling(limit) {
		return budget, ""
	}
	ceiling := limits.MemoryCeiling(limit)
	return ceiling, fmt.Sprintf("--memory %s does not fit under the plugin's memory cgroup limit %s (%s): the volumes "+
		"together keep at most %s in RAM and the rest on disk; raise the container's memory limit, or give --memory %s or less",
		naming.FormatSize(budget), naming.FormatSize(limit), where, naming.FormatSize(ceiling), naming.FormatSize(ceiling))
}
