//go:build !linux

package control

import (
	"errors"
	"fmt"
	"net"
)

// peerCred needs SO_PEERCRED: on other systems every peer is refused.
func peerCred(*net.UnixConn) (peer, error) {
	return peer{}, fmt.Errorf("peer credentials: %w", errors.ErrUnsupported)
}
