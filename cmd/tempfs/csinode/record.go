package csinode

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// volumeRecord is what the plugin remembers of a published volume across its own restarts: one JSON file per
// volume in the state directory, written before the volume's daemon starts and removed after it is gone.
type volumeRecord struct {
	VolumeID string `json:"volume_id"`
	// TargetPath is the target path as the kubelet names it; MountPath is its real path (symlinks followed), where
	// the volume is mounted and the only path the plugin unmounts or removes. A record of an older plugin has no
	// MountPath: it is resolved from TargetPath when the record is read.
	TargetPath string            `json:"target_path"`
	MountPath  string            `json:"mount_path,omitempty"`
	Attributes map[string]string `json:"attributes"`
	// MemoryAsked is the RAM cap the volume asked for (its memory attribute, or the default); MemoryGranted is
	// what the node's budget gave it, the daemon's --memory. A record of an older plugin has neither (0).
	MemoryAsked   int64 `json:"memory_asked,omitempty"`
	MemoryGranted int64 `json:"memory_granted,omitempty"`
	// Store is the volume's own directory for its daemon's disk store (STORE-ROOT/tempfs-csi-KEY), removed with
	// the volume. Its path is also how the plugin finds the daemon after a restart (it is on the daemon's command
	// line).
	Store     string    `json:"store"`
	PID       int       `json:"pid,omitempty"`
	Published time.Time `json:"published"`
}

// sameVolume reports whether a publish request asks for what r already is.
func (r *volumeRecord) sameVolume(attrs map[string]string) bool {
	return maps.Equal(r.Attributes, attrs)
}

// at reports whether the volume is published at target, named as the request names it or by its real path.
func (r *volumeRecord) at(target, real string) bool {
	return r.TargetPath == target || (real != "" && r.MountPath == real)
}

const recordSuffix = ".json"

// volumeKey names a volume's files: volume ids are the CO's strings (any length, any bytes), so files are named
// after a hash of them.
func volumeKey(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return "vol-" + hex.EncodeToString(sum[:16])
}

// records is the state directory's set of volume records.
type records struct {
	dir string
	log *slog.Logger
}

func (rs records) path(volumeID string) string {
	return filepath.Join(rs.dir, volumeKey(volumeID)+recordSuffix)
}

// save writes r atomically: a reader (the next plugin start) sees the old record or the new one, never a part.
func (rs records) save(r *volumeRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(rs.dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), rs.path(r.VolumeID))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving the record of volume %s: %w", r.VolumeID, err)
	}
	return syncDir(rs.dir)
}

func (rs records) remove(volumeID string) error {
	if err := os.Remove(rs.path(volumeID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the record of volume %s: %w", volumeID, err)
	}
	return syncDir(rs.dir)
}

// load reads every record. A file that is not a record (cut short by a crash of the machine, edited by hand) is
// logged and left for a person to look at; leftovers of interrupted saves are removed.
func (rs records) load() ([]*volumeRecord, error) {
	entries, err := os.ReadDir(rs.dir)
	if err != nil {
		return nil, err
	}
	var out []*volumeRecord
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			os.Remove(filepath.Join(rs.dir, name))
			continue
		}
		if !strings.HasSuffix(name, recordSuffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(rs.dir, name))
		if err != nil {
			rs.log.Warn("cannot read a volume record; leaving it", "file", name, "err", err)
			continue
		}
		r := &volumeRecord{}
		if err := json.Unmarshal(data, r); err != nil || r.VolumeID == "" || volumeKey(r.VolumeID)+recordSuffix != name {
			rs.log.Warn("not a volume record; leaving it", "file", filepath.Join(rs.dir, name), "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
