//go:build !linux

package intercept

import (
	"context"
	"errors"
	"fmt"
	"os"
)

var errUnsupported = fmt.Errorf("intercept: %w", errors.ErrUnsupported)

// Supported reports that bind interception needs Linux.
func Supported() error { return errUnsupported }

// InstallAndSend is only implemented on Linux.
func InstallAndSend(sock int) error { return errUnsupported }

// Receive is only implemented on Linux.
func Receive(ctx context.Context, sock *os.File) (*os.File, error) { return nil, errUnsupported }

// Serve is only implemented on Linux.
func Serve(ctx context.Context, notify *os.File, pid int, t Table) (Stats, error) {
	return Stats{}, errUnsupported
}
