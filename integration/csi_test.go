package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// csiPlugin is a running `tempfs csi` on a Unix socket, with its state and store directories, as a kubelet
// sees it: the Identity and Node clients.
type csiPlugin struct {
	Socket   string
	StateDir string
	Store    string
	// Pods is the pods directory of the plugin's kubelet directory (dir/kubelet unless the test names another with
	// --kubelet-dir): where target paths must lie.
	Pods     string
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
	conn     *grpc.ClientConn
	Node     csi.NodeClient
	Identity csi.IdentityClient
}

// startCSI runs `tempfs csi` on a socket in dir, with its state and stores in dir too (so that a restart with the
// same dir finds its volumes), and returns once Probe answers ready. Cleanup stops it with SIGTERM. Its kubelet
// directory is dir/kubelet (made with its pods directory) unless args give --kubelet-dir.
func startCSI(t *testing.T, dir string, args ...string) *csiPlugin {
	t.Helper()
	return startCSIVia(t, dir, nil, nil, args...)
}

// startCSIVia is startCSI with the plugin started through a wrapper command that execs it (unshare without
// --fork, say) and with attr.
func startCSIVia(t *testing.T, dir string, wrapper []string, attr *syscall.SysProcAttr, args ...string) *csiPlugin {
	t.Helper()
	requireFUSE(t)
	p := &csiPlugin{
		Socket:   filepath.Join(dir, "csi.sock"),
		StateDir: filepath.Join(dir, "state"),
		Store:    filepath.Join(dir, "stores"),
		Pods:     filepath.Join(dir, "kubelet", "pods"),
		logPath:  filepath.Join(dir, "csi.log"),
		exited:   make(chan struct{}),
	}
	kubeletDir := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kubelet-dir") })
	if kubeletDir < 0 {
		if err := os.MkdirAll(p.Pods, 0o750); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--kubelet-dir", filepath.Dir(p.Pods)}, args...)
	} else if given, ok := strings.CutPrefix(args[kubeletDir], "--kubelet-dir="); ok {
		p.Pods = filepath.Join(given, "pods")
	} else {
		p.Pods = filepath.Join(args[kubeletDir+1], "pods")
	}
	// A file, not a pipe: the volumes' daemons inherit the plugin's stderr and outlive it, and Wait would wait for
	// a pipe's last writer.
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	full := []string{"csi", "--endpoint", "unix://" + p.Socket, "--node-id", "test-node",
		"--state-dir", p.StateDir, "--store", p.Store, "--debug"}
	full = append(append([]string{tempfsBin}, full...), args...)
	if wrapper != nil {
		full = append(slices.Clone(wrapper), full...)
	}
	p.cmd = exec.Command(full[0], full[1:]...)
	p.cmd.SysProcAttr = attr
	p.cmd.Stderr = log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.conn = conn
	p.Node = csi.NewNodeClient(conn)
	p.Identity = csi.NewIdentityClient(conn)
	// The plugin is ready when Probe says so: WaitForReady holds the call until the socket accepts, or until the
	// plugin exits (a refused flag), which ends the wait at once.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := p.Identity.Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
	if err != nil || !resp.GetReady().GetValue() {
		p.kill(t)
		t.Fatalf("tempfs csi: Probe = %v, %v; log:\n%s", resp, err, p.Log())
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the plugin with SIGTERM, as the kubelet does, and checks that it exits.
func (p *csiPlugin) stop(t *testing.T) {
	t.Helper()
	p.conn.Close()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("tempfs csi exited with %v after SIGTERM; log:\n%s", p.cmd.ProcessState, p.Log())
		}
	case <-time.After(60 * time.Second):
		p.kill(t)
		t.Errorf("tempfs csi did not exit 60s after SIGTERM; log:\n%s", p.Log())
	}
}

// kill ends the plugin with SIGKILL and waits for it.
func (p *csiPlugin) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Log is what the plugin (and its volumes' daemons) logged so far.
func (p *csiPlugin) Log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// publishRequest is what the kubelet sends for an inline ephemeral volume.
func publishRequest(id, target string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   id,
		TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: attrs,
	}
}

func csiCall(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// publish publishes a volume and fails the test on error; cleanup unpublishes it (a no-op when the test did).
func (p *csiPlugin) publish(t *testing.T, id, target string, attrs map[string]string) {
	t.Helper()
	if _, err := p.Node.NodePublishVolume(csiCall(t), publishRequest(id, target, attrs)); err != nil {
		t.Fatalf("NodePublishVolume %s: %v; log:\n%s", id, err, p.Log())
	}
	t.Cleanup(func() {
		if isMounted(target) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = p.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		}
		// A test that failed with its plugin killed leaves the mount to us; its daemon exits once it is detached.
		if isMounted(target) {
			_ = syscall.Unmount(target, syscall.MNT_DETACH)
		}
	})
}

func (p *csiPlugin) unpublish(t *testing.T, id, target string) {
	t.Helper()
	if _, err := p.Node.NodeUnpublishVolume(csiCall(t), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s: %v; log:\n%s", id, err, p.Log())
	}
}

// volumeStats returns NodeGetVolumeStats's bytes and inodes usage.
func (p *csiPlugin) volumeStats(t *testing.T, id, target string) (bytes, inodes *csi.VolumeUsage) {
	t.Helper()
	resp, err := p.Node.NodeGetVolumeStats(csiCall(t), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats %s: %v; log:\n%s", id, err, p.Log())
	}
	for _, u := range resp.GetUsage() {
		switch u.GetUnit() {
		case csi.VolumeUsage_BYTES:
			bytes = u
		case csi.VolumeUsage_INODES:
			inodes = u
		}
	}
	if bytes == nil || inodes == nil {
		t.Fatalf("NodeGetVolumeStats %s: usage %v lacks bytes or inodes", id, resp.GetUsage())
	}
	return bytes, inodes
}

// volumeDaemons lists the pids of the `tempfs mount` processes serving target (its last argument) that the
// plugin started: a volume's holder, not the daemon the holder runs (heldDaemon).
func volumeDaemons(target string) []int {
	all := volumeProcesses(target)
	var pids []int
	for _, pid := range all {
		if ppid, _ := procStat(pid); !slices.Contains(all, ppid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// volumeHeldDaemon is the daemon the holder of target's volume runs, 0 if none.
func volumeHeldDaemon(target string) int {
	all := volumeProcesses(target)
	for _, pid := range all {
		if ppid, _ := procStat(pid); slices.Contains(all, ppid) {
			return pid
		}
	}
	return 0
}

// volumeProcesses lists the pids of every `tempfs mount` process serving target.
func volumeProcesses(target string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		if len(args) > 2 && args[1] == "mount" && args[len(args)-1] == target {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertVolumeGone checks that nothing of a volume is left: no mount, no daemon, no target directory, no store,
// no record.
func assertVolumeGone(t *testing.T, p *csiPlugin, target string) {
	t.Helper()
	if isMounted(target) {
		t.Errorf("%s is still mounted", target)
	}
	// The daemon was the plugin's child or was reaped by init: it leaves /proc shortly after it exits.
	eventually(t, 10*time.Second, "the volume's daemon is still running", func() bool { return len(volumeDaemons(target)) == 0 })
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target path %s is still there (err %v)", target, err)
	}
	assertDirEmpty(t, p.Store, "store root")
	if records, _ := filepath.Glob(filepath.Join(p.StateDir, "volumes", "*.json")); len(records) > 0 {
		t.Errorf("volume records left: %v", records)
	}
}

func assertDirEmpty(t *testing.T, dir, what string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("%s %s: %v", what, dir, err)
		return
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s %s still holds %v", what, dir, names)
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// TestCSIKubeletLifecycle plays the kubelet for one pod: publish with attributes (and the kubelet's pod info),
// write from another process, see the stats move, publish again (OK), with other attributes (AlreadyExists),
// unpublish, and nothing is left; unpublish again is OK.
func TestCSIKubeletLifecycle(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	pods := p.Pods
	target := filepath.Join(pods, "mount")
	attrs := map[string]string{
		"maxSize": "4Ki", "memory": "64Mi", "disk": "16MiB", "mode": "1777", "maxAge": "1h",
		"csi.storage.k8s.io/pod.name": "ci-job", "csi.storage.k8s.io/pod.namespace": "default",
		"csi.storage.k8s.io/pod.uid": "0b3c", "csi.storage.k8s.io/serviceAccount.name": "default",
		"csi.storage.k8s.io/ephemeral": "true",
	}
	p.publish(t, "csi-vol-1", target, attrs)
	if !isMounted(target) {
		t.Fatalf("%s is not mounted after NodePublishVolume", target)
	}
	st := daemonStats(t, target)
	if st["max_size"] != float64(4096) || st["ram_cap"] != float64(64<<20) || st["disk_cap"] != float64(16<<20) {
		t.Errorf("the daemon's status does not show the attributes: max_size %v ram_cap %v disk_cap %v", st["max_size"], st["ram_cap"], st["disk_cap"])
	}
	daemons := volumeDaemons(target)
	if len(daemons) != 1 {
		t.Fatalf("daemons serving %s: %v, want one", target, daemons)
	}
	bytes0, inodes0 := p.volumeStats(t, "csi-vol-1", target)

	// A pod's process (another uid: the mount is allow_other) writes a small file in RAM and a large one that
	// spills to disk.
	sh(t, target, "setpriv --reuid 65534 --regid 65534 --clear-groups sh -c 'printf small > small; head -c 1048576 /dev/zero > large'")
	bytes1, inodes1 := p.volumeStats(t, "csi-vol-1", target)
	if bytes1.GetUsed() < bytes0.GetUsed()+1<<20 {
		t.Errorf("bytes used went from %d to %d after writing 1 MiB", bytes0.GetUsed(), bytes1.GetUsed())
	}
	if bytes1.GetAvailable() >= bytes0.GetAvailable() {
		t.Errorf("bytes available went from %d to %d after writing 1 MiB", bytes0.GetAvailable(), bytes1.GetAvailable())
	}
	if inodes1.GetUsed() != inodes0.GetUsed()+2 {
		t.Errorf("inodes used went from %d to %d after making two files", inodes0.GetUsed(), inodes1.GetUsed())
	}
	t.Logf("stats before: bytes %v inodes %v; after: bytes %v inodes %v", bytes0, inodes0, bytes1, inodes1)

	// The kubelet retries: the same call is OK and starts nothing new; other attributes or another target are not.
	if _, err := p.Node.NodePublishVolume(csiCall(t), publishRequest("csi-vol-1", target, attrs)); err != nil {
		t.Errorf("publishing again: %v", err)
	}
	if got := volumeDaemons(target); len(got) != 1 || got[0] != daemons[0] {
		t.Errorf("daemons after publishing again: %v, want %v", got, daemons)
	}
	other := map[string]string{"maxSize": "8Ki"}
	_, err := p.Node.NodePublishVolume(csiCall(t), publishRequest("csi-vol-1", target, other))
	wantCode(t, "publishing again with other attributes", err, codes.AlreadyExists)
	_, err = p.Node.NodePublishVolume(csiCall(t), publishRequest("csi-vol-1", filepath.Join(pods, "elsewhere"), attrs))
	wantCode(t, "publishing again at another target", err, codes.FailedPrecondition)
	_, err = p.Node.NodePublishVolume(csiCall(t), publishRequest("csi-vol-2", target, nil))
	wantCode(t, "publishing another volume at the same target", err, codes.FailedPrecondition)

	p.unpublish(t, "csi-vol-1", target)
	assertVolumeGone(t, p, target)
	p.unpublish(t, "csi-vol-1", target)
	p.unpublish(t, "never-published", filepath.Join(pods, "nothing"))
	_, err = p.Node.NodeGetVolumeStats(csiCall(t), &csi.NodeGetVolumeStatsRequest{VolumeId: "csi-vol-1", VolumePath: target})
	wantCode(t, "stats of an unpublished volume", err, codes.NotFound)
}

// TestCSIBadAttributes: every bad attribute is InvalidArgument with one line naming it, and leaves nothing behind.
func TestCSIBadAttributes(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	target := filepath.Join(p.Pods, "mount")
	cases := []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"maxSize": "12Q"}, `maxSize="12Q"`},
		{map[string]string{"maxsize": "4Mi"}, `unknown volume attribute "maxsize"`},
		{map[string]string{"memory": ""}, `memory=""`},
		{map[string]string{"mode": "999"}, `mode="999"`},
		{map[string]string{"maxAge": "soon"}, `maxAge="soon"`},
		{map[string]string{"owner": "everyone"}, `owner="everyone"`},
		{map[string]string{"ownerQuota": "1.5M"}, `ownerQuota="1.5M"`},
		// Passes the flag's parser, refused by the daemon before it mounts (exit status 2).
		{map[string]string{"memory": "0"}, "--memory must be larger than 0"},
	}
	for _, tc := range cases {
		_, err := p.Node.NodePublishVolume(csiCall(t), publishRequest("bad", target, tc.attrs))
		wantCode(t, fmt.Sprintf("attributes %v", tc.attrs), err, codes.InvalidArgument)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("attributes %v: message %q, want one line with %q", tc.attrs, msg, tc.want)
		}
		assertVolumeGone(t, p, target)
	}
	block := publishRequest("bad", target, nil)
	block.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	_, err := p.Node.NodePublishVolume(csiCall(t), block)
	wantCode(t, "a block volume", err, codes.InvalidArgument)
	readOnly := publishRequest("bad", target, nil)
	readOnly.Readonly = true
	_, err = p.Node.NodePublishVolume(csiCall(t), readOnly)
	wantCode(t, "a read-only volume", err, codes.InvalidArgument)
	assertVolumeGone(t, p, target)
}

// TestCSIPluginRestart: kill -9 of the plugin leaves its volumes serving their pods; the restarted plugin adopts
// them (stats, idempotent publish) and unpublishes them cleanly.
func TestCSIPluginRestart(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	target := filepath.Join(p.Pods, "mount")
	p.publish(t, "survivor", target, map[string]string{"maxSize": "64Ki"})
	data := bytes.Repeat([]byte("k"), 100<<10)
	if err := os.WriteFile(filepath.Join(target, "kept"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	daemons := volumeDaemons(target)

	p.kill(t)
	got, err := os.ReadFile(filepath.Join(target, "kept"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after kill -9 of the plugin, the volume reads %d bytes, err %v", len(got), err)
	}
	sh(t, target, "echo more > more")

	p2 := startCSI(t, dir)
	if !strings.Contains(p2.Log(), "adopted a volume") {
		t.Errorf("the restarted plugin did not say it adopted the volume; log:\n%s", p2.Log())
	}
	_, inodes := p2.volumeStats(t, "survivor", target)
	if inodes.GetUsed() != 3 { // the root and two files, as df -i counts them
		t.Errorf("inodes used after the restart: %d, want 3", inodes.GetUsed())
	}
	if _, err := p2.Node.NodePublishVolume(csiCall(t), publishRequest("survivor", target, map[string]string{"maxSize": "64Ki"})); err != nil {
		t.Errorf("publishing the adopted volume again: %v", err)
	}
	if now := volumeDaemons(target); len(now) != 1 || now[0] != daemons[0] {
		t.Errorf("daemons after the restart: %v, want the same %v", now, daemons)
	}
	p2.unpublish(t, "survivor", target)
	assertVolumeGone(t, p2, target)
}

// TestCSIDaemonKilled: kill -9 of a volume's daemon leaves a dead mount; unpublish still clears everything. A
// dead volume found at the plugin's start is cleared there.
func TestCSIDaemonKilled(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	target := filepath.Join(p.Pods, "mount")
	p.publish(t, "doomed", target, map[string]string{"maxSize": "4Ki"})
	sh(t, target, "head -c 65536 /dev/zero > spilled")

	// A crash of the daemon alone (an OOM kill, a bug): its holder starts a new one, which serves the volume on
	// with its files.
	daemon := volumeHeldDaemon(target)
	if daemon == 0 {
		t.Fatalf("no daemon under a holder serves %s: %v", target, volumeProcesses(target))
	}
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "no new daemon serves the volume after its daemon was killed", func() bool {
		d := volumeHeldDaemon(target)
		return d != 0 && d != daemon
	})
	if st, err := os.Stat(filepath.Join(target, "spilled")); err != nil || st.Size() != 65536 {
		t.Fatalf("the volume's file after a crash of its daemon: %v, %v", st, err)
	}

	// The holder killed too: the volume is dead, and unpublish clears it.
	killVolumeDaemon(t, target)
	p.unpublish(t, "doomed", target)
	assertVolumeGone(t, p, target)

	// The same with a plugin restart in between: the new plugin clears the dead volume at start, and the kubelet's
	// unpublish that follows is OK.
	second := filepath.Join(p.Pods, "mount2")
	p.publish(t, "doomed2", second, nil)
	p.kill(t)
	killVolumeDaemon(t, second)
	p2 := startCSI(t, dir)
	if !strings.Contains(p2.Log(), "cleared a dead volume") {
		t.Errorf("the restarted plugin did not clear the dead volume; log:\n%s", p2.Log())
	}
	assertVolumeGone(t, p2, second)
	p2.unpublish(t, "doomed2", second)
}

// killVolumeDaemon kills the process the plugin started for target (the holder, whose daemon dies with it)
// with SIGKILL and waits until its mount is dead.
func killVolumeDaemon(t *testing.T, target string) {
	t.Helper()
	pids := volumeDaemons(target)
	if len(pids) != 1 {
		t.Fatalf("daemons serving %s: %v, want one", target, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// statfs always reaches the daemon; stat may be answered from the kernel's cache of the root's attributes.
	eventually(t, 30*time.Second, "the killed daemon's mount is not dead", func() bool {
		var st syscall.Statfs_t
		return errors.Is(syscall.Statfs(target, &st), syscall.ENOTCONN)
	})
}

// TestCSICommandLine: bad flags, and a second plugin on a state directory or a socket already in use, give one
// line on stderr and exit status 2, and take nothing from the running plugin.
func TestCSICommandLine(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	other := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"csi"}, "--endpoint is required"},
		{[]string{"csi", "--endpoint", "unix://" + filepath.Join(other, "s.sock")}, "--node-id is required"},
		{[]string{"csi", "--endpoint", "tcp://127.0.0.1:1", "--node-id", "n"}, "give a Unix socket"},
		{[]string{"csi", "--endpoint", "unix://" + filepath.Join(other, "s.sock"), "--node-id", "n", "extra"}, "unknown command"},
		{[]string{"csi", "--endpoint", "unix://" + filepath.Join(other, "s.sock"), "--node-id", "n", "--state-dir", p.StateDir},
			"another tempfs csi uses this state directory"},
		{[]string{"csi", "--endpoint", "unix://" + p.Socket, "--node-id", "n", "--state-dir", filepath.Join(other, "state")},
			"is served by another process"},
	}
	for _, tc := range cases {
		cmd := exec.Command(tempfsBin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("tempfs %q: %v, want exit status 2; stderr:\n%s", tc.args, err, stderr.String())
			continue
		}
		if msg := stderr.String(); !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 {
			t.Errorf("tempfs %q: stderr %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
	// Supervised, the same refusal ends the supervisor too (with the plugin's exit status) instead of a restart loop.
	// A supervisor that restarted it instead would run until killed: the deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tempfsBin, "csi", "--supervise", "--endpoint", "unix://"+filepath.Join(other, "s.sock"),
		"--node-id", "n", "--state-dir", p.StateDir)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "another tempfs csi uses this state directory") {
		t.Errorf("a supervised plugin on a state directory in use: %v, want exit status 2 and the reason; output:\n%s", err, out)
	}
	// The first plugin still serves.
	if _, err := p.Identity.Probe(csiCall(t), &csi.ProbeRequest{}); err != nil {
		t.Errorf("the running plugin no longer answers: %v", err)
	}
}

// TestCSISupervisedPluginDies: with --supervise (the default when tempfs csi is a container's first process), a
// kill -9 of the plugin process is a restart inside the supervisor: the volume keeps serving, the new plugin adopts
// it, and the daemon, now the supervisor's child, is reaped when it exits.
func TestCSISupervisedPluginDies(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir, "--supervise")
	target := filepath.Join(p.Pods, "mount")
	p.publish(t, "supervised", target, nil)
	first := supervisedPlugin(t, p.cmd.Process.Pid)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the supervisor did not start the plugin again", func() bool {
		pid := childPlugin(p.cmd.Process.Pid)
		return pid != 0 && pid != first
	})
	sh(t, target, "echo still here > f")
	resp, err := p.Identity.Probe(csiCall(t), &csi.ProbeRequest{}, grpc.WaitForReady(true))
	if err != nil || !resp.GetReady().GetValue() {
		t.Fatalf("the restarted plugin: Probe = %v, %v", resp, err)
	}
	if !strings.Contains(p.Log(), "adopted a volume") {
		t.Errorf("the restarted plugin did not adopt the volume; log:\n%s", p.Log())
	}
	p.unpublish(t, "supervised", target)
	assertVolumeGone(t, p, target)
	eventually(t, 10*time.Second, "the supervisor left a zombie", func() bool { return !hasZombieChild(p.cmd.Process.Pid) })
}

// supervisedPlugin is the plugin process a supervisor runs.
func supervisedPlugin(t *testing.T, supervisor int) int {
	t.Helper()
	pid := childPlugin(supervisor)
	if pid == 0 {
		t.Fatalf("no plugin process under the supervisor %d", supervisor)
	}
	return pid
}

// childPlugin finds the live `tempfs csi` child of a supervisor (0 if none).
func childPlugin(supervisor int) int {
	for _, pid := range childrenOf(supervisor) {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if args := strings.Split(string(data), "\x00"); len(args) > 1 && args[1] == "csi" {
			return pid
		}
	}
	return 0
}

func childrenOf(parent int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := procStat(pid); ppid == parent {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state byte) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name is in parentheses and may hold spaces: the fields after it are fixed.
	rest := string(data[bytes.LastIndexByte(data, ')')+2:])
	fields := strings.Fields(rest)
	if len(fields) < 2 {
		return 0, 0
	}
	ppid, _ = strconv.Atoi(fields[1])
	return ppid, fields[0][0]
}

func hasZombieChild(parent int) bool {
	for _, pid := range childrenOf(parent) {
		if _, state := procStat(pid); state == 'Z' {
			return true
		}
	}
	return false
}

// TestCSIPluginKilledMidPublish: kill -9 of the plugin while a publish is under way (the kill lands at different
// points: before the record, while the daemon starts, after it mounted); the restarted plugin adopts or clears
// the volume, the kubelet's retry publishes it, and its unpublish leaves nothing. Every outcome must pass.
func TestCSIPluginKilledMidPublish(t *testing.T) {
	dir := t.TempDir()
	for i, delay := range []time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond} {
		p := startCSI(t, dir)
		target := filepath.Join(p.Pods, fmt.Sprint("mount", i))
		id := fmt.Sprint("interrupted-", i)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = p.Node.NodePublishVolume(context.Background(), publishRequest(id, target, nil))
		}()
		time.Sleep(delay)
		p.kill(t)
		<-done
		p2 := startCSI(t, dir)
		if _, err := p2.Node.NodePublishVolume(csiCall(t), publishRequest(id, target, nil)); err != nil {
			t.Errorf("kill after %v: publishing again after the restart: %v; log:\n%s", delay, err, p2.Log())
		}
		sh(t, target, "echo x > f")
		p2.unpublish(t, id, target)
		assertVolumeGone(t, p2, target)
		p2.stop(t)
	}
}

// TestCSIConcurrentVolumes: the kubelet publishes and unpublishes volumes of many pods at once, and may retry a
// call while the first is still running (that one is Aborted, as the CSI spec asks, or OK once it is done).
func TestCSIConcurrentVolumes(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	const volumes = 6
	target := func(i int) string { return filepath.Join(p.Pods, fmt.Sprint("pod", i)) }
	eachTwiceAtOnce(t, "publish", volumes, func(i int) error {
		_, err := p.Node.NodePublishVolume(csiCall(t), publishRequest(fmt.Sprint("vol", i), target(i), map[string]string{"maxSize": "64Ki"}))
		return err
	})
	for i := range volumes {
		if daemons := volumeDaemons(target(i)); len(daemons) != 1 {
			t.Errorf("volume %d has daemons %v, want one", i, daemons)
		}
		sh(t, target(i), "head -c 100000 /dev/zero > f")
	}
	eachTwiceAtOnce(t, "unpublish", volumes, func(i int) error {
		_, err := p.Node.NodeUnpublishVolume(csiCall(t), &csi.NodeUnpublishVolumeRequest{VolumeId: fmt.Sprint("vol", i), TargetPath: target(i)})
		return err
	})
	for i := range volumes {
		// An Aborted second call leaves the work to the first, which has returned by now.
		assertVolumeGone(t, p, target(i))
	}
}

// eachTwiceAtOnce makes call(i) for i < n, each twice at the same time, and fails the test on any error but
// Aborted.
func eachTwiceAtOnce(t *testing.T, what string, n int, call func(i int) error) {
	t.Helper()
	errs := make(chan error, 2*n)
	for i := range n {
		for range 2 {
			go func() { errs <- call(i) }()
		}
	}
	for range 2 * n {
		if err := <-errs; err != nil && status.Code(err) != codes.Aborted {
			t.Errorf("%s: %v", what, err)
		}
	}
}

// TestCSIOwnerAttributes: owner and ownerQuota reach the volume's daemon: a file made by a process that has exited
// goes with it, and one owner's data stays under its quota.
func TestCSIOwnerAttributes(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	target := filepath.Join(p.Pods, "mount")
	p.publish(t, "owned", target, map[string]string{"owner": "process", "ownerQuota": "1Mi"})
	sh(t, target, "echo left behind > orphan")
	eventually(t, 10*time.Second, "a file of an exited process is still there", func() bool {
		_, err := os.Lstat(filepath.Join(target, "orphan"))
		return errors.Is(err, os.ErrNotExist)
	})
	out := shFails(t, target, "exec 3>big; head -c 2097152 /dev/zero >&3")
	if !strings.Contains(out, "quota") {
		t.Errorf("writing 2 MiB under a 1 MiB owner quota: %q, want a quota error", out)
	}
	p.unpublish(t, "owned", target)
	assertVolumeGone(t, p, target)
}

// TestCSIOwnersInThePluginsContainer: the plugin runs as in its container, in a cgroup and cgroup namespace of
// its own (its mount namespace is the node's, as with Bidirectional propagation), sharing the node's PID
// namespace (hostPID); a pod's process in a cgroup outside the plugin's namespace writes to volumes with
// owner: cgroup and owner: session. Its creates succeed, its entries are owned by its cgroup as the node
// names it and by its session, and they go when the pod's process does.
func TestCSIOwnersInThePluginsContainer(t *testing.T) {
	base, plugin, pod := owPluginAndPod(t, "csi")
	cgfd, err := unix.Open(plugin, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cgfd)
	p := startCSIVia(t, t.TempDir(), []string{"unshare", "--cgroup"}, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgfd})
	mine, _ := os.Readlink("/proc/self/ns/cgroup")
	if theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/cgroup", p.cmd.Process.Pid)); theirs == mine || theirs == "" {
		t.Fatalf("the plugin shares this test's cgroup namespace (%q): the test proves nothing", theirs)
	}
	byCgroup, bySession := filepath.Join(p.Pods, "by-cgroup"), filepath.Join(p.Pods, "by-session")
	p.publish(t, "by-cgroup", byCgroup, map[string]string{"owner": "cgroup"})
	p.publish(t, "by-session", bySession, map[string]string{"owner": "session"})
	job, _ := owStart(t, &syscall.SysProcAttr{Setsid: true}, "sh", "-c",
		`echo $$ > "$3"/cgroup.procs && echo x > "$1"/f && echo y > "$2"/f && echo ready && exec sleep 300`,
		"sh", byCgroup, bySession, pod)
	if got, want := owOwner(t, filepath.Join(byCgroup, "f")), "cgroup /"+base+"/pod"; got != want {
		t.Errorf("owner: cgroup: user.tempfs.owner = %q, want %q", got, want)
	}
	if got, want := owOwner(t, filepath.Join(bySession, "f")), fmt.Sprintf("session %d ", job.Process.Pid); !strings.HasPrefix(got, want) {
		t.Errorf("owner: session: user.tempfs.owner = %q, want %q...", got, want)
	}
	tlStaysPresent(t, byCgroup, "f", "while the pod's process lives")
	tlStaysPresent(t, bySession, "f", "while the pod's process lives")
	owKill(t, job)
	tlWaitGone(t, byCgroup, "f", "after the pod's cgroup emptied")
	tlWaitGone(t, bySession, "f", "after the pod's session ended")
	p.unpublish(t, "by-cgroup", byCgroup)
	p.unpublish(t, "by-session", bySession)
}
