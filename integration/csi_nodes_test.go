package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The layouts of real nodes: a kubelet directory reached through a symlink, targets that leave it, and many
// volumes on one node's RAM budget.

// mountsUnder lists the mountpoints at or below dir (a real path), from /proc/self/mountinfo.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// detachAllUnder detaches whatever a failed test left mounted under dir (innermost first), so that the next
// tests and the machine are not left with it.
func detachAllUnder(t *testing.T, dir string) {
	t.Cleanup(func() {
		mounts := mountsUnder(dir)
		for i := len(mounts) - 1; i >= 0; i-- {
			t.Errorf("left mounted: %s", mounts[i])
			_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
		}
	})
}

// kubeletTarget makes the parent of a pod's volume target path under pods, as the kubelet does before it calls
// NodePublishVolume, and returns the target path.
func kubeletTarget(t *testing.T, pods, podUID, volume string) string {
	t.Helper()
	parent := filepath.Join(pods, podUID, "volumes", "kubernetes.io~csi", volume)
	if err := os.MkdirAll(parent, 0o750); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, "mount")
}

// TestCSISymlinkedKubeletDir publishes and unpublishes through symlinks, as on nodes whose kubelet directory
// lives on another disk: the kubelet directory itself a symlink (/var/lib/kubelet -> /data/kubelet), and a
// target path whose last component is a symlink. Publish mounts at the real path, a retry is OK and starts
// nothing, unpublish (and its retry) leaves nothing mounted, no daemon, no directory; a restart of the plugin in
// between adopts the volume at its real path.
func TestCSISymlinkedKubeletDir(t *testing.T) {
	t.Run("kubelet dir is a symlink", func(t *testing.T) {
		dir := t.TempDir()
		detachAllUnder(t, dir)
		realKubelet := filepath.Join(dir, "data", "kubelet")
		if err := os.MkdirAll(filepath.Join(realKubelet, "pods"), 0o750); err != nil {
			t.Fatal(err)
		}
		kubelet := filepath.Join(dir, "kubelet")
		if err := os.Symlink("data/kubelet", kubelet); err != nil {
			t.Fatal(err)
		}
		p := startCSI(t, dir, "--kubelet-dir", kubelet)
		target := kubeletTarget(t, p.Pods, "pod-1", "scratch")
		real := filepath.Join(realKubelet, "pods", "pod-1", "volumes", "kubernetes.io~csi", "scratch", "mount")
		symlinkedLifecycle(t, p, dir, "csi-1", target, real, true, func() {})
	})
	t.Run("last component is a symlink", func(t *testing.T) {
		dir := t.TempDir()
		detachAllUnder(t, dir)
		p := startCSI(t, dir)
		target := kubeletTarget(t, p.Pods, "pod-2", "scratch")
		real := filepath.Join(p.Pods, "pod-2", "scratch-data")
		layout := func() {
			if err := os.Mkdir(real, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../../../scratch-data", target); err != nil {
				t.Fatal(err)
			}
		}
		layout()
		symlinkedLifecycle(t, p, dir, "csi-2", target, real, false, layout)
	})
}

// symlinkedLifecycle plays the kubelet for volume id at target, which resolves to real; layout makes the
// symlinks again after an unpublish removed them.
func symlinkedLifecycle(t *testing.T, p *csiPlugin, dir, id, target, real string, restart bool, layout func()) {
	t.Helper()
	p.publish(t, id, target, map[string]string{"maxSize": "64Ki"})
	if !isMounted(real) {
		t.Fatalf("%s (the real path of %s) is not mounted after publish; mounts under the test dir: %v", real, target, mountsUnder(dir))
	}
	// A pod's process writes through the path the kubelet gave.
	sh(t, target, "echo hello > f; head -c 200000 /dev/zero > spilled")
	// The daemon's mountpoint argument may name either path.
	servers := func() []int { return append(volumeDaemons(real), volumeDaemons(target)...) }
	daemons := servers()
	if len(daemons) != 1 {
		t.Fatalf("daemons serving %s: %v, want one", real, daemons)
	}
	if _, err := p.Node.NodePublishVolume(csiCall(t), publishRequest(id, target, map[string]string{"maxSize": "64Ki"})); err != nil {
		t.Errorf("publishing again (the kubelet's retry): %v", err)
	}
	if now := servers(); len(now) != 1 || now[0] != daemons[0] {
		t.Errorf("daemons after publishing again: %v, want %v", now, daemons)
	}
	_, inodes := p.volumeStats(t, id, target)
	if inodes.GetUsed() != 3 {
		t.Errorf("inodes used: %d, want 3 (the root and two files)", inodes.GetUsed())
	}
	if restart {
		p.kill(t)
		p = startCSI(t, filepath.Dir(p.Socket), "--kubelet-dir", filepath.Dir(p.Pods))
		if !strings.Contains(p.Log(), "adopted a volume") {
			t.Errorf("the restarted plugin did not adopt the volume; log:\n%s", p.Log())
		}
	}
	start := time.Now()
	p.unpublish(t, id, target)
	t.Logf("publish at %s (real path %s), unpublish: OK in %v", target, real, time.Since(start).Round(time.Millisecond))
	if time.Since(start) > 8*time.Second {
		t.Errorf("unpublish took %v: the daemon did not go when its mount did", time.Since(start))
	}
	assertVolumeGone(t, p, real)
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target path %s is still there (err %v)", target, err)
	}
	if len(servers()) > 0 {
		t.Errorf("daemons still serve the volume: %v", servers())
	}
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("still mounted after unpublish: %v", m)
	}
	// The kubelet's retry of unpublish, and a new publish and unpublish at the same place.
	p.unpublish(t, id, target)
	layout()
	p.publish(t, id, target, nil)
	sh(t, target, "echo again > f")
	// The daemon dies: its dead mount is found through the symlinks, and the kubelet's retry of publish makes the
	// volume afresh.
	killVolumeDaemon(t, real)
	if _, err := p.Node.NodePublishVolume(csiCall(t), publishRequest(id, target, nil)); err != nil {
		t.Fatalf("publishing again after the daemon died: %v; log:\n%s", err, p.Log())
	}
	sh(t, target, "echo fresh > f")
	p.unpublish(t, id, target)
	assertVolumeGone(t, p, real)
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("still mounted after the second unpublish: %v", m)
	}
}

// TestCSITargetOutsideKubeletDir: a target path that does not resolve to a place under the kubelet's pods
// directory (elsewhere, through "..", through a symlink in any component, the pods directory itself) is
// InvalidArgument, and nothing is made or mounted anywhere.
func TestCSITargetOutsideKubeletDir(t *testing.T) {
	dir := t.TempDir()
	detachAllUnder(t, dir)
	p := startCSI(t, dir)
	outside := filepath.Join(dir, "outside")
	if err := os.Mkdir(outside, 0o750); err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join(p.Pods, "pod-x")
	if err := os.Mkdir(podDir, 0o750); err != nil {
		t.Fatal(err)
	}
	// A symlink as the last component, and one in the middle, both leading out.
	if err := os.Symlink(filepath.Join(outside, "last"), filepath.Join(podDir, "last-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(podDir, "dir-link")); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, target, madeAt string }{
		{"elsewhere", filepath.Join(outside, "mount"), filepath.Join(outside, "mount")},
		{"up through ..", podDir + "/../../../outside/dots/", filepath.Join(outside, "dots")},
		// Lexically inside (pods/pod-x/escape); the kernel takes ".." after the symlink, out of the directory.
		{"up through .. after a symlink", podDir + "/dir-link/../escape", filepath.Join(dir, "escape")},
		{"last component a symlink out", filepath.Join(podDir, "last-link"), filepath.Join(outside, "last")},
		{"a directory a symlink out", filepath.Join(podDir, "dir-link", "mount"), filepath.Join(outside, "mount")},
		{"the pods directory itself", p.Pods, ""},
		{"the kubelet directory", filepath.Dir(p.Pods), ""},
	}
	for i, tc := range cases {
		id := fmt.Sprint("escape-", i)
		_, err := p.Node.NodePublishVolume(csiCall(t), publishRequest(id, tc.target, map[string]string{"maxSize": "4Ki"}))
		wantCode(t, tc.name, err, codes.InvalidArgument)
		msg := status.Convert(err).Message()
		if err != nil && !strings.Contains(msg, "kubelet") {
			t.Errorf("%s: message %q does not say the target must be under the kubelet's directory", tc.name, msg)
		}
		t.Logf("%s: %v", tc.name, err)
		if tc.madeAt != "" {
			if _, err := os.Lstat(tc.madeAt); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s was made (err %v)", tc.name, tc.madeAt, err)
				_ = os.Remove(tc.madeAt)
			}
		}
		if m := mountsUnder(dir); len(m) > 0 {
			t.Errorf("%s: mounted %v", tc.name, m)
		}
		if len(volumeDaemons(tc.madeAt)) > 0 {
			t.Errorf("%s: a daemon serves %s", tc.name, tc.madeAt)
		}
		assertDirEmpty(t, p.Store, "store root")
		if records, _ := filepath.Glob(filepath.Join(p.StateDir, "volumes", "*.json")); len(records) > 0 {
			t.Errorf("%s: volume records left: %v", tc.name, records)
		}
	}
	// A target inside is still published, and its unpublish does not touch anything outside.
	inside := filepath.Join(podDir, "mount")
	p.publish(t, "inside", inside, nil)
	p.unpublish(t, "inside", inside)
	assertVolumeGone(t, p, inside)
	if _, err := os.Lstat(filepath.Join(podDir, "last-link")); err != nil {
		t.Errorf("a symlink in the pod's directory is gone: %v", err)
	}
}

// TestCSINodeMemoryBudget: three volumes asking 4 MiB of RAM each on a node budget of 10 MiB get 4, 4 and 2 MiB;
// each writes 6 MiB, all of which succeeds and reads back, with each volume's RAM within its grant and the sum
// within the budget (the rest spilled to disk). A volume that goes gives its grant back; a restarted plugin
// takes the grants of the volumes it adopts, so a volume published after it finds the budget used and keeps
// everything on disk.
func TestCSINodeMemoryBudget(t *testing.T) {
	const budget = 10 << 20
	dir := t.TempDir()
	detachAllUnder(t, dir)
	p := startCSI(t, dir, "--memory", "10Mi")
	attrs := map[string]string{"memory": "4Mi", "maxSize": "0"} // maxSize 0: only the RAM cap moves a file to disk
	type vol struct {
		id, target string
		grant      int64
	}
	publish := func(name string, grant int64) vol {
		v := vol{id: "csi-" + name, target: kubeletTarget(t, p.Pods, name, "scratch"), grant: grant}
		p.publish(t, v.id, v.target, attrs)
		return v
	}
	// Six files of 1 MiB each, written by a pod's process, then checked against their checksums.
	write := func(v vol) {
		sh(t, v.target, "for i in 1 2 3 4 5 6; do head -c 1048576 /dev/urandom > f$i; done; cksum f1 f2 f3 f4 f5 f6 > ../sums")
	}
	check := func(v vol) (ram, disk int64) {
		want, err := os.ReadFile(filepath.Join(filepath.Dir(v.target), "sums"))
		if err != nil {
			t.Fatal(err)
		}
		if got := sh(t, v.target, "cksum f1 f2 f3 f4 f5 f6"); got != string(want) {
			t.Errorf("%s reads back\n%s want\n%s", v.id, got, want)
		}
		st := daemonStats(t, v.target)
		ram, disk = int64(st["ram_bytes"].(float64)), int64(st["disk_bytes"].(float64))
		if cap := int64(st["ram_cap"].(float64)); cap != v.grant {
			t.Errorf("%s: RAM cap %d, want its grant %d", v.id, cap, v.grant)
		}
		if ram > v.grant {
			t.Errorf("%s holds %d bytes in RAM, over its grant %d", v.id, ram, v.grant)
		}
		if ram+disk < 6<<20 {
			t.Errorf("%s holds %d bytes in RAM and %d on disk, less than the 6 MiB written", v.id, ram, disk)
		}
		return ram, disk
	}
	// Each volume's RAM as its daemon counts it, and as the kernel does: the pages allocated to the daemon's memfds.
	measure := func(when string, vols ...vol) {
		var sum, sumPages int64
		for _, v := range vols {
			ram, disk := check(v)
			pages := memfdBytes(t, v.target)
			sum, sumPages = sum+ram, sumPages+pages
			t.Logf("%s: %s granted %.1f MiB: RAM %.2f MiB (memfd pages %.2f MiB), disk %.2f MiB", when, v.id, mib(v.grant),
				mib(ram), mib(pages), mib(disk))
			if pages > v.grant {
				t.Errorf("%s: %s's daemon holds %d bytes of memfd pages, over its grant %d", when, v.id, pages, v.grant)
			}
		}
		t.Logf("%s: RAM of all volumes %.2f MiB (memfd pages %.2f MiB), budget %.1f MiB", when, mib(sum), mib(sumPages), mib(budget))
		if sum > budget || sumPages > budget {
			t.Errorf("%s: the volumes hold %d bytes of RAM (%d of memfd pages) together, over the budget %d", when, sum, sumPages, budget)
		}
	}

	a, b, c := publish("a", 4<<20), publish("b", 4<<20), publish("c", 2<<20)
	for _, v := range []vol{a, b, c} {
		write(v)
	}
	measure("three volumes", a, b, c)
	if ram, _ := check(a); ram < 3<<20 {
		t.Errorf("the first volume holds only %d bytes in RAM: its grant is not used", ram)
	}
	if !strings.Contains(p.Log(), "less RAM than it asked") {
		t.Errorf("the plugin did not log that the third volume got less than it asked; log:\n%s", p.Log())
	}

	// a goes: its 4 MiB go back to the budget, and d gets them.
	p.unpublish(t, a.id, a.target)
	assertOneVolumeGone(t, p, a.id, a.target)
	d := publish("d", 4<<20)
	write(d)
	measure("a gone, d published", b, c, d)

	// The plugin restarts: it adopts b, c and d with their grants, so e finds the budget used.
	p.kill(t)
	p = startCSI(t, dir, "--memory", "10Mi")
	e := publish("e", 1)
	write(e)
	if ram, disk := check(e); ram != 0 || disk < 6<<20 {
		t.Errorf("e, published with the budget used, holds %d bytes in RAM and %d on disk; want none in RAM", ram, disk)
	}
	measure("after a restart, e published", b, c, d, e)
	for _, v := range []vol{b, c, d, e} {
		p.unpublish(t, v.id, v.target)
		assertOneVolumeGone(t, p, v.id, v.target)
	}
	assertVolumeGone(t, p, e.target)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// memfdBytes is the RAM allocated to the memfds of the daemon serving target: the st_blocks of each memfd it
// holds open, read through /proc/PID/fd (which reaches the memfd's inode).
func memfdBytes(t *testing.T, target string) int64 {
	t.Helper()
	pids := volumeDaemons(target)
	if len(pids) != 1 {
		t.Fatalf("daemons serving %s: %v, want one", target, pids)
	}
	// The daemon itself, not its holder, which holds copies of the same memfds.
	pid := pids[0]
	if held := volumeHeldDaemon(target); held != 0 {
		pid = held
	}
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(fds, e.Name()))
		// The crash record is the daemon's memfd too, but holds no file data: its size is bounded apart.
		if err != nil || !strings.HasPrefix(link, "/memfd:") || strings.HasPrefix(link, "/memfd:tempfs-crash-record") {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(fds, e.Name()), &st); err == nil {
			sum += st.Blocks * 512
		}
	}
	return sum
}

// assertOneVolumeGone checks that nothing of one volume is left while others live: no mount, no daemon, no target
// directory, no store directory, no record (named as the plugin names them, after a hash of the volume id).
func assertOneVolumeGone(t *testing.T, p *csiPlugin, id, target string) {
	t.Helper()
	if isMounted(target) {
		t.Errorf("%s is still mounted", target)
	}
	eventually(t, 10*time.Second, "the volume's daemon is still running", func() bool { return len(volumeDaemons(target)) == 0 })
	sum := sha256.Sum256([]byte(id))
	key := "vol-" + hex.EncodeToString(sum[:16])
	for _, path := range []string{target, filepath.Join(p.Store, "tempfs-csi-"+key), filepath.Join(p.StateDir, "volumes", key+".json")} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("volume %s: %s is still there (err %v)", id, path, err)
		}
	}
}

// TestCSIShortErrorsAndStats: a bad attribute of a megabyte is refused with a message that quotes 100 bytes of
// it, not all of it; NodeGetVolumeStats adds up as df does: used + available = total, for bytes and inodes.
func TestCSIShortErrorsAndStats(t *testing.T) {
	dir := t.TempDir()
	detachAllUnder(t, dir)
	p := startCSI(t, dir)
	target := kubeletTarget(t, p.Pods, "pod-s", "scratch")
	huge := "7" + strings.Repeat("Q", 1<<20)
	for _, attrs := range []map[string]string{{"maxSize": huge}, {"owner": huge}, {"maxAge": huge}, {huge: "1"}} {
		_, err := p.Node.NodePublishVolume(csiCall(t), publishRequest("bad", target, attrs))
		wantCode(t, "a megabyte attribute", err, codes.InvalidArgument)
		msg := status.Convert(err).Message()
		t.Logf("%d bytes of message: %.160q...", len(msg), msg)
		if len(msg) > 500 || strings.Contains(msg, huge[:101]) || !strings.Contains(msg, huge[:100]) {
			t.Errorf("a megabyte attribute: message of %d bytes: %.300q...", len(msg), msg)
		}
	}
	p.publish(t, "stats", target, map[string]string{"maxSize": "4Ki", "memory": "8Mi", "disk": "64Mi"})
	sh(t, target, "mkdir d; echo a > d/x; echo b > y; head -c 100000 /dev/zero > spilled")
	bytes, inodes := p.volumeStats(t, "stats", target)
	df := strings.Fields(strings.Split(strings.TrimSpace(sh(t, target, "df -i -P .")), "\n")[1])
	t.Logf("stats: bytes %v; inodes %v; df -i: %v", bytes, inodes, df)
	for _, u := range []*csi.VolumeUsage{bytes, inodes} {
		if u.GetUsed()+u.GetAvailable() != u.GetTotal() {
			t.Errorf("%v: used %d + available %d != total %d", u.GetUnit(), u.GetUsed(), u.GetAvailable(), u.GetTotal())
		}
	}
	if inodes.GetUsed() != 5 || df[2] != "5" {
		t.Errorf("inodes used %d, df -i %s; want 5 (the root, d, d/x, y, spilled)", inodes.GetUsed(), df[2])
	}
	p.unpublish(t, "stats", target)
	assertVolumeGone(t, p, target)
}

// TestCSINodeBudgetUnderThePluginsLimit: the volumes' daemons are the plugin's children, in its memory cgroup,
// so a node budget past the plugin's limit is kept under it (with a warning at start) and no volume is
// granted more RAM than the limit holds.
func TestCSINodeBudgetUnderThePluginsLimit(t *testing.T) {
	const limit = 256 << 20
	cgroup, _ := memoryCgroup(t, limit)
	p := startCSIVia(t, t.TempDir(), inCgroup(cgroup), nil, "--memory", "1Gi")
	if !strings.Contains(p.Log(), "does not fit under the plugin's memory cgroup limit") {
		t.Errorf("no warning that the budget was clamped; log:\n%s", p.Log())
	}
	// Each daemon alone keeps its own cap under the cgroup's limit; together they must too.
	var sum float64
	for _, id := range []string{"a", "b"} {
		target := filepath.Join(p.Pods, id)
		p.publish(t, id, target, map[string]string{"memory": "512Mi"})
		// A volume granted nothing runs with a cap of 1 byte, which holds no file (the smallest RAM slot is
		// 512 bytes): it counts as none.
		if got := daemonStats(t, target)["ram_cap"].(float64); got >= 512 {
			sum += got
		}
		t.Cleanup(func() { p.unpublish(t, id, target) })
	}
	if sum > limit/4*3 {
		t.Errorf("the volumes' RAM caps add up to %.0f MiB under a plugin limit of %d MiB (at most %d)", sum/(1<<20), limit>>20, limit/4*3>>20)
	}
}
