//go:build !(linux && amd64)

package inject

import "errors"

// Syscall is not supported on this platform.
func Syscall(pid int, nr uintptr, args ...uintptr) (uintptr, error) {
	return 0, errors.ErrUnsupported
}
