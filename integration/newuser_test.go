package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNewUserStoreNotOnFUSE: with TMPDIR on a tempfs mount (the README's recipe of a tempfs /tmp), the default
// store search passes over it, for tempfs run and tempfs mount alike, so that spilled data goes through one
// daemon and passthrough stays possible; a --store that names a FUSE directory is allowed, with one warning at
// start, and status says why passthrough is off.
func TestNewUserStoreNotOnFUSE(t *testing.T) {
	outer := startMount(t)
	env := append(cliQuickExit(), "TMPDIR="+outer.Dir)
	notInOuter := func(what, store string) {
		t.Helper()
		if store == "" || strings.HasPrefix(store, outer.Dir+"/") {
			t.Errorf("%s: the store %q is inside the tempfs mount %s that TMPDIR names", what, store, outer.Dir)
		}
	}

	r := cliRun(t, env, t.TempDir(), "", tempfsBin, "run", "--", "sh", "-c", `exec "$0" status --json "$TMPDIR"`, tempfsBin)
	if r.code != 0 || strings.Contains(r.stderr, "WARN") {
		t.Errorf("tempfs run with TMPDIR on a tempfs: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json inside tempfs run printed %q: %v", r.stdout, err)
	}
	store, _ := st["store"].(string)
	notInOuter("tempfs run", store)

	mp := t.TempDir()
	r = cliRun(t, env, t.TempDir(), "", tempfsBin, "mount", "--daemon", mp)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("tempfs mount --daemon with TMPDIR on a tempfs: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Cleanup(func() {
		if r := cliRun(t, cliQuickExit(), t.TempDir(), "", tempfsBin, "unmount", mp); r.code != 0 {
			t.Errorf("unmount %s: exit %d, %s", mp, r.code, r.stderr)
		}
	})
	store, _ = statusJSON(t, mp)["store"].(string)
	notInOuter("tempfs mount", store)

	// Asked for by name: allowed, one warning at start that says what it costs.
	m := startMountAt(t, t.TempDir(), outer.Dir)
	if got := strings.Count(m.Log(), "level=WARN"); got != 1 || !strings.Contains(m.Log(), "FUSE") {
		t.Errorf("--store on a FUSE filesystem: %d warnings in the log, want one that says FUSE:\n%s", got, m.Log())
	}
	st = statusJSON(t, m.Dir)
	if store, _ := st["store"].(string); !strings.HasPrefix(store, outer.Dir+"/") {
		t.Errorf("--store %s: the store is %q", outer.Dir, store)
	}
	if off, _ := st["passthrough_off"].(string); st["passthrough"] != false || !strings.Contains(off, "FUSE") {
		t.Errorf("--store on FUSE: passthrough %v, passthrough_off %q; want off, saying the store is on FUSE", st["passthrough"], off)
	}
}
