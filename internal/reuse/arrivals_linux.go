package reuse

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// arrivalStates is every TCP state but LISTEN, as a sock_diag bitmask:
// SYN_RECV (request sockets, which a dump reports in that state) through
// TIME_WAIT, so a connection is seen from its handshake until after it
// closed.
const arrivalStates = (1<<12 - 1) &^ (1<<tcpListen | 1)

// ConnCookies returns the socket cookies of every TCP connection whose
// local port is one of ports, in any state but LISTEN, in the caller's
// network namespace. A cookie absent from an earlier call is a connection
// that arrived since, or one that changed state in a way that gives it a
// new socket (a request socket that completed its handshake, a
// connection that entered TIME_WAIT): each arrival shows at least once,
// unless it came and went entirely between two calls.
//
// The kernel filters the dump by port (inet_diag bytecode, see
// portFilter), so the cost is a walk of the socket table in the kernel and
// the answer holds only these ports' sockets, however many connections the
// machine has.
func ConnCookies(network string, ports []int) (map[uint64]bool, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	out := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, arrivalStates, false, nil, portFilter(want))
		err := diagExchange(req, func(c Conn) {
			// Without the filter (too many ports) every socket comes.
			if c.State != tcpListen && want[int(binary.BigEndian.Uint16(c.id))] {
				out[binary.NativeEndian.Uint64(c.id[40:48])] = true
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
