package naming

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// templateCases are shared by the ParseTemplate, IsTemplate and fuzz seed tests.
var templateCases = []struct {
	name    string
	input   string
	want    Template
	wantErr error
}{
	{name: "empty", input: "", wantErr: ErrNotTemplate},
	{name: "no X", input: "report.txt", wantErr: ErrNotTemplate},
	{name: "run of 5", input: "jobXXXXX", wantErr: ErrNotTemplate},
	{name: "lowercase x do not count", input: "jobxxxxxx", wantErr: ErrNotTemplate},
	{name: "runs of 5 split by a char", input: "XXXXX.XXXXX", wantErr: ErrNotTemplate},
	{name: "run of 6 alone", input: "XXXXXX", want: Template{Run: 6}},
	{name: "run of 6 at end", input: "jobXXXXXX", want: Template{Prefix: "job", Run: 6}},
	{name: "run of 6 at start", input: "XXXXXX.log", want: Template{Suffix: ".log", Run: 6}},
	{name: "run in middle, no dot added", input: "jobXXXXXXtail", want: Template{Prefix: "job", Suffix: "tail", Run: 6}},
	{name: "run of 12 is one run", input: "XXXXXXXXXXXX", want: Template{Run: 12}},
	{name: "run of 7 with prefix", input: "aXXXXXXX", want: Template{Prefix: "a", Run: 7}},
	{name: "short run then long run", input: "aXXXb_XXXXXX", want: Template{Prefix: "aXXXb_", Run: 6}},
	{name: "long run then short run", input: "XXXXXX_XXXXX", want: Template{Suffix: "_XXXXX", Run: 6}},
	{name: "two long runs", input: "XXXXXX_XXXXXX", wantErr: ErrMultipleRuns},
	{name: "two long runs of different length", input: "pXXXXXXXXq.XXXXXXr", wantErr: ErrMultipleRuns},
	{name: "three long runs", input: "XXXXXXaXXXXXXbXXXXXX", wantErr: ErrMultipleRuns},
	{name: "non-UTF-8 around run", input: "\xff\xfeXXXXXX\x80\xc3", want: Template{Prefix: "\xff\xfe", Suffix: "\x80\xc3", Run: 6}},
	{name: "multibyte UTF-8 around run", input: "日本XXXXXXé", want: Template{Prefix: "日本", Suffix: "é", Run: 6}},
	{name: "255 bytes", input: strings.Repeat("p", 120) + "XXXXXX" + strings.Repeat("s", 129), want: Template{Prefix: strings.Repeat("p", 120), Suffix: strings.Repeat("s", 129), Run: 6}},
	{name: "255 X", input: strings.Repeat("X", 255), want: Template{Run: 255}},
}

func TestParseTemplate(t *testing.T) {
	for _, tc := range templateCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTemplate(tc.input)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("ParseTemplate(%q) error = %v, want %v", tc.input, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ParseTemplate(%q) = %+v, want %+v", tc.input, got, tc.want)
			}
		})
	}
}

func TestParseTemplateErrorsWrapErrno(t *testing.T) {
	if _, err := ParseTemplate("XXXXXX.XXXXXX"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("two runs: error %v does not wrap EINVAL", err)
	}
	if _, err := ParseTemplate("plain"); errors.Is(err, syscall.EINVAL) {
		t.Errorf("no run: error %v wraps EINVAL; a plain name is not an invalid one", err)
	}
}

func TestIsTemplateAgreesWithParseTemplate(t *testing.T) {
	if len(runMarker) != MinRun {
		t.Fatalf("runMarker has %d X, MinRun is %d", len(runMarker), MinRun)
	}
	for _, tc := range templateCases {
		t.Run(tc.name, func(t *testing.T) {
			want := !errors.Is(tc.wantErr, ErrNotTemplate)
			if got := IsTemplate(tc.input); got != want {
				t.Errorf("IsTemplate(%q) = %v, want %v", tc.input, got, want)
			}
		})
	}
}

func TestIsTemplateDoesNotAllocate(t *testing.T) {
	name := strings.Repeat("aXXXXX", 40) + "XXXXXX"
	if allocs := testing.AllocsPerRun(100, func() { IsTemplate(name) }); allocs != 0 {
		t.Errorf("IsTemplate allocates %v times per call, want 0", allocs)
	}
}

func TestNameKeepsPrefixAndSuffix(t *testing.T) {
	tests := []string{"XXXXXX", "jobXXXXXX", "XXXXXX.log", "aXXXb_XXXXXXXXXX_XXXXXc", "\xffXXXXXXXX\xfe", strings.Repeat("X", 255)}
	for _, input := range tests {
		tmpl, err := ParseTemplate(input)
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", input, err)
		}
		for range 50 {
			name := tmpl.Name()
			if len(name) != len(input) {
				t.Fatalf("Name() from %q = %q, length %d, want %d", input, name, len(name), len(input))
			}
			if !strings.HasPrefix(name, tmpl.Prefix) || !strings.HasSuffix(name, tmpl.Suffix) {
				t.Fatalf("Name() from %q = %q lost prefix %q or suffix %q", input, name, tmpl.Prefix, tmpl.Suffix)
			}
			random := name[len(tmpl.Prefix) : len(name)-len(tmpl.Suffix)]
			if strings.Trim(random, Alphabet) != "" {
				t.Fatalf("Name() from %q drew %q, outside the alphabet", input, random)
			}
			if IsTemplate(name) {
				t.Fatalf("Name() from %q = %q is itself a template", input, name)
			}
		}
	}
}

func TestDrawSkipsExistingNames(t *testing.T) {
	tmpl := Template{Prefix: "job", Run: 6}
	for _, taken := range []int{0, 1, 5, MaxDraws - 1} {
		seen := map[string]bool{}
		calls := 0
		exists := func(name string) bool {
			calls++
			if seen[name] {
				t.Errorf("Draw offered %q twice; astronomically unlikely unless the generator is broken", name)
			}
			seen[name] = true
			return calls <= taken
		}
		name, err := tmpl.Draw(exists)
		if err != nil {
			t.Fatalf("with %d taken: Draw error %v", taken, err)
		}
		if calls != taken+1 {
			t.Errorf("with %d taken: exists called %d times, want %d", taken, calls, taken+1)
		}
		if len(name) != 9 || !strings.HasPrefix(name, "job") {
			t.Errorf("with %d taken: Draw = %q, want job + 6 chars", taken, name)
		}
	}
}

func TestDrawExhausted(t *testing.T) {
	calls := 0
	name, err := Template{Prefix: "d", Run: 8}.Draw(func(string) bool { calls++; return true })
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EEXIST) {
		t.Errorf("Draw error = %v, want ErrExhausted wrapping EEXIST", err)
	}
	if name != "" {
		t.Errorf("Draw name = %q with an error, want empty", name)
	}
	if calls != MaxDraws {
		t.Errorf("exists called %d times, want exactly %d", calls, MaxDraws)
	}
}

func FuzzParseTemplate(f *testing.F) {
	for _, tc := range templateCases {
		f.Add(tc.input)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tmpl, err := ParseTemplate(input)
		if IsTemplate(input) != !errors.Is(err, ErrNotTemplate) {
			t.Fatalf("IsTemplate(%q) = %v but ParseTemplate error = %v", input, IsTemplate(input), err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotTemplate) && !errors.Is(err, ErrMultipleRuns) {
				t.Fatalf("ParseTemplate(%q): unexpected error %v", input, err)
			}
			return
		}
		if rebuilt := tmpl.Prefix + strings.Repeat("X", tmpl.Run) + tmpl.Suffix; rebuilt != input {
			t.Fatalf("ParseTemplate(%q) = %+v, which rebuilds %q", input, tmpl, rebuilt)
		}
		if tmpl.Run < MinRun {
			t.Fatalf("ParseTemplate(%q) run %d < %d", input, tmpl.Run, MinRun)
		}
		name := tmpl.Name()
		if len(name) != len(input) {
			t.Fatalf("Name() from %q = %q has %d bytes, want %d", input, name, len(name), len(input))
		}
		if IsTemplate(name) {
			t.Fatalf("Name() from %q = %q is a template", input, name)
		}
	})
}
