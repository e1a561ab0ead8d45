package reuse

import (
	"net"
	"strconv"
)

// InUse reports whether a TCP socket already listens on address (or on the
// wildcard address of its port, or, for a wildcard address, on any address
// of the port) in the caller's network namespace. A new SO_REUSEPORT
// sibling bound there by the same user would silently join that socket's
// group, whose steering the caller does not model: an orphaned generation
// of a hotswap that was killed, for example.
func InUse(network, address string) (bool, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return false, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port == 0 {
		return false, err
	}
	want, err := hostIP(network, host)
	if err != nil {
		return false, err
	}
	ls, err := Listeners(network, port)
	if err != nil {
		return false, err
	}
	for _, l := range ls {
		if got := l.Addr.Addr(); want.IsUnspecified() || got.IsUnspecified() || got.Unmap() == want.Unmap() {
			return true, nil
		}
	}
	return false, nil
}
