// Package sys holds the thin syscall wrappers shared by hotswap's leaf
// packages. Every wrapper retries EINTR, so callers never see it.
package sys

import (
	"errors"

	"syscall"
)

// Retry calls fn until it returns something other than EINTR.
func Retry(fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// RetryInt is [Retry] for calls that also return an int.
func RetryInt(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if !errors.Is(err, syscall.EINTR) {
			return n, err
		}
	}
}
