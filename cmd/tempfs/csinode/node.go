package csinode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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
	flags, attrs, err := mountFlags(req.GetVolumeContext(), d.cfg.CheckFlag)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id := req.GetVolumeId()
	release, err := d.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if v := d.lookup(id); v != nil {
		if d.live(v) {
			switch {
			case v.rec.TargetPath != target:
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is already published at %s", id, v.rec.TargetPath)
			case !v.rec.sameVolume(target, attrs):
				return nil, status.Errorf(codes.AlreadyExists, "volume %s is already published at %s with other attributes %v", id, target, v.rec.Attributes)
			}
			return &csi.NodePublishVolumeResponse{}, nil
		}
		// Its daemon died: what it held is gone, so the volume is made afresh.
		d.log.Warn("the volume's daemon is gone: clearing it before publishing it again", "volume", id, "target", v.rec.TargetPath)
		if err := d.teardown(v); err != nil {
			return nil, status.Errorf(codes.Internal, "clearing the dead volume %s: %v", id, err)
		}
		d.set(id, nil)
	}
	if other := d.publishedAt(target); other != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "target path %s is in use by volume %s", target, other)
	}
	v, err := d.publish(ctx, id, target, flags, attrs)
	if err != nil {
		return nil, err
	}
	d.set(id, v)
	d.log.Info("published", "volume", id, "target", target, "pid", v.daemon.pid, "attributes", attrs)
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkPublish checks what a publish request must have and returns its clean target path.
func checkPublish(req *csi.NodePublishVolumeRequest) (string, error) {
	switch {
	case req.GetVolumeId() == "":
		return "", status.Error(codes.InvalidArgument, "volume_id is missing")
	case req.GetTargetPath() == "":
		return "", status.Error(codes.InvalidArgument, "target_path is missing")
	case !filepath.IsAbs(req.GetTargetPath()):
		return "", status.Errorf(codes.InvalidArgument, "target_path %q is not absolute", req.GetTargetPath())
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
		return "", status.Errorf(codes.InvalidArgument, "fsType %q is not supported: leave it empty", mount.GetFsType())
	}
	if len(mount.GetMountFlags()) > 0 {
		return "", status.Errorf(codes.InvalidArgument, "mount flags %q are not supported: set volume attributes instead", mount.GetMountFlags())
	}
	switch req.GetVolumeCapability().GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return "", status.Error(codes.InvalidArgument, "a tempfs volume lives on one node: multi-node access modes are not supported")
	}
	return filepath.Clean(req.GetTargetPath()), nil
}

// publishedAt names the volume published at target, if any.
func (d *Driver) publishedAt(target string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, v := range d.volumes {
		if v.rec.TargetPath == target {
			return id
		}
	}
	return ""
}

// publish makes the target directory and the volume's store directory, records the volume and starts its daemon.
// On failure all of it is undone.
func (d *Driver) publish(ctx context.Context, id, target string, flags []string, attrs map[string]string) (*volume, error) {
	// The CO makes the parent; the plugin makes the target path itself (CSI spec, NodePublishVolume).
	if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		code := codes.Internal
		if errors.Is(err, os.ErrNotExist) {
			code = codes.FailedPrecondition
		}
		return nil, status.Errorf(code, "making the target path: %v", err)
	}
	rec := &volumeRecord{
		VolumeID:   id,
		TargetPath: target,
		Attributes: attrs,
		Store:      d.storeOf(id),
		Published:  time.Now().UTC(),
	}
	v := &volume{rec: rec}
	undo := func(cause error) error {
		if err := d.teardown(v); err != nil {
			d.log.Error("undoing a failed publish", "volume", id, "err", err)
		}
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
	args := append([]string{"--store=" + rec.Store, "--options=allow_other,nosuid,nodev"}, flags...)
	args = append(args, "--", target)
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
	if v == nil || v.rec.TargetPath != filepath.Clean(req.GetTargetPath()) {
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := d.teardown(v); err != nil {
		return nil, status.Errorf(codes.Internal, "unpublishing volume %s: %v", id, err)
	}
	d.set(id, nil)
	d.log.Info("unpublished", "volume", id, "target", v.rec.TargetPath)
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
	if v.rec.TargetPath != filepath.Clean(req.GetVolumePath()) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, req.GetVolumePath())
	}
	u, err := d.cfg.VolumeUsage(v.rec.TargetPath)
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
