package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestExperiment runs the experiment against the running kernel and checks the findings the take-over design
// relies on: a second process serves a connection without INIT, requests read and not answered stay
// pending, FUSE_NOTIFY_RESEND re-delivers them with the resend bit set in their unique id (where the kernel
// offers HAS_RESEND), a held descriptor keeps the connection through a kill -9, the last close ends it, and
// an unmodified go-fuse fuse.Server serves a taken-over connection after a replayed INIT.
func TestExperiment(t *testing.T) {
	dir, bin := buildExperiment(t)
	scratch := filepath.Join(dir, "scratch")
	out, err := exec.Command(bin, "run", "-json", "-dir", scratch).CombinedOutput()
	t.Logf("experiment output:\n%s", out)
	if err != nil {
		t.Fatalf("experiment: %v", err)
	}
	t.Cleanup(func() {
		if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), scratch) {
			t.Errorf("the experiment left a mount under %s", scratch)
		}
	})
	var s summary
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "JSON "); ok {
			if err := json.Unmarshal([]byte(j), &s); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	check("served without INIT", s.ServedWithoutInit, true)
	check("held requests still blocked after the hand-over", s.BlockedAfterHandover,
		map[string]bool{"c1": true, "c2": true, "c3": true, "l1": true})
	check("reply by original unique id", s.AnswerHeldWrite+" "+s.AnswerHeldClient, "OK ok")
	check("mount listed after kill -9 with a held descriptor", s.MountedAfterKill9, true)
	check("new request queued meanwhile", s.QueuedWhileHolderHolds, true)
	check("in-flight request at the last close", s.LastCloseInFlight, "ECONNABORTED")
	check("new request after the last close", s.LastCloseNew, "ENOTCONN")
	check("go-fuse before the hand-over", s.GoFuseBefore, `ok "hello"`)
	check("go-fuse successor", strings.HasPrefix(s.GoFuseTakeover, "serving:"), true)
	check("go-fuse after the hand-over", s.GoFuseAfter, `ok "hello"`)
	check("go-fuse successor served the READ", s.GoFuseSecondServed, true)
	check("planned go-fuse hand-overs", s.ChainHandovers, chainLength)
	if !strings.HasPrefix(s.ChainClient, "ok ops=") {
		t.Errorf("reading loop across the hand-overs: %q", s.ChainClient)
	}
	if !s.InitOffersHasResend {
		// Before Linux 6.9 the kernel rejects the notification and the held requests stay pending.
		check("resend without kernel support", s.ResendWrite, "EINVAL")
		return
	}
	check("resend", s.ResendWrite, "OK")
	check("results after resend", s.AfterResend, map[string]string{"c1": "EEXIST", "c2": "ok", "l1": "ENOENT", "l2": "ENOENT"})
	check("the resending server's own request re-delivered", s.OwnInFlightResent, true)
	check("reply by the first unique id after a resend", s.LateReplyWrite, "ENOENT")
	check("results after the crash resend", s.AfterCrashResend, map[string]string{"c4": "ok", "cat f0 (queued)": `ok "hello"`})
	// Other requests may be re-delivered too: one the server had read and not yet answered when it resent
	// (a RELEASE of an earlier client, say).
	names := map[string]bool{}
	for _, r := range s.Resent {
		names[r.Op+" "+r.Name] = true
	}
	for _, r := range s.CrashResent {
		names["crash "+r.Op+" "+r.Name] = true
	}
	for _, want := range []string{"CREATE c1", "CREATE c2", "LOOKUP l1", "LOOKUP l2", "crash CREATE c4"} {
		if !names[want] {
			t.Errorf("%s not re-delivered (re-delivered: %v)", want, names)
		}
	}
	for _, r := range append(s.Resent, s.CrashResent...) {
		var orig, resent uint64
		fmt.Sscanf(r.Original, "0x%x", &orig)
		fmt.Sscanf(r.Resent, "0x%x", &resent)
		if resent != orig|uniqueResend {
			t.Errorf("%s %s re-delivered as %s, want the original %s with bit 63 set", r.Op, r.Name, r.Resent, r.Original)
		}
	}
}

// TestCrashLoop kills a server reading into a buffer faulted in long before, 20 times under a reading loop,
// each successor resending: no read may fail. (A server reading into fresh pages fails a request now and
// then, when it is killed while the kernel copies a request to it; the run reports that count too.)
func TestCrashLoop(t *testing.T) {
	dir, bin := buildExperiment(t)
	out, err := exec.Command(bin, "run", "-json", "-crash-only", "20", "-dir", filepath.Join(dir, "scratch")).CombinedOutput()
	t.Logf("experiment output (tail):\n%s", out[max(0, len(out)-1500):])
	if err != nil {
		t.Fatalf("experiment: %v", err)
	}
	var s summary
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "JSON "); ok {
			if err := json.Unmarshal([]byte(j), &s); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r := s.CrashLoop["pooled buffer"]; !strings.HasPrefix(r, "ok ops=") || !strings.Contains(r, " errors=0 ") {
		t.Errorf("reading loop across kills of a server with a faulted-in buffer: %q, want no error", r)
	}
	if r := s.CrashLoop["fresh buffers"]; !strings.HasPrefix(r, "ok ops=") {
		t.Errorf("reading loop across kills of a server with fresh buffers: %q", r)
	}
}

func cannotMount() string {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "no /dev/fuse"
	}
	if os.Geteuid() != 0 {
		return "not root (the experiment mounts with mount(2))"
	}
	return ""
}

// buildExperiment builds the experiment into a test directory, which it returns with the binary's path; it
// skips (fails, with CI=true) where this process cannot mount.
func buildExperiment(t *testing.T) (dir, bin string) {
	t.Helper()
	if reason := cannotMount(); reason != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount (%s), and CI=true forbids skipping", reason)
		}
		t.Skipf("cannot mount: %s", reason)
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "takeover")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir, bin
}
