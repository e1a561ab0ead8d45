package reuse

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// TCP states as sock_diag numbers them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpCloseWait   = 8
	tcpListen      = 10
)

func diagFamilies(network string) []uint8 {
	switch network {
	case "tcp4":
		return []uint8{unix.AF_INET}
	case "tcp6":
		return []uint8{unix.AF_INET6}
	}
	return []uint8{unix.AF_INET, unix.AF_INET6}
}

// censusDump returns the listening sockets on ports of the families of
// networks, one dump per family.
func censusDump(networks map[string]bool, ports map[int]bool) ([]Listener, error) {
	var fams []uint8
	for n := range networks {
		for _, f := range diagFamilies(n) {
			if !slices.Contains(fams, f) {
				fams = append(fams, f)
			}
		}
	}
	ls, err := dumpListeners(fams, ports)
	if err != nil {
		return nil, fmt.Errorf("list listeners on %d ports: %w", len(ports), err)
	}
	return ls, nil
}
