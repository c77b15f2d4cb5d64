package fs

import (
	"syscall"
	"testing"
)

func TestBypassesPageCache(t *testing.T) {
	tests := []struct {
		name    string
		flags   uint32
		created bool
		want    bool
	}{
		{"create, read-write (mkstemp, templates)", syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL, true, true},
		{"create, write-only (shell >)", syscall.O_WRONLY | syscall.O_CREAT | syscall.O_TRUNC, true, true},
		{"create, read-only", syscall.O_RDONLY | syscall.O_CREAT, true, false},
		{"O_TMPFILE read-write", syscall.O_RDWR, true, true},
		{"open write-only (append to a log)", syscall.O_WRONLY | syscall.O_APPEND, false, true},
		{"open read-write (a database)", syscall.O_RDWR, false, false},
		{"open read-only", syscall.O_RDONLY, false, false},
	}
	for _, tt := range tests {
		if got := bypassesPageCache(tt.flags, tt.created); got != tt.want {
			t.Errorf("%s: bypassesPageCache = %v, want %v", tt.name, got, tt.want)
		}
	}
}
