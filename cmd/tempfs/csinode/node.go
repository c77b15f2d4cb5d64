package csinode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeGetInfo names the node; volumes have no per-node limit and no topology (scratch space is node-local).
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

// NodeGetCapabilities offers volume stats; there is no staging: a volume is made at publish.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	rpc := func(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
		return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		rpc(csi.NodeServiceCapability_RPC_GET_VOLUME_STATS),
	}}, nil
}

// NodePublishVolume starts a tempfs daemon for the volume at the target path. The same call again is OK; the
// same volume with other attributes is AlreadyExists, at another target path FailedPrecondition.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target, err := checkPublish(req)
	if err != nil {
		return nil, err
	}
	flags, attrs, err := mountFlags(req.GetVolumeContext(), d.cfg.AttributeFlags, d.cfg.CheckFlag)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ask, err := d.memoryAsked(attrs)
	if err != nil {
		return nil, err
	}
	id := req.GetVolumeId()
	release, err := d.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	// Checked before anything is made: a target outside the kubelet's pods directory gets nothing.
	real, err := d.confine(req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	if v := d.lookup(id); v != nil {
		if d.live(v) {
			switch {
			case !v.rec.at(target, real):
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is already published at %s", id, quote(v.rec.TargetPath))
			case !v.rec.sameVolume(attrs):
				return nil, status.Errorf(codes.AlreadyExists, "volume %s is already published at %s with other attributes", id, quote(target))
			}
			return &csi.NodePublishVolumeResponse{}, nil
		}
		// Its daemon died: what it held is gone, so the volume is made afresh.
		d.log.Warn("the volume's daemon is gone: clearing it before publishing it again", "volume", id, "target", v.rec.TargetPath)
		if err := d.teardown(v, false); err != nil {
			return nil, status.Errorf(codes.Internal, "clearing the dead volume %s: %v", id, err)
		}
		d.set(id, nil)
	}
	if other := d.publishedAt(target, real); other != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "target path %s is in use by volume %s", quote(target), other)
	}
	v, err := d.publish(ctx, id, target, real, flags, attrs, ask)
	if err != nil {
		return nil, err
	}
	d.set(id, v)
	d.log.Info("published", "volume", id, "target", target, "mount", real, "pid", v.daemon.pid, "attributes", attrs,
		"memory", v.rec.MemoryGranted)
	return &csi.NodePublishVolumeResponse{}, nil
}

// memoryAsked is the RAM cap a volume asks for: its memory attribute, or the default.
func (d *Driver) memoryAsked(attrs map[string]string) (int64, error) {
	text, ok := attrs["memory"]
	if !ok {
		return d.cfg.DefaultMemory, nil
	}
	n, err := d.cfg.ParseSize(text)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "volume attribute memory=%s: %s", quote(text), shorten(err.Error(), text))
	}
	if n <= 0 {
		return 0, status.Errorf(codes.InvalidArgument, "volume attribute memory=%s: --memory must be larger than 0", quote(text))
	}
	return n, nil
}

// confine resolves a target path (symlinks followed, in it and in the kubelet directory) and returns its real
// path, which must lie under the kubelet's pods directory: anywhere else is InvalidArgument.
func (d *Driver) confine(target string) (string, error) {
	pods, err := podsDir(d.cfg.KubeletDir)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "target path %s: the kubelet directory %s (--kubelet-dir) cannot be resolved: %v",
			quote(target), quote(d.cfg.KubeletDir), pathCause(err))
	}
	real, err := resolveTarget(target)
	if err != nil {
		code := codes.Internal
		if errors.Is(err, os.ErrNotExist) {
			// The CO makes the target's parent. One that is missing outside the pods directory is still a target
			// outside it.
			code = codes.FailedPrecondition
			if !within(filepath.Clean(target), filepath.Join(filepath.Clean(d.cfg.KubeletDir), "pods")) {
				code = codes.InvalidArgument
			}
		}
		return "", status.Errorf(code, "resolving the target path %s: %v", quote(target), pathCause(err))
	}
	if !within(real, pods) {
		return "", status.Errorf(codes.InvalidArgument, "target path %s is not under the kubelet's pods directory %s (--kubelet-dir %s)",
			quote(target), quote(pods), quote(d.cfg.KubeletDir))
	}
	return real, nil
}

// pathCause is the errno of a path error without the path, which a message quotes on its own terms.
func pathCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkPublish checks what a publish request must have and returns its clean target path.
func checkPublish(req *csi.NodePublishVolumeRequest) (string, error) {
	switch {
	case req.GetVolumeId() == "":
		return "", status.Error(codes.InvalidArgument, "volume_id is missing")
	case req.GetTargetPath() == "":
		return "", status.Error(codes.InvalidArgument, "target_path is missing")
	case !filepath.IsAbs(req.GetTargetPath()):
		return "", status.Errorf(codes.InvalidArgument, "target_path %s is not absolute", quote(req.GetTargetPath()))
	case req.GetVolumeCapability() == nil:
		return "", status.Error(codes.InvalidArgument, "volume_capability is missing")
	case req.GetVolumeCapability().GetMount() == nil:
		return "", status.Error(codes.InvalidArgument, "only mount volumes are supported (tempfs is a filesystem, not a block device)")
	case req.GetReadonly():
		return "", status.Error(codes.InvalidArgument, "readOnly is not supported: a tempfs volume starts empty")
	}
	mount := req.GetVolumeCapability().GetMount()
	switch mount.GetFsType() {
	case "", "tempfs", "fuse.tempfs":
	default:
		return "", status.Errorf(codes.InvalidArgument, "fsType %s is not supported: leave it empty", quote(mount.GetFsType()))
	}
	if len(mount.GetMountFlags()) > 0 {
		return "", status.Errorf(codes.InvalidArgument, "mount flags %s are not supported: set volume attributes instead",
			quote(strings.Join(mount.GetMountFlags(), ",")))
	}
	switch req.GetVolumeCapability().GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return "", status.Error(codes.InvalidArgument, "a tempfs volume lives on one node: multi-node access modes are not supported")
	}
	return filepath.Clean(req.GetTargetPath()), nil
}

// publishedAt names the volume published at target (or its real path), if any.
func (d *Driver) publishedAt(target, real string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, v := range d.volumes {
		if v.rec.at(target, real) {
			return id
		}
	}
	return ""
}

// publish makes the target directory (at its real path) and the volume's store directory, grants the volume its
// RAM from the node's budget, records the volume and starts its daemon. On failure all of it is undone.
func (d *Driver) publish(ctx context.Context, id, target, real string, flags []string, attrs map[string]string, ask int64) (*volume, error) {
	// The CO makes the parent; the plugin makes the target path itself (CSI spec, NodePublishVolume).
	if err := os.Mkdir(real, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		code := codes.Internal
		if errors.Is(err, os.ErrNotExist) {
			code = codes.FailedPrecondition
		}
		return nil, status.Errorf(code, "making the target path %s: %v", quote(target), pathCause(err))
	}
	rec := &volumeRecord{
		VolumeID:    id,
		TargetPath:  target,
		MountPath:   real,
		Attributes:  attrs,
		MemoryAsked: ask,
		Store:       d.storeOf(id),
		Published:   time.Now().UTC(),
	}
	v := &volume{rec: rec}
	undo := func(cause error) error {
		if err := d.teardown(v, false); err != nil {
			d.log.Error("undoing a failed publish", "volume", id, "err", err)
		}
		d.ungrant(id)
		return cause
	}
	// Left by an earlier attempt that was cut short: the record says which, so nothing else is touched.
	if err := os.RemoveAll(rec.Store); err != nil {
		return nil, status.Errorf(codes.Internal, "clearing the volume's store directory: %v", err)
	}
	if err := os.Mkdir(rec.Store, 0o700); err != nil {
		return nil, undo(status.Errorf(codes.Internal, "making the volume's store directory: %v", err))
	}
	// Recorded before the daemon starts: a plugin that dies while it starts finds the daemon by its store.
	if err := d.records.save(rec); err != nil {
		return nil, undo(status.Error(codes.Internal, err.Error()))
	}
	rec.MemoryGranted = d.grant(id, ask)
	if rec.MemoryGranted < ask {
		d.log.Warn("the node's RAM budget is short: the volume gets less RAM than it asked, and keeps the rest of its data on disk",
			"volume", id, "asked", ask, "granted", rec.MemoryGranted, "budget", d.cfg.MemoryBudget)
	}
	args := []string{"--store=" + rec.Store, "--options=allow_other,nosuid,nodev"}
	// Under a holder, the volume outlives a crash of its daemon (an OOM kill, a bug).
	args = append([]string{"--hold"}, args...)
	for _, f := range flags {
		if !strings.HasPrefix(f, "--memory=") {
			args = append(args, f)
		}
	}
	args = append(args, "--memory="+strconv.FormatInt(rec.MemoryGranted, 10), "--", real)
	dm, err := startDaemon(ctx, d.cfg.Executable, args, d.cfg.DaemonLog)
	if err != nil {
		var se *startError
		if errors.As(err, &se) && se.badInput() {
			return nil, undo(status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err))
		}
		if errors.Is(err, syscall.EMFILE) {
			return nil, undo(status.Errorf(codes.ResourceExhausted,
				"starting the daemon of volume %s: %v (the plugin holds a descriptor per volume: raise its limit, ulimit -n)", id, err))
		}
		return nil, undo(status.Errorf(codes.Internal, "starting the daemon of volume %s: %v", id, err))
	}
	v.daemon = dm
	rec.PID = dm.pid
	if err := d.records.save(rec); err != nil {
		return nil, undo(status.Error(codes.Internal, err.Error()))
	}
	return v, nil
}

// NodeUnpublishVolume unmounts the volume (detaching it if busy), waits for its daemon to go and removes its store,
// target directory and record. A volume that is not published (again, or never) is OK, as the CSI spec asks.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	case req.GetTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is missing")
	}
	release, err := d.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	v := d.lookup(id)
	if v == nil || !v.rec.at(filepath.Clean(req.GetTargetPath()), realOrEmpty(req.GetTargetPath())) {
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := d.teardown(v, true); err != nil {
		return nil, status.Errorf(codes.Internal, "unpublishing volume %s: %v", id, err)
	}
	d.set(id, nil)
	d.log.Info("unpublished", "volume", id, "target", v.rec.TargetPath, "mount", v.rec.MountPath)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports bytes (RAM plus disk against the caps) and entries, from the daemon's status.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	case req.GetVolumePath() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_path is missing")
	}
	v := d.lookup(id)
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published on this node", id)
	}
	if !v.rec.at(filepath.Clean(req.GetVolumePath()), realOrEmpty(req.GetVolumePath())) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, quote(req.GetVolumePath()))
	}
	u, err := d.cfg.VolumeUsage(v.rec.MountPath)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: u.BytesTotal, Available: u.BytesAvailable, Used: u.BytesUsed},
			{Unit: csi.VolumeUsage_INODES, Total: u.InodesTotal, Available: u.InodesAvailable, Used: u.InodesUsed},
		},
	}, nil
}

// realOrEmpty is the real path of a request's path, or "" when it cannot be resolved (a symlink gone since).
func realOrEmpty(path string) string {
	real, err := resolveTarget(path)
	if err != nil {
		return ""
	}
	return real
}
