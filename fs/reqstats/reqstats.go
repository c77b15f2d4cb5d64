// Package reqstats counts requests by kind (a FUSE opcode, for package fs), with the time spent handling each in
// a histogram of fixed buckets, and failures by errno. It knows nothing of FUSE: fs numbers its opcodes densely,
// names them, and calls Record once per request.
//
// Recording is on the path of every request, so it costs three atomic adds at most and never locks, allocates
// or looks anything up in a map: the counters are arrays indexed by kind, bucket and errno. Readers (status,
// metrics scrapes) take snapshots; a snapshot taken while requests are being recorded may be a few requests
// behind in some fields, never inconsistent within one kind (its count is the sum of its buckets).
package reqstats

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// NumBuckets is the number of histogram buckets: upper bounds of 1 µs, 2 µs, 4 µs ... 2^20 µs (about 1 s), and
// a last bucket for everything slower.
const NumBuckets = 22

// MaxErrno is the largest errno counted by its own number; larger ones (none exist on Linux) are counted as it.
const MaxErrno = 255

// BucketBound is the upper bound of bucket i (inclusive, as Prometheus' le); the last bucket has none (+Inf).
func BucketBound(i int) time.Duration {
	if i >= NumBuckets-1 {
		return time.Duration(math.MaxInt64)
	}
	return time.Microsecond << i
}

// bucketOf is the bucket of a request that took d: the smallest i with d <= BucketBound(i).
func bucketOf(d time.Duration) int {
	if d <= time.Microsecond {
		return 0
	}
	us := (uint64(d) + uint64(time.Microsecond) - 1) / uint64(time.Microsecond) // rounded up
	return min(bits.Len64(us-1), NumBuckets-1)
}

// kindCounters are one kind's counters. Its count is the sum of its buckets, so that a snapshot's count and
// histogram always agree.
type kindCounters struct {
	buckets  [NumBuckets]atomic.Uint64
	errors   atomic.Uint64
	expected atomic.Uint64
	nanos    atomic.Uint64
}

// Recorder holds the counters of a fixed set of kinds.
type Recorder struct {
	names  []string
	kinds  []kindCounters
	errnos [MaxErrno + 1]atomic.Uint64
	// expectedErrnos are the part of errnos that the caller called expected (RecordExpected).
	expectedErrnos [MaxErrno + 1]atomic.Uint64
}

// New makes a recorder for the kinds 0 .. len(names)-1, named names[i] in snapshots.
func New(names []string) *Recorder {
	return &Recorder{names: names, kinds: make([]kindCounters, len(names))}
}

// Record counts one request of kind that took d and answered errno (0: success). A kind out of range is a bug
// of the caller and panics, as an index out of range would.
func (r *Recorder) Record(kind int, d time.Duration, errno int) {
	k := &r.kinds[kind]
	k.buckets[bucketOf(d)].Add(1)
	k.nanos.Add(uint64(max(d, 0)))
	if errno > 0 {
		k.errors.Add(1)
		r.errnos[min(errno, MaxErrno)].Add(1)
	}
}

// RecordExpected is Record for a request whose error answer is a normal one, not a failure (the caller
// decides which: for fs, ENOENT to the lookup of a name that does not exist yet). It counts among the errors,
// and among the expected ones too, so that a reader can tell them apart.
func (r *Recorder) RecordExpected(kind int, d time.Duration, errno int) {
	r.Record(kind, d, errno)
	if errno > 0 {
		r.kinds[kind].expected.Add(1)
		r.expectedErrnos[min(errno, MaxErrno)].Add(1)
	}
}

// Kinds is the number of kinds.
func (r *Recorder) Kinds() int { return len(r.kinds) }

// Kind is a snapshot of one kind's counters.
type Kind struct {
	Name   string
	Count  uint64
	Errors uint64
	// Expected is the part of Errors recorded with RecordExpected.
	Expected uint64
	// Total is the time spent handling all of them.
	Total time.Duration
	// Buckets counts the requests in each bucket (not cumulative); see BucketBound.
	Buckets [NumBuckets]uint64
}

// Kind snapshots kind i.
func (r *Recorder) Kind(i int) Kind {
	k := &r.kinds[i]
	s := Kind{Name: r.names[i], Errors: k.errors.Load(), Expected: k.expected.Load(), Total: time.Duration(k.nanos.Load())}
	for b := range k.buckets {
		s.Buckets[b] = k.buckets[b].Load()
		s.Count += s.Buckets[b]
	}
	return s
}

// Errnos snapshots the failures by errno: errno -> count, for the errnos seen at least once.
func (r *Recorder) Errnos() map[int]uint64 {
	out := map[int]uint64{}
	for e := range r.errnos {
		if n := r.errnos[e].Load(); n > 0 {
			out[e] = n
		}
	}
	return out
}

// ExpectedErrnos snapshots the expected errors (RecordExpected) by errno, as Errnos does.
func (r *Recorder) ExpectedErrnos() map[int]uint64 {
	out := map[int]uint64{}
	for e := range r.expectedErrnos {
		if n := r.expectedErrnos[e].Load(); n > 0 {
			out[e] = n
		}
	}
	return out
}

// Quantile estimates the q-quantile (0 < q <= 1) of the handling time from the histogram, interpolating linearly
// inside the bucket that holds it, as Prometheus' histogram_quantile does. A quantile in the last, unbounded
// bucket answers the largest finite bound. It is 0 when there are no requests.
func (k Kind) Quantile(q float64) time.Duration {
	if k.Count == 0 {
		return 0
	}
	rank := q * float64(k.Count)
	var below float64
	for i, n := range k.Buckets {
		if n == 0 || below+float64(n) < rank {
			below += float64(n)
			continue
		}
		if i == NumBuckets-1 {
			return BucketBound(NumBuckets - 2)
		}
		lower := time.Duration(0)
		if i > 0 {
			lower = BucketBound(i - 1)
		}
		frac := (rank - below) / float64(n)
		return lower + time.Duration(frac*float64(BucketBound(i)-lower))
	}
	return BucketBound(NumBuckets - 2)
}

// State is a recorder's counters as data, by kind name, for a process that continues them (a take-over).
type State struct {
	Kinds          map[string]KindState `json:"kinds"`
	Errnos         map[int]uint64       `json:"errnos,omitempty"`
	ExpectedErrnos map[int]uint64       `json:"expected_errnos,omitempty"`
}

// KindState is one kind's counters.
type KindState struct {
	Buckets  []uint64 `json:"buckets"`
	Errors   uint64   `json:"errors,omitempty"`
	Expected uint64   `json:"expected,omitempty"`
	Nanos    uint64   `json:"nanos"`
}

// Export is the counters now.
func (r *Recorder) Export() State {
	st := State{Kinds: make(map[string]KindState, len(r.kinds)), Errnos: r.Errnos(), ExpectedErrnos: r.ExpectedErrnos()}
	for i := range r.kinds {
		k := &r.kinds[i]
		ks := KindState{Buckets: make([]uint64, NumBuckets), Errors: k.errors.Load(), Expected: k.expected.Load(), Nanos: k.nanos.Load()}
		for b := range k.buckets {
			ks.Buckets[b] = k.buckets[b].Load()
		}
		st.Kinds[r.names[i]] = ks
	}
	return st
}

// Add adds the counters of st, from a recorder of the same kinds (by name; one this recorder does not have
// is refused, before anything is added).
func (r *Recorder) Add(st State) error {
	index := make(map[string]int, len(r.names))
	for i, name := range r.names {
		index[name] = i
	}
	for name, ks := range st.Kinds {
		if _, ok := index[name]; !ok {
			return fmt.Errorf("reqstats: unknown kind %q", name)
		}
		if len(ks.Buckets) != NumBuckets {
			return fmt.Errorf("reqstats: kind %q has %d buckets, want %d", name, len(ks.Buckets), NumBuckets)
		}
	}
	for errno := range st.Errnos {
		if errno < 0 || errno > MaxErrno {
			return fmt.Errorf("reqstats: errno %d out of range", errno)
		}
	}
	for errno := range st.ExpectedErrnos {
		if errno < 0 || errno > MaxErrno {
			return fmt.Errorf("reqstats: errno %d out of range", errno)
		}
	}
	for name, ks := range st.Kinds {
		k := &r.kinds[index[name]]
		for b, n := range ks.Buckets {
			k.buckets[b].Add(n)
		}
		k.errors.Add(ks.Errors)
		k.expected.Add(ks.Expected)
		k.nanos.Add(ks.Nanos)
	}
	for errno, n := range st.Errnos {
		r.errnos[errno].Add(n)
	}
	for errno, n := range st.ExpectedErrnos {
		r.expectedErrnos[errno].Add(n)
	}
	return nil
}
