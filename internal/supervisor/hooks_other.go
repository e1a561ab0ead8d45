//go:build !linux

package supervisor

import (
	"errors"
	"fmt"
)

// Bind interception needs seccomp user notification (Linux).
func newInterceptHook(*Supervisor) (startHook, error) {
	return nil, fmt.Errorf("intercept binds: %w", errors.ErrUnsupported)
}

// A subreaper needs PR_SET_CHILD_SUBREAPER (Linux).
func newReaper(*Supervisor) (startHook, error) {
	return nil, fmt.Errorf("subreaper: %w", errors.ErrUnsupported)
}
