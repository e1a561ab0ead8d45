//go:build !linux

package healthgate

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
)

// NotifySocketMode is the file mode of a NotifySocket's socket file.
const NotifySocketMode = 0o600

// ListenNotify needs SCM_CREDENTIALS and is not supported on this system.
func ListenNotify(path string) (*NotifySocket, error) {
	return nil, fmt.Errorf("healthgate: listen notify %s: %w", path, errors.ErrUnsupported)
}

// reuseAddrControl returns control unchanged: SO_REUSEADDR for a fixed
// probe source port is set only on Linux.
func reuseAddrControl(control func(network, address string, c syscall.RawConn) error) func(network, address string, c syscall.RawConn) error {
	return control
}

// ownProcessGroup leaves cmd as it is: process groups are Linux-only here.
func ownProcessGroup(cmd *exec.Cmd) {}

// killProcessGroup does nothing on this system.
func killProcessGroup(cmd *exec.Cmd) error { return nil }
