//go:build !linux

package sys

import (
	"errors"
	"fmt"
)

// Dir needs O_PATH (Linux).
type Dir struct{ Path string }

// OpenDir is not supported on this platform.
func OpenDir(path string) (*Dir, error) {
	return nil, fmt.Errorf("directory %s: %w", path, errors.ErrUnsupported)
}

// OpenTrustedDir is not supported on this platform.
func OpenTrustedDir(path string) (*Dir, error) { return OpenDir(path) }

// Fd is not supported on this platform.
func (d *Dir) Fd() int { return -1 }

// UID is not supported on this platform.
func (d *Dir) UID() int { return -1 }

// Unsafe is not supported on this platform.
func (d *Dir) Unsafe() error { return errors.ErrUnsupported }

// OtherOwner is not supported on this platform.
func (d *Dir) OtherOwner() error { return errors.ErrUnsupported }

// OthersWrite is not supported on this platform.
func (d *Dir) OthersWrite() error { return errors.ErrUnsupported }

// Close does nothing on this platform.
func (d *Dir) Close() error { return nil }
