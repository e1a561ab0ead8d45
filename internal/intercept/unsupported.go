//go:build !linux

package intercept

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/hotswap-dev/hotswap/fdpass"
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

// Handshake is only implemented on Linux.
type Handshake struct{}

// NewHandshake is only implemented on Linux.
func NewHandshake(*exec.Cmd, string) (*Handshake, error) { return nil, errUnsupported }

// Started is only implemented on Linux.
func (*Handshake) Started() {}

// Receive is only implemented on Linux.
func (*Handshake) Receive(context.Context) (*os.File, error) { return nil, errUnsupported }

// Close is only implemented on Linux.
func (*Handshake) Close() {}

// ShimPrepare fails when interception was asked for: it needs Linux.
func ShimPrepare() error {
	if _, ok := os.LookupEnv(fdpass.InterceptFDEnv); ok {
		return errUnsupported
	}
	return nil
}
