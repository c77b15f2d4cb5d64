package csinode

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// SocketPath takes the path out of a CSI endpoint: unix:///csi/csi.sock (as the Kubernetes sidecars write it)
// or unix:/csi/csi.sock. Only Unix sockets are served: the kubelet talks to node plugins through one.
func SocketPath(endpoint string) (string, error) {
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		path, ok = strings.CutPrefix(endpoint, "unix:")
	}
	if !ok || path == "" || !filepath.IsAbs(path) {
		return "", fmt.Errorf("endpoint %q: give a Unix socket as unix:///PATH (an absolute path)", endpoint)
	}
	return filepath.Clean(path), nil
}

// Listen listens on the Unix socket at path, replacing a socket left by an earlier run (never another kind of
// file, nor a socket that another process still serves).
func Listen(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if conn, err := net.Dial("unix", path); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s is served by another process (another tempfs csi?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}
