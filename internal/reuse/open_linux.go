package reuse

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// OpenConns counts, for each of pids, the TCP connections (ESTABLISHED or
// CLOSE_WAIT) whose local port is one of ports that the process and its
// descendants hold open: the connections a worker accepted and has not
// closed, at the moment of the look. One sock_diag dump per address family
// of network, filtered on the ports in the kernel, lists the connections'
// inodes; each process tree's /proc/PID/fd names the ones it holds (a
// socket two processes of a tree share counts once). The kernel keeps no
// count of connections accepted from one socket; this is what can be
// read. A pid that has exited counts 0.
func OpenConns(network string, ports []int, pids []int) (map[int]int, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	open := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1<<tcpEstablished|1<<tcpCloseWait, false, nil, portFilter(want))
		err := diagExchange(req, func(c Conn) {
			if c.Inode != 0 && want[int(binary.BigEndian.Uint16(c.id))] {
				open[c.Inode] = true
			}
		})
		if err != nil {
			return nil, err
		}
	}
	out := map[int]int{}
	for _, pid := range pids {
		socks, err := treeSockets(pid)
		if err != nil {
			out[pid] = 0
			continue
		}
		seen := map[uint64]bool{}
		for _, ps := range socks {
			for _, s := range ps.socks {
				if open[s.ino] && !seen[s.ino] {
					seen[s.ino] = true
					out[pid]++
				}
			}
		}
		closePidfds(socks)
	}
	return out, nil
}
