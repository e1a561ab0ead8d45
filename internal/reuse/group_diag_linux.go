package reuse

import (
	"golang.org/x/sys/unix"
)

// TCP states as sock_diag numbers them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpCloseWait   = 8
	tcpListen      = 10
)

// listeningInodes returns the inodes of the listening TCP sockets on port
// in the caller's network namespace, for the family of network.
func listeningInodes(network string, port int) (map[uint64]bool, error) {
	ls, err := Listeners(network, port)
	if err != nil {
		return nil, err
	}
	live := map[uint64]bool{}
	for _, l := range ls {
		live[l.Inode] = true
	}
	return live, nil
}

func diagFamilies(network string) []uint8 {
	switch network {
	case "tcp4":
		return []uint8{unix.AF_INET}
	case "tcp6":
		return []uint8{unix.AF_INET6}
	}
	return []uint8{unix.AF_INET, unix.AF_INET6}
}
