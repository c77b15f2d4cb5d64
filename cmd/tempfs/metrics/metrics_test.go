package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	tempfs "github.com/tempfs/tempfs/fs"
)

func TestListenAddress(t *testing.T) {
	for _, tc := range []struct {
		arg, want, err string
	}{
		{"9100", "127.0.0.1:9100", ""},
		{":9100", "127.0.0.1:9100", ""},
		{"0", "127.0.0.1:0", ""},
		{"09100", "127.0.0.1:9100", ""},
		{"127.0.0.1:0", "127.0.0.1:0", ""},
		{"0.0.0.0:9100", "0.0.0.0:9100", ""},
		{"[::1]:9100", "[::1]:9100", ""},
		{"[::]:9100", "[::]:9100", ""},
		{"localhost:9100", "localhost:9100", ""},
		{"", "", "empty address"},
		{"65536", "", "from 0 to 65535"},
		{"-1", "", "from 0 to 65535"},
		{"localhost", "", "from 0 to 65535"},
		{"localhost:", "", "from 0 to 65535"},
		{"localhost:http", "", "from 0 to 65535"},
		{"::1:9100", "", "not HOST:PORT"},
		{"http://localhost:9100", "", "without a scheme"},
		{"localhost:9100/metrics", "", "without a scheme or path"},
	} {
		got, err := ListenAddress(tc.arg)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ListenAddress(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ListenAddress(%q) = %q, %v; want an error with %q", tc.arg, got, err, tc.err)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("ListenAddress(%q): the error %q is not one line", tc.arg, err)
		}
	}
}

func TestListenBusy(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	if err == nil || err.Error() != "cannot listen on "+ln.Addr().String()+": address already in use" {
		t.Errorf("listening on a busy address: %v", err)
	}
}

// TestServe: a scrape shows the status as metrics, with histograms of cumulative buckets in seconds.
func TestServe(t *testing.T) {
	st := tempfs.Stats{Files: 3, Dirs: 2, RAMBytes: 4096, RAMCap: 1 << 30, MemoryFiles: 3, Rollovers: 1,
		OwnerScope: "session", OwnersLive: 4, OwnersGone: 9}
	st.BytesRead = 123
	st.Removed = map[string]int64{"last_close": 5, "max_age": 0, "unlink": 1, "owner_gone": 7}
	st.Requests = tempfs.RequestStats{
		Total: 3, Errors: 1, BucketBoundsMicros: []float64{1, 2, 4},
		ByOpcode: map[string]tempfs.OpcodeStats{
			"LOOKUP": {Count: 3, Errors: 1, HandlerSeconds: 0.5, Histogram: []uint64{1, 0, 1, 1}},
		},
		ErrorsByErrno: map[string]uint64{"ENOENT": 1},
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, func() tempfs.Stats { return st }, slog.New(slog.DiscardHandler))
	defer s.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	for _, want := range []string{
		`tempfs_entries{kind="file"} 3`,
		`tempfs_entries{kind="directory"} 2`,
		`tempfs_files{tier="memory"} 3`,
		`tempfs_ram_bytes 4096`,
		`tempfs_ram_cap_bytes 1.073741824e+09`,
		`tempfs_rollovers_total 1`,
		`tempfs_read_bytes_total 123`,
		`tempfs_names_removed_total{cause="last_close"} 5`,
		`tempfs_names_removed_total{cause="owner_gone"} 7`,
		`tempfs_owners 4`,
		`tempfs_owners_gone_total 9`,
		`tempfs_fuse_request_duration_seconds_bucket{opcode="LOOKUP",le="1e-06"} 1`,
		`tempfs_fuse_request_duration_seconds_bucket{opcode="LOOKUP",le="2e-06"} 1`,
		`tempfs_fuse_request_duration_seconds_bucket{opcode="LOOKUP",le="4e-06"} 2`,
		`tempfs_fuse_request_duration_seconds_bucket{opcode="LOOKUP",le="+Inf"} 3`,
		`tempfs_fuse_request_duration_seconds_sum{opcode="LOOKUP"} 0.5`,
		`tempfs_fuse_request_duration_seconds_count{opcode="LOOKUP"} 3`,
		`tempfs_fuse_request_errors_total{opcode="LOOKUP"} 1`,
		`tempfs_fuse_errors_total{errno="ENOENT"} 1`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if resp, err := http.Get("http://" + ln.Addr().String() + "/nothing"); err != nil {
		t.Errorf("GET /nothing: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: %s, want 404", resp.Status)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/metrics"); err == nil {
		t.Errorf("still serving after Close")
	}
}

// TestConnectionLimit: idle clients hold at most maxConnections of the daemon's descriptors; one more waits
// until a slot frees and is then served; Close returns while every slot is taken.
func TestConnectionLimit(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, func() tempfs.Stats { return tempfs.Stats{} }, slog.New(slog.DiscardHandler))
	defer s.Close()
	addr := ln.Addr().String()
	var idle []net.Conn
	for range maxConnections {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitFor(t, "every idle connection accepted", func() bool { return len(s.listener.slots) == maxConnections })

	extra, err := net.Dial("tcp", addr) // in the backlog: no slot is free
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if _, err := io.WriteString(extra, "GET /metrics HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	idle[0].Close()
	reply, err := io.ReadAll(extra) // answered once the closed connection's slot is free
	if err != nil || !strings.HasPrefix(string(reply), "HTTP/1.0 200") {
		t.Fatalf("the waiting client got %q, %v", reply, err)
	}
	for _, c := range idle[1:] {
		c.Close()
	}
	// One slot stays taken by the Accept that waits for the next client.
	waitFor(t, "slots freed by closed connections", func() bool { return len(s.listener.slots) == 1 })

	for range maxConnections {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "every slot taken again", func() bool { return len(s.listener.slots) == maxConnections })
	if err := s.Close(); err != nil { // must not hang in Accept waiting for a slot
		t.Errorf("Close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
