// Package kubernetes_test checks the manifests beside it: each document decodes into its k8s.io/api type with
// unknown fields refused (a misspelt field fails here, not silently in a cluster), and the pieces agree with
// each other and with what `tempfs csi` needs.
package kubernetes_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"github.com/tempfs/tempfs/naming"
)

// manifest is one YAML document of a file.
type manifest struct {
	file string
	doc  []byte
}

func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests here (%v)", err)
	}
	var out []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---")) {
			if len(bytes.TrimSpace(stripComments(doc))) > 0 {
				out = append(out, manifest{file: f, doc: doc})
			}
		}
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range strings.Lines(string(doc)) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.Bytes()
}

// decoded holds the manifests by kind.
type decoded struct {
	drivers    []*storagev1.CSIDriver
	daemonSets []*appsv1.DaemonSet
	pods       []*corev1.Pod
}

func decodeAll(t *testing.T) decoded {
	t.Helper()
	var d decoded
	for _, m := range loadManifests(t) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(m.doc, &meta); err != nil {
			t.Errorf("%s: %v", m.file, err)
			continue
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "storage.k8s.io/v1 CSIDriver":
			o := &storagev1.CSIDriver{}
			d.drivers, obj = append(d.drivers, o), o
		case "apps/v1 DaemonSet":
			o := &appsv1.DaemonSet{}
			d.daemonSets, obj = append(d.daemonSets, o), o
		case "v1 Pod":
			o := &corev1.Pod{}
			d.pods, obj = append(d.pods, o), o
		default:
			t.Errorf("%s: a %s %s: add its type to this test", m.file, meta.APIVersion, meta.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict(m.doc, obj); err != nil {
			t.Errorf("%s: %v", m.file, err)
		}
	}
	return d
}

func TestManifestsDecodeStrictly(t *testing.T) {
	d := decodeAll(t)
	if len(d.drivers) != 1 || len(d.daemonSets) != 1 || len(d.pods) != 1 {
		t.Fatalf("want one CSIDriver, one DaemonSet and one example Pod; have %d, %d, %d", len(d.drivers), len(d.daemonSets), len(d.pods))
	}
}

// TestStrictDecodingRefusesTypos proves that the check above can fail: a misspelt field is an error.
func TestStrictDecodingRefusesTypos(t *testing.T) {
	doc := []byte("apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata:\n  name: x\nspec:\n  attachRequird: false\n")
	if err := yaml.UnmarshalStrict(doc, &storagev1.CSIDriver{}); err == nil || !strings.Contains(err.Error(), "attachRequird") {
		t.Fatalf("a misspelt field decoded: err = %v", err)
	}
}

func TestManifestsAgree(t *testing.T) {
	d := decodeAll(t)
	if t.Failed() {
		return
	}
	driver, ds, pod := d.drivers[0], d.daemonSets[0], d.pods[0]

	spec := driver.Spec
	if spec.AttachRequired == nil || *spec.AttachRequired || spec.PodInfoOnMount == nil || !*spec.PodInfoOnMount ||
		!slices.Equal(spec.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}) {
		t.Errorf("CSIDriver: want attachRequired false, podInfoOnMount true, volumeLifecycleModes [Ephemeral]; have %+v", spec)
	}

	containers := map[string]corev1.Container{}
	for _, c := range ds.Spec.Template.Spec.Containers {
		containers[c.Name] = c
	}
	plugin, ok := containers["tempfs"]
	if !ok {
		t.Fatal("the DaemonSet has no tempfs container")
	}
	if plugin.SecurityContext == nil || plugin.SecurityContext.Privileged == nil || !*plugin.SecurityContext.Privileged {
		t.Error("the plugin container must be privileged (it mounts)")
	}
	if len(plugin.Args) == 0 || plugin.Args[0] != "csi" || !slices.Contains(plugin.Args, "--driver-name="+driver.Name) {
		t.Errorf("the plugin's args %q must run `csi` with --driver-name=%s", plugin.Args, driver.Name)
	}
	// hostPID: the plugin is not PID 1 of its container, so it supervises only when told to.
	if !slices.Contains(plugin.Args, "--supervise") {
		t.Errorf("the plugin's args %q lack --supervise: a crash of the plugin would end the container and its volumes", plugin.Args)
	}
	// Owners: the pods' processes, sessions and cgroups as the host has them.
	if !ds.Spec.Template.Spec.HostPID {
		t.Error("the DaemonSet needs hostPID: owner scopes map each request's pid to the pod's process, session or cgroup")
	}
	if ds.Spec.Template.Spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical: every volume of the node dies with the plugin's pod",
			ds.Spec.Template.Spec.PriorityClassName)
	}
	// The node's RAM budget is charged to the plugin's pod: its memory request must cover it.
	budget, ok := flagValue(plugin.Args, "--memory")
	if !ok {
		t.Errorf("the plugin's args %q set no --memory: the node's RAM budget would follow the node's RAM, which the pod does not request", plugin.Args)
	} else if n, err := naming.ParseSize(budget); err != nil {
		t.Errorf("--memory=%s: %v", budget, err)
	} else if req := plugin.Resources.Requests[corev1.ResourceMemory]; req.Value() < n {
		t.Errorf("the plugin's memory request %s does not cover its RAM budget --memory=%s", req.String(), budget)
	} else if _, limited := plugin.Resources.Limits[corev1.ResourceMemory]; limited {
		t.Error("the plugin has a memory limit: past it the kernel kills a daemon, and its volume with it")
	}
	// Target paths are confined to the kubelet's pods directory, which the container must have at the same path.
	kubeletDir, ok := flagValue(plugin.Args, "--kubelet-dir")
	if !ok {
		t.Errorf("the plugin's args %q lack --kubelet-dir", plugin.Args)
	}
	var podsHostPath string
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "pods-dir" && v.HostPath != nil {
			podsHostPath = v.HostPath.Path
		}
	}
	if podsHostPath != kubeletDir+"/pods" {
		t.Errorf("--kubelet-dir=%s, but the pods directory comes from the host's %s", kubeletDir, podsHostPath)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range plugin.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m, ok := mounts[kubeletDir+"/pods"]; !ok || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Error("the plugin needs the kubelet's pods directory with Bidirectional mount propagation")
	}
	if _, ok := mounts["/dev/fuse"]; !ok {
		t.Error("the plugin needs /dev/fuse")
	}
	registrar, ok := containers["node-driver-registrar"]
	if !ok || !strings.HasPrefix(registrar.Image, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") {
		t.Error("the DaemonSet needs the csi-node-driver-registrar sidecar from registry.k8s.io/sig-storage")
	}
	if !slices.Contains(registrar.Args, "--kubelet-registration-path=/var/lib/kubelet/plugins/"+driver.Name+"/csi.sock") {
		t.Errorf("the registrar's registration path %q does not name the driver's plugin directory", registrar.Args)
	}
	if probe, ok := containers["liveness-probe"]; !ok || !strings.HasPrefix(probe.Image, "registry.k8s.io/sig-storage/livenessprobe:") {
		t.Error("the DaemonSet needs the livenessprobe sidecar from registry.k8s.io/sig-storage")
	}

	var inline []corev1.Volume
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil {
			inline = append(inline, v)
		}
	}
	if len(inline) != 1 || inline[0].CSI.Driver != driver.Name {
		t.Fatalf("the example pod needs one inline csi volume of driver %s; has %+v", driver.Name, inline)
	}
	known := []string{"maxSize", "memory", "disk", "mode", "maxAge", "owner", "ownerQuota"}
	for k := range inline[0].CSI.VolumeAttributes {
		if !slices.Contains(known, k) {
			t.Errorf("the example pod sets an attribute tempfs does not take: %s", k)
		}
	}
}

// flagValue is the value of --name=VALUE among args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestDockerfileBuildsStatic: the image holds one static binary (no libc in the runtime image).
func TestDockerfileBuildsStatic(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0 go build", "./cmd/tempfs", "distroless/static"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
