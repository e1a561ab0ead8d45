//go:build !linux

package reuse

import (
	"errors"
	"fmt"
	"os"
)

// ListenUnix is not supported on this platform.
func ListenUnix(path string, o UnixOptions) (*os.File, UnixFile, error) {
	return nil, UnixFile{}, fmt.Errorf("listen unix %s: %w", path, errors.ErrUnsupported)
}
