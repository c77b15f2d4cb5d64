package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// waitStatus builds what wait(2) reports, as the kernel encodes it: the exit code in bits 8-15, or the signal
// number in the low 7 bits.
func exitedWith(code int) syscall.WaitStatus         { return syscall.WaitStatus(code << 8) }
func killedBy(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }

func TestExitStatus(t *testing.T) {
	cases := []struct {
		ws   syscall.WaitStatus
		want int
	}{
		{exitedWith(0), 0},
		{exitedWith(3), 3},
		{exitedWith(255), 255},
		{killedBy(syscall.SIGKILL), 128 + 9},
		{killedBy(syscall.SIGTERM), 128 + 15},
		{killedBy(syscall.SIGSEGV) | 0x80, 128 + 11}, // with a core dump
	}
	for _, tc := range cases {
		if got := exitStatus(tc.ws); got != tc.want {
			t.Errorf("exitStatus(%#x) = %d, want %d", uint32(tc.ws), got, tc.want)
		}
	}
}

// TestExitStatusOfRealProcesses checks the encoding assumed above against the kernel's.
func TestExitStatusOfRealProcesses(t *testing.T) {
	for script, want := range map[string]int{"exit 0": 0, "exit 3": 3, "kill -9 $$": 137, "kill -TERM $$": 143} {
		cmd := exec.Command("sh", "-c", script)
		_ = cmd.Run()
		if got := exitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus)); got != want {
			t.Errorf("sh -c %q: status %d, want %d", script, got, want)
		}
	}
}

func TestStartError(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{&exec.Error{Name: "nope", Err: exec.ErrNotFound}, 127},
		{&fs.PathError{Op: "fork/exec", Path: "./nope", Err: syscall.ENOENT}, 127},
		{&fs.PathError{Op: "fork/exec", Path: "/etc/passwd", Err: syscall.EACCES}, 126},
		{&fs.PathError{Op: "fork/exec", Path: "./script", Err: syscall.ENOEXEC}, 126},
		{&fs.PathError{Op: "fork/exec", Path: "./x", Err: syscall.E2BIG}, 126},
	}
	for _, tc := range cases {
		err := startError("cmd", tc.err)
		var exit *exitError
		if !errors.As(err, &exit) || exit.code != tc.want {
			t.Errorf("startError(%v) = %v, want exit status %d", tc.err, err, tc.want)
			continue
		}
		if msg := exit.err.Error(); !strings.HasPrefix(msg, "cmd: ") || strings.Contains(msg, "\n") {
			t.Errorf("startError(%v) message %q: want one line naming the command", tc.err, msg)
		}
	}
}

func TestScratchEnv(t *testing.T) {
	in := []string{"PATH=/bin", "TMPDIR=/old", "HOME=/root", "TEMP=/old", "TMP=/old", "TMPDIRX=keep", "EMPTY="}
	got := scratchEnv(in, "/mnt/s")
	want := []string{"PATH=/bin", "HOME=/root", "TMPDIRX=keep", "EMPTY=", "TMPDIR=/mnt/s", "TEMP=/mnt/s", "TMP=/mnt/s"}
	if !slices.Equal(got, want) {
		t.Errorf("scratchEnv = %q, want %q", got, want)
	}
}

func TestWriteReport(t *testing.T) {
	r := runReport{templateEntries: 7, bytesWritten: 3 << 20, peakRAM: 2 << 20, spilled: 1 << 20, rollovers: 2,
		peakDisk: 5 << 20, diskWritten: 9 << 20}
	left := []leftEntry{
		{name: "out/", kind: fs.ModeDir},
		{name: "out/data.bin", size: 5000},
		{name: "small", size: 12},
		{name: "link", kind: fs.ModeSymlink},
	}
	var buf bytes.Buffer
	writeReport(&buf, r, left, 50)
	out := buf.String()
	for _, want := range []string{
		"7 from templates",
		"3 MiB (3145728 bytes)",
		"peak RAM", "2 MiB (2097152 bytes)",
		"1 MiB (1048576 bytes) in 2 rollovers",
		"peak disk", "5 MiB (5242880 bytes)",
		"written to disk", "9 MiB (9437184 bytes) in all",
		"2 files of 4.9 KiB (5012 bytes), 1 directory, 1 other",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, e := range left {
		line := lineWith(out, "    "+e.name)
		if line == "" {
			t.Errorf("report does not list %q:\n%s", e.name, out)
		}
		if e.kind.IsRegular() && !strings.Contains(line, fmt.Sprint(e.size)) {
			t.Errorf("line %q does not give the size %d", line, e.size)
		}
	}
}

func TestWriteReportLimit(t *testing.T) {
	var left []leftEntry
	for i := range 57 {
		left = append(left, leftEntry{name: fmt.Sprintf("f%02d", i), size: int64(i)})
	}
	var buf bytes.Buffer
	writeReport(&buf, runReport{}, left, 50)
	out := buf.String()
	if lineWith(out, "    f49") == "" || lineWith(out, "    f50") != "" {
		t.Errorf("want exactly the first 50 entries listed:\n%s", out)
	}
	if !strings.Contains(out, "... and 7 more") {
		t.Errorf("report does not say how many more:\n%s", out)
	}
}

// lineWith is the first line of out that starts with prefix followed by a space.
func lineWith(out, prefix string) string {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, prefix+" ") {
			return line
		}
	}
	return ""
}

func TestPlural(t *testing.T) {
	for n, want := range map[int64]string{0: "0 directories", 1: "1 directory", 2: "2 directories"} {
		if got := plural(n, "directory"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
	if got := plural(3, "file"); got != "3 files" {
		t.Errorf("plural(3, file) = %q", got)
	}
}
