package reuse

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// listenerDumps counts the dumps of listening sockets, for tests.
var listenerDumps atomic.Int64

// Listeners returns the listening TCP sockets on port in the caller's
// network namespace, for the families of network: one sock_diag dump per
// family, filtered by port in the kernel (portFilter).
func Listeners(network string, port int) ([]Listener, error) {
	ls, err := dumpListeners(diagFamilies(network), map[int]bool{port: true})
	if err != nil {
		return nil, fmt.Errorf("list listeners on port %d: %w", port, err)
	}
	return ls, nil
}

// dumpListeners returns the listening TCP sockets of families whose port
// is one of ports: one sock_diag dump per family. The kernel walks every
// listening socket of the namespace for each dump, whatever the filter, so
// one dump for many ports costs about what one for a single port does.
// Beyond diagMaxPorts the ports are matched here instead of in the kernel.
func dumpListeners(families []uint8, ports map[int]bool) ([]Listener, error) {
	var out []Listener
	for _, fam := range families {
		listenerDumps.Add(1)
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1<<tcpListen, false, nil, portFilter(ports))
		err := diagExchange(req, func(c Conn) {
			// c.id is the inet_diag_sockid: sport, dport, src[16], ...
			sport := binary.BigEndian.Uint16(c.id)
			if !ports[int(sport)] {
				return // not asked for (no filter, or a kernel that ignored it)
			}
			ip := netip.AddrFrom16([16]byte(c.id[4:20]))
			if fam == unix.AF_INET {
				ip = netip.AddrFrom4([4]byte(c.id[4:8]))
			}
			out = append(out, Listener{Addr: netip.AddrPortFrom(ip, sport), Inode: c.Inode, UID: c.UID, Queue: c.RQueue})
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
