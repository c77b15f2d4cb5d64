package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckUserAllowOther(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf string
		ok         bool
	}{
		{"enabled", "user_allow_other\n", true},
		{"enabled among others", "# comment\nmount_max = 1000\n  user_allow_other  \n", true},
		{"enabled with a trailing comment", "user_allow_other # lets users share\n", true},
		{"commented out (Debian's default)", "#user_allow_other\n", false},
		{"empty", "", false},
		{"with a value", "user_allow_other = 1\n", false},
		{"a longer word", "user_allow_others\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			err := checkUserAllowOther(path)
			if tc.ok {
				if err != nil {
					t.Errorf("refused %q: %v", tc.conf, err)
				}
				return
			}
			var exit *exitError
			if !errors.As(err, &exit) || exit.code != exitUsage {
				t.Fatalf("%q: got %v, want a usage error", tc.conf, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "user_allow_other") || !strings.Contains(msg, path) {
				t.Errorf("message %q does not say what to add where", msg)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "none")
		if err := checkUserAllowOther(path); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("a missing %s: %v", path, err)
		}
	})
}
