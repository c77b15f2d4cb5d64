package fs

import (
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestRecordingFSCountsEachMethodAsItsOwnOpcode calls every method of recordingFS once (over go-fuse's default
// filesystem, which answers ENOSYS) and checks that each request method counted exactly one request of its own
// opcode: a method forwarded without recording, or recording under another method's opcode, fails here.
func TestRecordingFSCountsEachMethodAsItsOwnOpcode(t *testing.T) {
	notRequests := map[string]bool{"String": true, "SetDebug": true, "Init": true, "OnUnmount": true}
	for i, name := range opcodeNames {
		if name == "" {
			t.Errorf("opcode %d has no name", i)
		}
	}
	r := &recordingFS{fs: fuse.NewDefaultRawFileSystem(), rec: newRequestRecorder()}
	v := reflect.ValueOf(r)
	seen := map[string]string{} // opcode name -> method
	for i := range v.NumMethod() {
		m := v.Type().Method(i)
		if notRequests[m.Name] {
			continue
		}
		before := snapshotCounts(r)
		args := make([]reflect.Value, m.Type.NumIn()-1)
		for j := range args {
			args[j] = reflect.New(m.Type.In(j + 1)).Elem()
			if p := m.Type.In(j + 1); p.Kind() == reflect.Pointer {
				args[j] = reflect.New(p.Elem()) // inputs and outputs are never nil in go-fuse
			}
		}
		v.Method(i).Call(args)
		after := snapshotCounts(r)
		var moved []string
		for op, n := range after {
			if n != before[op] {
				moved = append(moved, op)
			}
		}
		if m.Name == "Writev" {
			// ENOSYS from Writev: go-fuse retries with Write, which counts the request.
			if len(moved) != 0 {
				t.Errorf("Writev answered ENOSYS and counted %v; Write will count the request", moved)
			}
			continue
		}
		if len(moved) != 1 || after[moved[0]]-before[moved[0]] != 1 {
			t.Errorf("%s moved the counts of %v, want one request of one opcode", m.Name, moved)
			continue
		}
		if prev, dup := seen[moved[0]]; dup {
			t.Errorf("%s and %s both count as %s", prev, m.Name, moved[0])
		}
		seen[moved[0]] = m.Name
	}
	if len(seen) != int(numOpcodes) {
		t.Errorf("%d opcodes counted by %d methods, want all %d: %v", len(seen), len(seen), numOpcodes, seen)
	}
}

func snapshotCounts(r *recordingFS) map[string]uint64 {
	out := map[string]uint64{}
	for i := range r.rec.Kinds() {
		k := r.rec.Kind(i)
		out[k.Name] = k.Count
	}
	return out
}

// TestActivity: requests, their errors and names removed by each cause show in Stats.
func TestActivity(t *testing.T) {
	tt := newTestTree(t)
	if _, st := tt.lookup("missing"); st != fuse.ENOENT {
		t.Fatalf("lookup of a missing name: %v", st)
	}
	tmpl := tt.create(t, "jobXXXXXX", 0o600)
	tt.release(tmpl.NodeId, tmpl.Fh) // last close: the generated name goes
	tt.createClosed(t, "plain", 0o600)
	h := tt.header(fuse.FUSE_ROOT_ID)
	if st := tt.raw.Unlink(nil, &h, "plain"); st != fuse.OK {
		t.Fatalf("unlink: %v", st)
	}
	tt.createClosed(t, "old", 0o600)
	if n := tt.fsys.Reap(time.Minute, time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("Reap removed %d entries, want 1", n)
	}

	st := tt.fsys.Stats()
	for cause, want := range map[string]int64{"last_close": 1, "unlink": 1, "max_age": 1, "owner_gone": 0} {
		if got, ok := st.Removed[cause]; !ok || got != want {
			t.Errorf("removed[%s] = %d (present %v), want %d", cause, got, ok, want)
		}
	}
	req := st.Requests
	for op, want := range map[string]OpcodeStats{
		"LOOKUP":  {Count: 1, Errors: 1},
		"CREATE":  {Count: 3},
		"RELEASE": {Count: 3},
		"UNLINK":  {Count: 1},
	} {
		got := req.ByOpcode[op]
		if got.Count != want.Count || got.Errors != want.Errors {
			t.Errorf("%s: count %d errors %d, want %d and %d", op, got.Count, got.Errors, want.Count, want.Errors)
		}
		var inHistogram uint64
		for _, n := range got.Histogram {
			inHistogram += n
		}
		if inHistogram != got.Count || len(got.Histogram) != len(req.BucketBoundsMicros)+1 {
			t.Errorf("%s: histogram %v (%d buckets for %d bounds) does not hold its %d requests", op, got.Histogram,
				len(got.Histogram), len(req.BucketBoundsMicros), got.Count)
		}
	}
	if req.Total != 8 || req.Errors != 1 || req.ErrorsByErrno["ENOENT"] != 1 || len(req.ErrorsByErrno) != 1 {
		t.Errorf("total %d, errors %d, by errno %v; want 8, 1, ENOENT 1", req.Total, req.Errors, req.ErrorsByErrno)
	}
	if _, ok := req.ByOpcode["MKDIR"]; ok {
		t.Errorf("an opcode never used is listed: %v", req.ByOpcode)
	}
}

func TestErrnoName(t *testing.T) {
	for errno, want := range map[int]string{int(syscall.ENOENT): "ENOENT", int(syscall.ENOSYS): "ENOSYS", 4000: "errno 4000"} {
		if got := errnoName(errno); got != want {
			t.Errorf("errnoName(%d) = %q, want %q", errno, got, want)
		}
	}
}

// TestExpectedAnswers: ENOENT to LOOKUP, ENODATA to GETXATTR and an opcode's first ENOSYS are normal answers,
// counted apart from failures; the same errnos elsewhere, or a second ENOSYS, are failures.
func TestExpectedAnswers(t *testing.T) {
	r := &recordingFS{rec: newRequestRecorder()}
	for _, tc := range []struct {
		op    opcode
		errno syscall.Errno
		want  bool
	}{
		{opLookup, syscall.ENOENT, true},
		{opLookup, syscall.ENAMETOOLONG, false},
		{opOpen, syscall.ENOENT, false},
		{opGetxattr, syscall.ENODATA, true},
		{opListxattr, syscall.ENODATA, false},
		{opGetxattr, syscall.ERANGE, true},
		{opListxattr, syscall.ERANGE, true},
		{opRead, syscall.ERANGE, false},
		{opFlush, syscall.ENOSYS, true},
		{opFlush, syscall.ENOSYS, false},
		{opLseek, syscall.ENOSYS, true},
	} {
		if got := r.expectedAnswer(tc.op, int(tc.errno)); got != tc.want {
			t.Errorf("%s answering %v: expected %v, want %v", opcodeNames[tc.op], tc.errno, got, tc.want)
		}
	}
	st := fuse.Status(syscall.ENOENT)
	r.record(opLookup, reqStart{t: time.Now()}, &st)
	st = fuse.Status(syscall.ENOENT)
	r.record(opOpen, reqStart{t: time.Now()}, &st)
	s := requestStats(r.rec)
	if s.Errors != 2 || s.Expected != 1 || s.ExpectedByErrno["ENOENT"] != 1 || s.ByOpcode["LOOKUP"].Expected != 1 || s.ByOpcode["OPEN"].Expected != 0 {
		t.Errorf("after an ENOENT to LOOKUP and one to OPEN: %+v", s)
	}
}
