//go:build linux && !amd64 && !arm64

package intercept

import (
	"errors"
	"fmt"
	"runtime"
)

// auditArch is unused: the filter is only built on amd64 and arm64, where
// bind, listen and shutdown are plain system calls rather than socketcall
// multiplexes, and seccomp_data.args are little-endian.
const auditArch = 0

var errArch = fmt.Errorf("intercept: seccomp bind interception is not implemented for %s: %w", runtime.GOARCH, errors.ErrUnsupported)
