package main

import (
	"strconv"
	"time"

	"github.com/tempfs/tempfs/cmd/tempfs/metrics"
	"github.com/tempfs/tempfs/fs/owner"
	"github.com/tempfs/tempfs/naming"
)

// sizeValue is a pflag.Value for sizes as naming.ParseSize reads them: 4096, 64KiB, 1M (binary), 10GB (decimal).
type sizeValue struct {
	bytes int64
	set   bool
	text  string // as given, so that String can be parsed again (the --daemon child gets it back)
}

func (s *sizeValue) String() string {
	switch {
	case s.text != "":
		return s.text
	case !s.set && s.bytes == 0:
		return ""
	case s.bytes%(1<<20) == 0:
		return strconv.FormatInt(s.bytes>>20, 10) + "MiB"
	}
	return strconv.FormatInt(s.bytes, 10)
}

func (s *sizeValue) Set(v string) error {
	n, err := naming.ParseSize(v)
	if err != nil {
		return err
	}
	s.bytes, s.set, s.text = n, true, v
	return nil
}

func (s *sizeValue) Type() string { return "size" }

// modeValue is a pflag.Value for octal permission bits (1777, 0755).
type modeValue uint32

func (m *modeValue) String() string { return "0" + strconv.FormatUint(uint64(*m), 8) }

func (m *modeValue) Set(v string) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 07777 {
		return &modeError{v}
	}
	*m = modeValue(n)
	return nil
}

func (m *modeValue) Type() string { return "octal" }

type modeError struct{ v string }

func (e *modeError) Error() string {
	return "invalid mode " + strconv.Quote(e.v) + ": use octal permission bits, e.g. 1777 or 0700"
}

// metricsAddrValue is a pflag.Value for --metrics: a port, :PORT or HOST:PORT, checked and kept as the host:port
// to listen on (metrics.ListenAddress), so that an empty or malformed address is refused as the flag is read.
type metricsAddrValue struct{ addr string }

func (m *metricsAddrValue) String() string { return m.addr }

func (m *metricsAddrValue) Set(v string) error {
	addr, err := metrics.ListenAddress(v)
	if err != nil {
		return err
	}
	m.addr = addr
	return nil
}

func (m *metricsAddrValue) Type() string { return "addr" }

// scopeValue is a pflag.Value for --owner: one of owner.ScopeNames.
type scopeValue struct{ scope owner.Scope }

func (v *scopeValue) String() string { return v.scope.String() }

func (v *scopeValue) Set(text string) error {
	s, err := owner.ParseScope(text)
	if err != nil {
		return err
	}
	v.scope = s
	return nil
}

func (v *scopeValue) Type() string { return "scope" }

// durationValue is a pflag.Value for durations: Go's units and d for days (10d, 1d12h, 90m).
type durationValue struct {
	d    time.Duration
	text string // as given, so that the --daemon child gets it back unchanged
}

func (v *durationValue) String() string {
	if v.text != "" {
		return v.text
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := naming.ParseDuration(s)
	if err != nil {
		return err
	}
	v.d, v.text = d, s
	return nil
}

func (v *durationValue) Type() string { return "duration" }
