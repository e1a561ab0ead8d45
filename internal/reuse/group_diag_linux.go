package reuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
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
	sport  uint16
	src    [16]byte // the local address; the first 4 bytes for AF_INET
	ino    uint32
	uid    uint32
	rqueue uint32 // for a listener, its accept-queue length
}

// diagDumpPort lists the TCP sockets of family (AF_INET or AF_INET6) in
// the caller's network namespace whose state is in the states bitmask,
// on local port port only (all of them for port 0, filtered by the
// kernel otherwise), with NETLINK_SOCK_DIAG.
func diagDumpPort(family uint8, states uint32, port int) ([]diagEntry, error) {
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	})
	if err != nil {
		return nil, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	f := os.NewFile(uintptr(fd), "sock_diag")
	defer f.Close()
	var out []diagEntry
	err = sys.Control(f, func(fd int) error {
		if err := sys.Retry(func() error {
			return unix.Sendto(fd, diagRequest(family, states, port), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		}); err != nil {
			return os.NewSyscallError("sendto sock_diag", err)
		}
		out, err = diagRecv(fd)
		return err
	})
	return out, err
}

// diagRequest asks for a dump of family's TCP sockets in states; with a
// port, it carries an INET_DIAG_REQ_BYTECODE attribute that keeps only
// that source port (INET_DIAG_BC_S_EQ, Linux 4.16+), so the cost does not
// grow with the host's other sockets.
func diagRequest(family uint8, states uint32, port int) []byte {
	const hdr, req = unix.SizeofNlMsghdr, 56 // sizeof(struct inet_diag_req_v2)
	const attr, bc = 4, 8                    // struct nlattr; two inet_diag_bc_op
	const inetDiagReqBytecode, bcSEq = 1, 11
	n := hdr + req
	if port != 0 {
		n += attr + bc
	}
	b := make([]byte, n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	b[hdr] = family
	b[hdr+1] = unix.IPPROTO_TCP
	ne.PutUint32(b[hdr+4:], states)
	if port != 0 {
		a := b[hdr+req:]
		ne.PutUint16(a[0:], attr+bc)
		ne.PutUint16(a[2:], inetDiagReqBytecode)
		// {S_EQ, yes: the next op (the end: accept), no: past the end
		// + 4 (reject)}, then {no: the port}.
		op := a[attr:]
		op[0], op[1] = bcSEq, bc
		ne.PutUint16(op[2:], bc+4)
		ne.PutUint16(op[6:], uint16(port))
	}
	return b
}

func diagRecv(fd int) ([]diagEntry, error) {
	var out []diagEntry
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("recvfrom sock_diag", err)
		}
		done, err := diagParse(buf[:n], &out)
		if err != nil || done {
			return out, err
		}
	}
}

// diagParse appends the inet_diag_msg entries of one datagram to out and
// reports whether the dump is complete.
func diagParse(b []byte, out *[]diagEntry) (bool, error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return false, fmt.Errorf("parse sock_diag: bad message length %d", l)
		}
		typ, msg := ne.Uint16(b[4:]), b[unix.SizeofNlMsghdr:l]
		switch typ {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(msg) >= 4 && int32(ne.Uint32(msg)) != 0 {
				return false, os.NewSyscallError("sock_diag", unix.Errno(-int32(ne.Uint32(msg))))
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) >= 72 { // sizeof(struct inet_diag_msg)
				e := diagEntry{
					sport:  binary.BigEndian.Uint16(msg[4:]),
					rqueue: ne.Uint32(msg[56:]),
					uid:    ne.Uint32(msg[64:]),
					ino:    ne.Uint32(msg[68:]),
				}
				copy(e.src[:], msg[8:24])
				*out = append(*out, e)
			}
		}
		b = b[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
	}
	return false, nil
}

// listeningInodes returns the inodes of the listening TCP sockets on port
// in the caller's network namespace, for the family of network.
func listeningInodes(network string, port int) (map[uint64]bool, error) {
	live := map[uint64]bool{}
	for _, fam := range diagFamilies(network) {
		es, err := diagDumpPort(fam, 1<<tcpListen, port)
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
