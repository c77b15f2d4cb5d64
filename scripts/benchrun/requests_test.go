package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRequestTallyPrint(t *testing.T) {
	var r requestTally
	w := r.of("small cycle, template", "cycle")
	w.ops = 2000
	// 2000 cycles, plus the directory made and removed once and a few polls for it to empty.
	for op, n := range map[string]float64{"LOOKUP": 2001, "CREATE": 2000, "WRITE": 2000, "RELEASE": 2000, "MKDIR": 1, "READDIR": 7, "FORGET": 30} {
		w.counts[op] = n
	}
	if r.of("small cycle, template", "other unit") != w {
		t.Fatal("a workload's tally is not found again by its name")
	}
	r.of("never ran", "run") // no operations: not printed
	var out bytes.Buffer
	r.print(&out)
	want := "  small cycle, template: 3.0 requests per cycle: LOOKUP 1.0, CREATE 1.0, WRITE 1.0; in the background: RELEASE 1.0\n"
	if !strings.HasSuffix(out.String(), want) {
		t.Errorf("printed:\n%s\nwant it to end with:\n%s", out.String(), want)
	}
	if strings.Contains(out.String(), "never ran") {
		t.Errorf("a workload without operations is printed:\n%s", out.String())
	}
}
