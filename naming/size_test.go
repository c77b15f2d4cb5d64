package naming

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

var parseSizeCases = []struct {
	input   string
	want    int64
	wantErr bool
}{
	{input: "0", want: 0},
	{input: "4096", want: 4096},
	{input: "007", want: 7},
	{input: "4096B", want: 4096},
	{input: "0K", want: 0},
	{input: "4K", want: 4096},
	{input: "4k", want: 4096},
	{input: "64KiB", want: 64 << 10},
	{input: "64kib", want: 64 << 10},
	{input: "64Kib", want: 64 << 10},
	{input: "1M", want: 1 << 20},
	{input: "1m", want: 1 << 20},
	{input: "1MiB", want: 1 << 20},
	{input: "2G", want: 2 << 30},
	{input: "2GiB", want: 2 << 30},
	{input: "1T", want: 1 << 40},
	{input: "1TiB", want: 1 << 40},
	{input: "1tib", want: 1 << 40},
	{input: "64Ki", want: 64 << 10},
	{input: "4Mi", want: 4 << 20},
	{input: "2Gi", want: 2 << 30},
	{input: "1Ti", want: 1 << 40},
	{input: "9223372036854775807", want: math.MaxInt64},
	{input: "8388607T", want: 8388607 << 40},
	{input: "", wantErr: true},
	{input: " 4096", wantErr: true},
	{input: "4096 ", wantErr: true},
	{input: "4 K", wantErr: true},
	{input: "-1", wantErr: true},
	{input: "+1", wantErr: true},
	{input: "1.5M", wantErr: true},
	{input: "12Q", wantErr: true},
	{input: "K", wantErr: true},
	{input: "KiB", wantErr: true},
	{input: "4KB", want: 4000},
	{input: "1kB", want: 1000},
	{input: "1MB", want: 1000000},
	{input: "1mB", want: 1000000},
	{input: "2GB", want: 2000000000},
	{input: "1TB", want: 1000000000000},
	{input: "1Ki", want: 1024},
	{input: "1Gi", want: 1 << 30},
	{input: "1gi", want: 1 << 30},
	{input: "4Kb", want: 4000},
	{input: "2gb", want: 2000000000},
	{input: "4mb", want: 4000000},
	{input: "4Mb", want: 4000000},
	{input: "1kb", want: 1000},
	{input: "1tb", want: 1000000000000},
	{input: "4Mib", want: 4 << 20},
	{input: "4MIB", want: 4 << 20},
	{input: "2gib", want: 2 << 30},
	{input: "2GIB", want: 2 << 30},
	{input: "1g", want: 1 << 30},
	{input: "1GI", want: 1 << 30},
	{input: "4096b", want: 4096},
	{input: "4KiBi", wantErr: true},
	{input: "4I", wantErr: true},
	{input: "9223372036854775807KB", wantErr: true},
	{input: "4iB", wantErr: true},
	{input: "4bb", wantErr: true},
	{input: "4kbi", wantErr: true},
	{input: "4gibb", wantErr: true},
	{input: "4KiBB", wantErr: true},
	{input: "4Mii", wantErr: true},
	{input: "4E", wantErr: true},
	{input: "0x10", wantErr: true},
	{input: "9223372036854775808", wantErr: true},
	{input: "99999999999999999999999", wantErr: true},
	{input: "8388608T", wantErr: true},
	{input: "9007199254740992K", wantErr: true},
}

func TestParseSize(t *testing.T) {
	for _, tc := range parseSizeCases {
		got, err := ParseSize(tc.input)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want an error", tc.input, got)
				continue
			}
			msg := err.Error()
			if !strings.Contains(msg, `"`+tc.input+`"`) || !strings.Contains(msg, "K, M, G or T") {
				t.Errorf("ParseSize(%q) error %q does not name the input and the accepted forms", tc.input, msg)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.input, got, err, tc.want)
		}
	}
}

func TestParseSizeErrorMessage(t *testing.T) {
	_, err := ParseSize("12Q")
	want := `invalid size "12Q": use a number of bytes (4096 or 4096B), binary units K, M, G or T as dd reads them, also written KiB or Ki (1K = 1024), or decimal units KB, MB, GB or TB (1KB = 1000), in any case, e.g. 64KiB, 1m or 10gb`
	if err == nil || err.Error() != want {
		t.Errorf("ParseSize(\"12Q\") error = %v, want %s", err, want)
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		input int64
		want  string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{512, "512 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{64 << 10, "64 KiB"},
		{(1 << 20) - 1, "1 MiB"},
		{(1 << 20) - 60, "1023.9 KiB"},
		{3 << 19, "1.5 MiB"},
		{1<<20 + 1<<20/20, "1 MiB"},   // 1.049999 rounds down
		{1<<20 + 1<<20/10, "1.1 MiB"}, // 1.099999 rounds up
		{2 << 30, "2 GiB"},
		{1 << 40, "1 TiB"},
		{1 << 50, "1 PiB"},
		{1 << 60, "1 EiB"},
		{math.MaxInt64, "8 EiB"},
		{-1536, "-1.5 KiB"},
		{math.MinInt64, "-8 EiB"},
	}
	for _, tc := range tests {
		if got := FormatSize(tc.input); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.input, got, tc.want)
		}
	}
}

// TestSizeRoundTrip checks that FormatSize of a whole number of units, with
// the space removed, is a size ParseSize reads back to the same value.
func TestSizeRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 512, 1023, 1024, 64 << 10, 1 << 20, 1000 << 20, 2 << 30, 5 << 40, 1023 << 40} {
		formatted := FormatSize(n)
		got, err := ParseSize(strings.ReplaceAll(formatted, " ", ""))
		if err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, formatted, got, err)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, tc := range parseSizeCases {
		f.Add(tc.input)
	}
	f.Fuzz(func(t *testing.T, input string) {
		n, err := ParseSize(input)
		if err != nil {
			if !strings.Contains(err.Error(), "K, M, G or T") {
				t.Fatalf("ParseSize(%q) error %q does not say what is accepted", input, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", input, n)
		}
		if FormatSize(n) == "" {
			t.Fatalf("FormatSize(%d) is empty", n)
		}
	})
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		input   string
		want    time.Duration
		wantErr bool
	}{
		{input: "0", want: 0},
		{input: "90m", want: 90 * time.Minute},
		{input: "24h", want: 24 * time.Hour},
		{input: "1d", want: 24 * time.Hour},
		{input: "10d", want: 240 * time.Hour},
		{input: "1d12h", want: 36 * time.Hour},
		{input: "1d30m15s", want: 24*time.Hour + 30*time.Minute + 15*time.Second},
		{input: "0d", want: 0},
		{input: "", wantErr: true},
		{input: "d", wantErr: true},
		{input: "1", wantErr: true},
		{input: "-1h", wantErr: true},
		{input: "-1d", wantErr: true},
		{input: "1d-1h", wantErr: true},
		{input: "1d+1h", wantErr: true},
		{input: "1.5d", wantErr: true},
		{input: "1dd", wantErr: true},
		{input: "1w", wantErr: true},
		{input: "999999999d", wantErr: true},
	}
	for _, tc := range cases {
		got, err := ParseDuration(tc.input)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseDuration(%q) = %v, want an error", tc.input, got)
			} else if !strings.Contains(err.Error(), strconv.Quote(tc.input)) {
				t.Errorf("ParseDuration(%q) error %q does not name the input", tc.input, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.input, got, err, tc.want)
		}
	}
}
