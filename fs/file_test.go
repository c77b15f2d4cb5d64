package fs

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBypassesPageCache(t *testing.T) {
	tests := []struct {
		name  string
		flags uint32
		want  bool
	}{
		{"create, read-write (mkstemp, templates, a database)", syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL, false},
		{"create, write-only (shell >, tar x)", syscall.O_WRONLY | syscall.O_CREAT | syscall.O_TRUNC, true},
		{"create, read-only", syscall.O_RDONLY | syscall.O_CREAT, false},
		{"O_TMPFILE read-write", syscall.O_RDWR | unix.O_TMPFILE, false},
		{"open write-only (append to a log)", syscall.O_WRONLY | syscall.O_APPEND, true},
		{"open read-write (a database)", syscall.O_RDWR, false},
		{"open read-only", syscall.O_RDONLY, false},
	}
	for _, tt := range tests {
		if got := bypassesPageCache(tt.flags); got != tt.want {
			t.Errorf("%s: bypassesPageCache = %v, want %v", tt.name, got, tt.want)
		}
	}
}
