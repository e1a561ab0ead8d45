package reuse

// connStates is every TCP state but LISTEN, as a sock_diag bitmask:
// SYN_RECV (request sockets, which a dump reports in that state) through
// TIME_WAIT, so a connection is seen from its handshake until after it
// closed.
const connStates = (1<<12 - 1) &^ (1<<tcpListen | 1)

// ConnCookies returns the socket cookies of every TCP connection whose
// local port is one of ports, in any state but LISTEN, in the caller's
// network namespace. A cookie absent from an earlier call is a connection
// that arrived since (or, for a connection shorter than the interval
// between two calls, may have come and gone unseen).
func ConnCookies(network string, ports []int) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		es, err := diagDump(fam, connStates)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			for _, p := range ports {
				if int(e.sport) == p && e.state != tcpListen {
					out[e.cookie] = true
				}
			}
		}
	}
	return out, nil
}
