// Package metrics serves a tempfs mount's status as Prometheus metrics at /metrics (tempfs mount --metrics ADDR).
//
// It uses github.com/prometheus/client_golang for the standard text exposition format, content negotiation and
// its registry (with the Go runtime and process collectors beside tempfs's own). tempfs's metrics are not kept
// twice: one collector reads the daemon's Stats, the same snapshot `tempfs status` shows, at every scrape.
// Labels never carry file names: only opcodes, errnos, entry kinds, storage tiers and removal causes.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	tempfs "github.com/tempfs/tempfs/fs"
)

// ListenAddress turns the --metrics argument into a host:port to listen on. A bare port or ":PORT" binds to
// the loopback address only (127.0.0.1:PORT): metrics tell what a machine's users do, so exposing them further
// is the user's choice, made by naming a host (0.0.0.0:9100, [::]:9100, a host name or address).
func ListenAddress(arg string) (string, error) {
	if arg == "" {
		return "", errors.New("empty address: give a port (9100), :PORT or HOST:PORT")
	}
	if strings.Contains(arg, "/") {
		return "", errors.New("not an address: give a port (9100), :PORT or HOST:PORT, without a scheme or path")
	}
	host, port := "", arg
	if strings.Contains(arg, ":") {
		var err error
		if host, port, err = net.SplitHostPort(arg); err != nil {
			return "", errors.New("not HOST:PORT (an IPv6 address goes in brackets: [::1]:9100)")
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" {
		return "", errors.New("the port must be a number from 0 to 65535")
	} else {
		port = strconv.FormatUint(n, 10)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Listen binds addr (from ListenAddress), so that a busy or unusable address fails before anything is mounted.
// The error is one line: the address and why.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			err = opErr.Err // without "listen tcp ADDR:", said below
		}
		var sysErr *os.SyscallError
		if errors.As(err, &sysErr) {
			err = sysErr.Err // "address already in use", without "bind:"
		}
		return nil, fmt.Errorf("cannot listen on %s: %v", addr, err)
	}
	return ln, nil
}

// Server serves /metrics until Close.
type Server struct {
	http     *http.Server
	listener *limitListener
	done     chan struct{}
}

// Serve answers /metrics on ln with the metrics read from stats at each scrape, until Close.
func Serve(ln net.Listener, stats func() tempfs.Stats, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(stats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4, // scrapes are cheap, but a flood of them must not starve the filesystem
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "tempfs: metrics at /metrics")
	})
	s := &Server{
		http: &http.Server{
			Handler: mux,
			// A client that stalls or idles gives its connection back (see maxConnections).
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		listener: newLimitListener(ln, maxConnections),
		done:     make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s
}

// Close stops serving and closes the listener.
func (s *Server) Close() error {
	err := s.http.Close()
	<-s.done
	return err
}
