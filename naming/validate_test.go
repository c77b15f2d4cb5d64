package naming

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

var validateCases = []struct {
	name    string
	input   string
	wantErr error
}{
	{name: "plain", input: "file.txt"},
	{name: "one byte", input: "a"},
	{name: "dot file", input: ".bashrc"},
	{name: "three dots", input: "..."},
	{name: "dot dot prefix", input: "..a"},
	{name: "template", input: "jobXXXXXX"},
	{name: "non-UTF-8", input: "\xff\xfe\x80"},
	{name: "control characters", input: "a\tb\nc\x01"},
	{name: "backslash", input: `a\b`},
	{name: "255 bytes", input: strings.Repeat("n", 255)},
	{name: "255 bytes of multibyte UTF-8", input: strings.Repeat("é", 127) + "x"},
	{name: "empty", input: "", wantErr: ErrInvalidName},
	{name: "dot", input: ".", wantErr: ErrInvalidName},
	{name: "dot dot", input: "..", wantErr: ErrInvalidName},
	{name: "slash", input: "a/b", wantErr: ErrInvalidName},
	{name: "only slash", input: "/", wantErr: ErrInvalidName},
	{name: "trailing slash", input: "dir/", wantErr: ErrInvalidName},
	{name: "NUL", input: "a\x00b", wantErr: ErrInvalidName},
	{name: "256 bytes", input: strings.Repeat("n", 256), wantErr: ErrNameTooLong},
	{name: "256 bytes with slash", input: strings.Repeat("/", 256), wantErr: ErrNameTooLong},
}

func TestValidateName(t *testing.T) {
	for _, tc := range validateCases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.input)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("ValidateName(%q) = %v, want %v", tc.input, err, tc.wantErr)
			}
		})
	}
}

func TestValidateNameErrno(t *testing.T) {
	if err := ValidateName("a/b"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("invalid name error %v does not wrap EINVAL", err)
	}
	if err := ValidateName(strings.Repeat("n", 300)); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("long name error %v does not wrap ENAMETOOLONG", err)
	}
}

func FuzzValidateName(f *testing.F) {
	for _, tc := range validateCases {
		f.Add(tc.input)
	}
	f.Fuzz(func(t *testing.T, input string) {
		err := ValidateName(input)
		tooLong := len(input) > MaxNameLen
		invalid := input == "" || input == "." || input == ".." || strings.ContainsAny(input, "/\x00")
		switch {
		case err == nil && (tooLong || invalid):
			t.Fatalf("ValidateName(%q) accepted a bad name", input)
		case err != nil && !tooLong && !invalid:
			t.Fatalf("ValidateName(%q) = %v for a good name", input, err)
		case errors.Is(err, ErrNameTooLong) && !tooLong:
			t.Fatalf("ValidateName(%q) = %v, but it has %d bytes", input, err, len(input))
		case errors.Is(err, ErrInvalidName) && !invalid:
			t.Fatalf("ValidateName(%q) = %v, but it has no bad byte", input, err)
		case err != nil && !errors.Is(err, ErrNameTooLong) && !errors.Is(err, ErrInvalidName):
			t.Fatalf("ValidateName(%q): unexpected error %v", input, err)
		}
	})
}
