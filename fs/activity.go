package fs

import (
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/reqstats"
)

// Activity is what the daemon has done since it mounted: bytes read, names removed by cause, and FUSE
// requests by opcode. It is part of Stats (user.tempfs.stats, `tempfs status --json`), and the Prometheus
// metrics of `tempfs mount --metrics` are read from it at each scrape.
type Activity struct {
	// BytesRead counts the bytes the daemon served to READ requests. Reads served by the kernel (the page
	// cache, passthrough) never reach the daemon and are not counted; nor are their writes in bytes_written.
	BytesRead int64 `json:"bytes_read"`
	// Removed counts names removed since mount by cause: last_close (a file made from a template, at its
	// last close), max_age (--max-age), unlink (unlink, rmdir, or replaced by rename), owner_gone (--owner).
	Removed map[string]int64 `json:"removed"`
	// Requests counts the FUSE requests that reached the filesystem.
	Requests RequestStats `json:"requests"`
	// MetricsAddress is where Prometheus metrics are served (host:port), empty when they are off.
	MetricsAddress string `json:"metrics_address,omitempty"`
}

// RequestStats counts FUSE requests by opcode, with the time their handlers took, and failures by errno.
type RequestStats struct {
	Total  uint64 `json:"total"`
	Errors uint64 `json:"errors"`
	// BucketBoundsMicros are the upper bounds of the histogram buckets of every opcode, in microseconds; the
	// histograms have one bucket more, for slower requests.
	BucketBoundsMicros []float64 `json:"bucket_bounds_us"`
	// ByOpcode has the opcodes seen at least once, by the kernel's name (LOOKUP, CREATE, ...).
	ByOpcode map[string]OpcodeStats `json:"by_opcode"`
	// ErrorsByErrno counts failed requests by the errno they answered (ENOENT, ...). A failure is any answer
	// but success: ENOENT to the LOOKUP of a new name, ENODATA to a GETXATTR of a missing attribute, ENOSYS to
	// FLUSH (tempfs's way of telling the kernel not to send it) count as well.
	ErrorsByErrno map[string]uint64 `json:"errors_by_errno"`
	// Expected is the part of Errors that are normal answers, not failures: ENOENT to a LOOKUP, ENODATA to
	// a GETXATTR, and an opcode's first ENOSYS. ExpectedByErrno splits them by errno.
	Expected        uint64            `json:"expected_errors"`
	ExpectedByErrno map[string]uint64 `json:"expected_errors_by_errno"`
}

// OpcodeStats are the requests of one opcode.
type OpcodeStats struct {
	Count  uint64 `json:"count"`
	Errors uint64 `json:"errors"`
	// Expected is the part of Errors that are normal answers (RequestStats.Expected).
	Expected uint64 `json:"expected_errors"`
	// HandlerSeconds is the time spent in their handlers, all together.
	HandlerSeconds float64 `json:"handler_seconds"`
	// P50Micros and P99Micros are the median and 99th percentile of the handler time, estimated from the
	// histogram.
	P50Micros float64 `json:"p50_us"`
	P99Micros float64 `json:"p99_us"`
	// Histogram counts the requests by handler time, one count per bucket of bucket_bounds_us (not
	// cumulative), the last for requests slower than the largest bound.
	Histogram []uint64 `json:"histogram"`
}

// removalCause is why a name was removed, for Activity.Removed.
type removalCause int

const (
	removedLastClose removalCause = iota
	removedMaxAge
	removedUnlink
	removedOwnerGone
	numRemovalCauses
)

var removalCauseNames = [numRemovalCauses]string{
	removedLastClose: "last_close", removedMaxAge: "max_age", removedUnlink: "unlink", removedOwnerGone: "owner_gone",
}

// activityCounters are the counters behind Activity that are not in FS.counts or the request recorder.
type activityCounters struct {
	bytesRead atomic.Int64
	removed   [numRemovalCauses]atomic.Int64
}

// noteRemoved counts n names removed for cause.
func (fsys *FS) noteRemoved(cause removalCause, n int) {
	fsys.activity.removed[cause].Add(int64(n))
}

// Activity snapshots what the daemon has done since it mounted.
func (fsys *FS) Activity() Activity {
	a := Activity{
		BytesRead:      fsys.activity.bytesRead.Load(),
		Removed:        make(map[string]int64, numRemovalCauses),
		Requests:       requestStats(fsys.requests),
		MetricsAddress: fsys.opts.MetricsAddress,
	}
	for cause, name := range removalCauseNames {
		a.Removed[name] = fsys.activity.removed[cause].Load()
	}
	return a
}

func requestStats(rec *reqstats.Recorder) RequestStats {
	s := RequestStats{
		BucketBoundsMicros: make([]float64, reqstats.NumBuckets-1),
		ByOpcode:           map[string]OpcodeStats{},
		ErrorsByErrno:      map[string]uint64{},
		ExpectedByErrno:    map[string]uint64{},
	}
	for i := range s.BucketBoundsMicros {
		s.BucketBoundsMicros[i] = float64(reqstats.BucketBound(i).Microseconds())
	}
	for i := range rec.Kinds() {
		k := rec.Kind(i)
		if k.Count == 0 {
			continue
		}
		s.Total += k.Count
		s.Errors += k.Errors
		s.Expected += k.Expected
		s.ByOpcode[k.Name] = OpcodeStats{
			Count:          k.Count,
			Errors:         k.Errors,
			Expected:       k.Expected,
			HandlerSeconds: k.Total.Seconds(),
			P50Micros:      float64(k.Quantile(0.5).Nanoseconds()) / 1e3,
			P99Micros:      float64(k.Quantile(0.99).Nanoseconds()) / 1e3,
			Histogram:      k.Buckets[:],
		}
	}
	for errno, n := range rec.Errnos() {
		s.ErrorsByErrno[errnoName(errno)] = n
	}
	for errno, n := range rec.ExpectedErrnos() {
		s.ExpectedByErrno[errnoName(errno)] = n
	}
	return s
}

// errnoName is an errno's symbolic name (ENOENT), or its number when it has none.
func errnoName(errno int) string {
	if name := unix.ErrnoName(syscall.Errno(errno)); name != "" {
		return name
	}
	return "errno " + strconv.Itoa(errno)
}
