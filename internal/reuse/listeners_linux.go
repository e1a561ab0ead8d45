package reuse

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Listeners returns the listening TCP sockets on port in the caller's
// network namespace, for the families of network: one sock_diag dump per
// family, filtered by port in the kernel.
func Listeners(network string, port int) ([]Listener, error) {
	var out []Listener
	for _, fam := range diagFamilies(network) {
		es, err := diagDumpPort(fam, 1<<tcpListen, port)
		if err != nil {
			return nil, fmt.Errorf("list listeners on port %d: %w", port, err)
		}
		for _, e := range es {
			if int(e.sport) != port {
				continue // a kernel that ignored the filter
			}
			ip := netip.AddrFrom16(e.src)
			if fam == unix.AF_INET {
				ip = netip.AddrFrom4([4]byte(e.src[:4]))
			}
			out = append(out, Listener{Addr: netip.AddrPortFrom(ip, e.sport), Inode: uint64(e.ino), UID: e.uid, Queue: e.rqueue})
		}
	}
	return out, nil
}
