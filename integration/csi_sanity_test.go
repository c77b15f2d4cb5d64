package integration

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCSISanity runs csi-sanity's Identity and Node suites against `tempfs csi` on a Unix socket, with real mounts.
// The Controller suites are left out: the plugin has no controller service (the CSI spec makes it optional, and
// inline ephemeral volumes never use one). The suites skip on their own what needs a capability the plugin does
// not offer (staging, expansion, volume and storage health, single-node multi-writer); nothing is skipped by name.
//
// Two Node specs ("NodeUnpublishVolume should remove target path", "NodeGetVolumeStats should fail when volume
// does not exist on the specified path") get a volume id from CreateVolume first. For them, ControllerAddress is
// a stand-in controller that only hands out fresh ids, as the kubelet does for an ephemeral volume: those specs
// then publish and unpublish real tempfs mounts through the plugin.
func TestCSISanity(t *testing.T) {
	dir := t.TempDir()
	p := startCSI(t, dir)
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + p.Socket
	cfg.ControllerAddress = "unix://" + startIDController(t, filepath.Join(dir, "controller.sock"))
	cfg.TargetPath = filepath.Join(p.Pods, "sanity-target")
	cfg.StagingPath = filepath.Join(p.Pods, "sanity-staging")
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.FocusStrings = []string{"Identity Service", "Node Service"}
	ginkgo.RunSpecs(t, "tempfs CSI sanity", suite, reporter)
	sc.Finalize()
}

// idController is the stand-in controller of TestCSISanity: CreateVolume answers a fresh volume id with no
// attributes, DeleteVolume forgets nothing (there is nothing to delete). Its Identity answers as a controller's.
type idController struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	next atomic.Int64
}

func (c *idController) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "tempfs.csi", VendorVersion: "test"}, nil
}

func (c *idController) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (c *idController) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

func (c *idController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	id := "csi-sanity-" + req.GetName()
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id}}, nil
}

func (c *idController) DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return &csi.DeleteVolumeResponse{}, nil
}

// startIDController serves an idController on a Unix socket at path until the test ends.
func startIDController(t *testing.T, path string) string {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	c := &idController{}
	csi.RegisterIdentityServer(srv, c)
	csi.RegisterControllerServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return path
}
