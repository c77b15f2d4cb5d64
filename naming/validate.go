package naming

import "strings"

// ValidateName checks one path component as the kernel would hand it to a
// filesystem: ErrInvalidName for "", ".", ".." or a name containing '/' or
// NUL, ErrNameTooLong for more than MaxNameLen bytes. Every other byte,
// including invalid UTF-8, is valid, as on Linux. It does not allocate.
func ValidateName(name string) error {
	switch name {
	case "", ".", "..":
		return ErrInvalidName
	}
	if len(name) > MaxNameLen {
		return ErrNameTooLong
	}
	if strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0 {
		return ErrInvalidName
	}
	return nil
}
