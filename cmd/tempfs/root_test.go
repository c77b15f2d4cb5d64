package main

import (
	"bytes"
	"runtime/debug"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		version  string
		settings []debug.BuildSetting
		want     string
	}{
		{"v1.2.0", nil, "v1.2.0 (no VCS revision recorded)"},
		{"(devel)", settings("vcs.revision", "ce3b824c17f968b03ab1000a0fdd8ad688e9be44", "vcs.time", "2026-11-28T07:31:43Z", "vcs.modified", "false"),
			"(devel) ce3b824c17f9 (2026-11-28T07:31:43Z)"},
		{"", settings("vcs.revision", "ce3b824c17f968b03ab1000a0fdd8ad688e9be44", "vcs.modified", "true"), "(devel) ce3b824c17f9+dirty"},
	} {
		info := &debug.BuildInfo{Main: debug.Module{Version: tc.version}, Settings: tc.settings}
		if got := formatVersion(info); got != tc.want {
			t.Errorf("formatVersion(%q, %v) = %q, want %q", tc.version, tc.settings, got, tc.want)
		}
	}
}

// TestCommandLineContracts: the small contracts of the root command: the version line, one clear line and exit
// status 2 for a bad help topic, stray arguments or an empty mountpoint, and 125 for tempfs run's own errors.
func TestCommandLineContracts(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{[]string{"--version"}, 0, "tempfs " + versionString() + "\n", ""},
		{[]string{"version"}, 0, "tempfs " + versionString() + "\n", ""},
		{[]string{"help", "bogus"}, 2, "", "tempfs help: unknown help topic \"bogus\": the commands are listed by 'tempfs --help'\n"},
		{[]string{"gettempdir", "extra"}, 2, "", "tempfs gettempdir: takes no arguments, got [\"extra\"] (see 'tempfs gettempdir --help')\n"},
		{[]string{"run"}, 125, "", "tempfs run: no command to run: tempfs run [flags] -- CMD [ARG...]\n"},
		{[]string{"run", "--bogus", "--", "true"}, 125, "", "tempfs run: unknown flag: --bogus (see 'tempfs run --help')\n"},
		{[]string{"unmount", ""}, 2, "", "tempfs unmount: the mountpoint is an empty string (an unset variable?)\n"},
		{[]string{"mount", ""}, 2, "", "tempfs mount: the mountpoint is an empty string (an unset variable?)\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := execute(t.Context(), tc.args, &stdout, &stderr)
		if code != tc.wantCode || stdout.String() != tc.wantStdout || stderr.String() != tc.wantStderr {
			t.Errorf("tempfs %q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, stdout.String(), stderr.String(),
				tc.wantCode, tc.wantStdout, tc.wantStderr)
		}
	}
}
