package reuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// arrivalStates is every TCP state but LISTEN, as a sock_diag bitmask:
// SYN_RECV (request sockets, which a dump reports in that state) through
// TIME_WAIT, so a connection is seen from its handshake until after it
// closed.
const arrivalStates = (1<<12 - 1) &^ (1<<tcpListen | 1)

// inet_diag bytecode (include/uapi/linux/inet_diag.h).
const (
	arrivalBytecodeAttr = 1  // INET_DIAG_REQ_BYTECODE
	arrivalOpJmp        = 1  // INET_DIAG_BC_JMP
	arrivalOpSportEq    = 11 // INET_DIAG_BC_S_EQ
)

// ConnCookies returns the socket cookies of every TCP connection whose
// local port is one of ports, in any state but LISTEN, in the caller's
// network namespace. A cookie absent from an earlier call is a connection
// that arrived since, or one that changed state in a way that gives it a
// new socket (a request socket that completed its handshake, a
// connection that entered TIME_WAIT): each arrival shows at least once,
// unless it came and went entirely between two calls.
//
// The kernel filters the dump by port (inet_diag bytecode), so the cost
// is a walk of the socket table in the kernel and the answer holds only
// these ports' sockets, however many connections the machine has.
func ConnCookies(network string, ports []int) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		if err := cookieDump(fam, ports, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sportFilter is inet_diag bytecode that accepts a socket whose local port
// is one of ports. Per port, 12 bytes: S_EQ with the port in the next
// word's no; on a match (yes, 8) a JMP whose no lands exactly at the end
// (accept), else on to the next port; the last miss jumps 4 past the end,
// which rejects. An op's yes is one byte and its no two, so only a JMP's
// no can reach the end of a long program.
func sportFilter(ports []int) []byte {
	const block = 12
	ne := binary.NativeEndian
	b := make([]byte, block*len(ports))
	for i, p := range ports {
		op := b[i*block : (i+1)*block]
		rest := len(b) - i*block
		miss := block
		if rest == block {
			miss = block + 4
		}
		op[0], op[1] = arrivalOpSportEq, 8
		ne.PutUint16(op[2:], uint16(miss))
		ne.PutUint16(op[6:], uint16(p))
		op[8], op[9] = arrivalOpJmp, 4
		ne.PutUint16(op[10:], uint16(rest-8))
	}
	return b
}

// cookieDump adds to out the cookies of family's TCP connections on ports.
func cookieDump(family uint8, ports []int, out map[uint64]bool) error {
	if len(ports) == 0 || len(ports) > 512 {
		return fmt.Errorf("connections on %d ports: want 1 to 512", len(ports))
	}
	const hdr, reqLen = unix.SizeofNlMsghdr, 56 // sizeof(struct inet_diag_req_v2)
	bc := sportFilter(ports)
	req := make([]byte, hdr+reqLen+4+len(bc))
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[hdr], req[hdr+1] = family, unix.IPPROTO_TCP
	ne.PutUint32(req[hdr+4:], arrivalStates)
	ne.PutUint64(req[hdr+8+40:], ^uint64(0)) // no cookie: INET_DIAG_NOCOOKIE
	attr := req[hdr+reqLen:]
	ne.PutUint16(attr[0:], uint16(4+len(bc)))
	ne.PutUint16(attr[2:], arrivalBytecodeAttr)
	copy(attr[4:], bc)

	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	})
	if err != nil {
		return os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	defer unix.Close(fd)
	if err := sys.Retry(func() error { return unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) }); err != nil {
		return os.NewSyscallError("sendto sock_diag", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom sock_diag", err)
		}
		for b := buf[:n]; len(b) >= hdr; {
			l := int(ne.Uint32(b))
			if l < hdr || l > len(b) {
				return fmt.Errorf("parse sock_diag: bad message length %d", l)
			}
			msg := b[hdr:l]
			switch ne.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 && int32(ne.Uint32(msg)) != 0 {
					return os.NewSyscallError("sock_diag", unix.Errno(-int32(ne.Uint32(msg))))
				}
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(msg) >= 72 && msg[1] != tcpListen { // sizeof(struct inet_diag_msg)
					out[uint64(ne.Uint32(msg[44:]))|uint64(ne.Uint32(msg[48:]))<<32] = true
				}
			}
			b = b[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
		}
	}
}
