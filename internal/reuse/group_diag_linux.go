package reuse

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// TCP states as sock_diag numbers them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpCloseWait   = 8
	tcpListen      = 10
)

// diagEntry is the part of an inet_diag_msg the package uses.
type diagEntry struct {
	sport uint16
	src   [16]byte // the local address; the first 4 bytes for AF_INET
	ino   uint32
}

// diagDump lists the TCP sockets of family (AF_INET or AF_INET6) in the
// caller's network namespace whose state is in the states bitmask, with
// one NETLINK_SOCK_DIAG dump (the exchange Snapshot uses).
func diagDump(family uint8, states uint32) ([]diagEntry, error) {
	var out []diagEntry
	req := diagRequestV2(family, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, states, false, nil, nil)
	err := diagExchange(req, func(c Conn) {
		// c.id is the inet_diag_sockid: sport, dport, src[16], ...
		e := diagEntry{sport: binary.BigEndian.Uint16(c.id), ino: uint32(c.Inode)}
		copy(e.src[:], c.id[4:20])
		out = append(out, e)
	})
	return out, err
}

// listeningInodes returns the inodes of the listening TCP sockets on port
// in the caller's network namespace, for the family of network.
func listeningInodes(network string, port int) (map[uint64]bool, error) {
	live := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		es, err := diagDump(fam, 1<<tcpListen)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if int(e.sport) == port {
				live[uint64(e.ino)] = true
			}
		}
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
