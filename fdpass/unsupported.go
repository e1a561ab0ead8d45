//go:build !linux

package fdpass

import (
	"errors"
	"fmt"
)

// ShimArgs returns the argv of the shim process that will exec argv.
func ShimArgs(argv []string) []string { return append([]string{"hotswap-shim"}, argv...) }

// RunShim is not supported on this platform.
func RunShim(before func() error) (int, error) {
	return ExitCannotExec, fmt.Errorf("fdpass: %w", errors.ErrUnsupported)
}

// classify cannot read a descriptor's socket type here.
func classify(int) (sockKind, error) { return kindUnknown, nil }
