//go:build !linux

package sys

import (
	"errors"
	"fmt"
)

// AllowedCPUs is not supported off Linux.
func AllowedCPUs() ([]int, error) {
	return nil, fmt.Errorf("allowed CPUs: %w", errors.ErrUnsupported)
}

// OnCPU is not supported off Linux.
func OnCPU(cpu int, fn func() error) error {
	return fmt.Errorf("pin to CPU %d: %w", cpu, errors.ErrUnsupported)
}
