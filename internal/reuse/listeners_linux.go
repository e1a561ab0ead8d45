package reuse

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Listeners returns the listening TCP sockets on port in the caller's
// network namespace, for the families of network: one sock_diag dump per
// family, filtered by port in the kernel (portFilter), which walks only
// the listening hash.
func Listeners(network string, port int) ([]Listener, error) {
	var out []Listener
	for _, fam := range diagFamilies(network) {
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1<<tcpListen, false, nil, portFilter(map[int]bool{port: true}))
		err := diagExchange(req, func(c Conn) {
			// c.id is the inet_diag_sockid: sport, dport, src[16], ...
			sport := binary.BigEndian.Uint16(c.id)
			if int(sport) != port {
				return // a kernel that ignored the filter
			}
			ip := netip.AddrFrom16([16]byte(c.id[4:20]))
			if fam == unix.AF_INET {
				ip = netip.AddrFrom4([4]byte(c.id[4:8]))
			}
			out = append(out, Listener{Addr: netip.AddrPortFrom(ip, sport), Inode: c.Inode, UID: c.UID, Queue: c.RQueue})
		})
		if err != nil {
			return nil, fmt.Errorf("list listeners on port %d: %w", port, err)
		}
	}
	return out, nil
}
