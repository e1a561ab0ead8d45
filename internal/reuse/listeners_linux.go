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
	out := make([]Listener, 0, min(int(lastListeners.Load()), 4*len(ports)))
	for _, fam := range families {
		listenerDumps.Add(1)
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1<<tcpListen, false, nil, portFilter(ports))
		err := diagExchangeMsgs(req, -1, func(msg []byte) {
			// inet_diag_msg: family, state, timer, retrans, then the
			// inet_diag_sockid (sport, dport, src[16], ...), expires,
			// rqueue, wqueue, uid, inode; read in place, since a dump
			// lists every listener of the namespace.
			sport := binary.BigEndian.Uint16(msg[4:])
			if !ports[int(sport)] {
				return // not asked for (no filter, or a kernel that ignored it)
			}
			ip := netip.AddrFrom16([16]byte(msg[8:24]))
			if fam == unix.AF_INET {
				ip = netip.AddrFrom4([4]byte(msg[8:12]))
			}
			ne := binary.NativeEndian
			out = append(out, Listener{Addr: netip.AddrPortFrom(ip, sport), Inode: uint64(ne.Uint32(msg[68:])), UID: ne.Uint32(msg[64:]), Queue: ne.Uint32(msg[56:])})
		})
		if err != nil {
			return nil, err
		}
	}
	lastListeners.Store(int64(len(out)))
	return out, nil
}

// lastListeners is how many sockets the last dump returned: the room the
// next one makes at once (a census lists a few thousand with a thousand
// groups).
var lastListeners atomic.Int64
