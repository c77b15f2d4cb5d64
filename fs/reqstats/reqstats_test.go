package reqstats

import (
	"sync"
	"testing"
	"time"
)

func TestBucketOf(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Nanosecond, 0},
		{time.Microsecond, 0},
		{time.Microsecond + 1, 1},
		{2 * time.Microsecond, 1},
		{3 * time.Microsecond, 2},
		{4 * time.Microsecond, 2},
		{4*time.Microsecond + 1, 3},
		{time.Millisecond, 10}, // 1000 µs <= 1024 µs
		{1024 * time.Microsecond, 10},
		{1025 * time.Microsecond, 11},
		{BucketBound(NumBuckets - 2), NumBuckets - 2},
		{BucketBound(NumBuckets-2) + 1, NumBuckets - 1},
		{time.Hour, NumBuckets - 1},
	} {
		if got := bucketOf(tc.d); got != tc.want {
			t.Errorf("bucketOf(%v) = %d, want %d", tc.d, got, tc.want)
		}
		if b := bucketOf(tc.d); tc.d > BucketBound(b) || (b > 0 && tc.d <= BucketBound(b-1)) {
			t.Errorf("%v is not in bucket %d's range (%v, %v]", tc.d, b, BucketBound(b-1), BucketBound(b))
		}
	}
	if BucketBound(NumBuckets-2) < time.Second {
		t.Errorf("the largest finite bound %v is below 1 s", BucketBound(NumBuckets-2))
	}
}

func TestRecord(t *testing.T) {
	for _, tc := range []struct {
		name       string
		durations  []time.Duration
		errnos     []int
		wantCount  uint64
		wantErrors uint64
		wantErrnos map[int]uint64
	}{
		{"none", nil, nil, 0, 0, map[int]uint64{}},
		{"successes", []time.Duration{time.Microsecond, time.Millisecond}, []int{0, 0}, 2, 0, map[int]uint64{}},
		{"failures", []time.Duration{1, 2, 3}, []int{2, 2, 13}, 3, 3, map[int]uint64{2: 2, 13: 1}},
		{"negative status is no failure", []time.Duration{1}, []int{-1}, 1, 0, map[int]uint64{}},
		{"huge errno counted as MaxErrno", []time.Duration{1}, []int{100000}, 1, 1, map[int]uint64{MaxErrno: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New([]string{"A", "B"})
			var total time.Duration
			for i, d := range tc.durations {
				r.Record(1, d, tc.errnos[i])
				total += d
			}
			k := r.Kind(1)
			if k.Name != "B" || k.Count != tc.wantCount || k.Errors != tc.wantErrors || k.Total != total {
				t.Errorf("kind B = %+v, want count %d, errors %d, total %v", k, tc.wantCount, tc.wantErrors, total)
			}
			if other := r.Kind(0); other.Count != 0 || other.Errors != 0 {
				t.Errorf("kind A moved: %+v", other)
			}
			got := r.Errnos()
			if len(got) != len(tc.wantErrnos) {
				t.Fatalf("Errnos() = %v, want %v", got, tc.wantErrnos)
			}
			for e, n := range tc.wantErrnos {
				if got[e] != n {
					t.Errorf("Errnos()[%d] = %d, want %d", e, got[e], n)
				}
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	r := New([]string{"op"})
	if q := r.Kind(0).Quantile(0.5); q != 0 {
		t.Errorf("quantile of nothing = %v, want 0", q)
	}
	// 90 requests of 3 µs (bucket (2, 4] µs) and 10 of 1.5 ms (bucket (1024, 2048] µs).
	for range 90 {
		r.Record(0, 3*time.Microsecond, 0)
	}
	for range 10 {
		r.Record(0, 1500*time.Microsecond, 0)
	}
	k := r.Kind(0)
	for _, tc := range []struct {
		q        float64
		min, max time.Duration
	}{
		{0.5, 2 * time.Microsecond, 4 * time.Microsecond},
		{0.9, 2 * time.Microsecond, 4 * time.Microsecond},
		{0.99, 1024 * time.Microsecond, 2048 * time.Microsecond},
		{1, 1024 * time.Microsecond, 2048 * time.Microsecond},
	} {
		if got := k.Quantile(tc.q); got < tc.min || got > tc.max {
			t.Errorf("quantile %v = %v, want within [%v, %v]", tc.q, got, tc.min, tc.max)
		}
	}
	r.Record(0, time.Hour, 0)
	if got := r.Kind(0).Quantile(1); got != BucketBound(NumBuckets-2) {
		t.Errorf("quantile in the unbounded bucket = %v, want the largest finite bound", got)
	}
}

// TestRecordConcurrent: counts are exact under concurrent recording (run with -race).
func TestRecordConcurrent(t *testing.T) {
	r := New([]string{"a", "b", "c"})
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r.Record(w%3, time.Duration(i)*time.Microsecond, i%2)
			}
		})
	}
	wg.Wait()
	var count, errors uint64
	for i := range r.Kinds() {
		k := r.Kind(i)
		count += k.Count
		errors += k.Errors
	}
	if count != workers*each || errors != workers*each/2 || r.Errnos()[1] != workers*each/2 {
		t.Errorf("count %d, errors %d, errno 1 %d; want %d, %d, %d", count, errors, r.Errnos()[1], workers*each, workers*each/2, workers*each/2)
	}
}

// TestRecordDoesNotAllocate: the per-request cost stays a few atomic adds.
func TestRecordDoesNotAllocate(t *testing.T) {
	r := New([]string{"a"})
	if n := testing.AllocsPerRun(100, func() { r.Record(0, time.Millisecond, 2) }); n != 0 {
		t.Errorf("Record allocates %v times per call", n)
	}
}

func TestExportAdd(t *testing.T) {
	old := New([]string{"A", "B"})
	old.Record(0, 3*time.Microsecond, 0)
	old.Record(1, time.Millisecond, 2)
	old.RecordExpected(1, time.Microsecond, 2)
	st := old.Export()

	successor := New([]string{"A", "B"})
	successor.Record(0, time.Microsecond, 0)
	if err := successor.Add(st); err != nil {
		t.Fatal(err)
	}
	if a := successor.Kind(0); a.Count != 2 {
		t.Errorf("A counts %d, want 2 (one before, one carried)", a.Count)
	}
	if b := successor.Kind(1); b.Count != 2 || b.Errors != 2 || b.Expected != 1 {
		t.Errorf("B: %+v, want 2 requests, 2 errors, 1 expected", b)
	}
	if n := successor.Errnos()[2]; n != 2 {
		t.Errorf("errno 2 counted %d times, want 2", n)
	}
	if n := successor.ExpectedErrnos()[2]; n != 1 {
		t.Errorf("expected errno 2 counted %d times, want 1", n)
	}

	other := New([]string{"A"})
	if err := other.Add(st); err == nil {
		t.Error("a state with a kind the recorder does not have was added")
	}
	if a := other.Kind(0); a.Count != 0 {
		t.Errorf("a refused state added %d requests", a.Count)
	}
}
