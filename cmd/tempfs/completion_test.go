package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// complete runs cobra's hidden completion request, as the shell scripts do, and returns the candidates.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := execute(context.Background(), append([]string{"__complete"}, args...), &out, &errOut); code != 0 {
		t.Fatalf("__complete %q: exit %d, %s", args, code, errOut.String())
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, ":") {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestCompletionValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mount", "--owner", ""}, "none process group session cgroup"},
		{[]string{"run", "--owner", "s"}, "session"},
		{[]string{"mount", "-o", "no"}, "nonempty noatime nodev nodiratime noexec nolazytime norelatime nostrictatime nosuid nosymfollow"},
		{[]string{"mount", "-o", "allow_other,default"}, "allow_other,default_permissions"},
		{[]string{"mount", "-o", "allow_other,stri"}, "allow_other,strictatime"},
		{[]string{"mount", "-o", "ro,fs"}, "ro,fsname="},
		{[]string{"run", "--options", "noa"}, "noatime"},
	} {
		if got := strings.Join(complete(t, tc.args...), " "); got != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCompletionUnknownShell(t *testing.T) {
	var out, errOut bytes.Buffer
	code := execute(context.Background(), []string{"completion", "tcsh"}, &out, &errOut)
	if code != exitUsage || out.Len() != 0 || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), "bash, zsh, fish or powershell") {
		t.Errorf("completion tcsh: exit %d, stdout %q, stderr %q; want 2 and one line naming the shells", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := execute(context.Background(), []string{"completion", "bash"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "__start_tempfs") {
		t.Errorf("completion bash: exit %d, stderr %q", code, errOut.String())
	}
}
