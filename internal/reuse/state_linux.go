package reuse

import (
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Addr returns the local address f is bound to.
func Addr(f *os.File) (net.Addr, error) {
	var sa unix.Sockaddr
	var typ int
	err := sys.Control(f, func(fd int) error {
		var err error
		if sa, err = unix.Getsockname(fd); err != nil {
			return os.NewSyscallError("getsockname", err)
		}
		typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		return os.NewSyscallError("getsockopt SO_TYPE", err)
	})
	if err != nil {
		return nil, err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		if typ == unix.SOCK_DGRAM {
			return &net.UDPAddr{IP: sa.Addr[:], Port: sa.Port}, nil
		}
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}, nil
	case *unix.SockaddrInet6:
		if typ == unix.SOCK_DGRAM {
			return &net.UDPAddr{IP: sa.Addr[:], Port: sa.Port}, nil
		}
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}, nil
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}, nil
	}
	return nil, os.NewSyscallError("getsockname", unix.EAFNOSUPPORT)
}

func addrOf(f *os.File) net.Addr {
	a, err := Addr(f)
	if err != nil {
		return nil
	}
	return a
}

// QueueLen returns the current accept-queue length of a TCP listener and
// its effective backlog, from TCP_INFO (tcpi_unacked and tcpi_sacked on a
// LISTEN socket, docs/kernel.md).
func QueueLen(f *os.File) (queued, backlog uint32, err error) {
	err = sys.Control(f, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return os.NewSyscallError("getsockopt TCP_INFO", err)
		}
		queued, backlog = ti.Unacked, ti.Sacked
		return nil
	})
	return queued, backlog, err
}

// Somaxconn returns net.core.somaxconn of the caller's network namespace,
// the largest backlog listen() grants; read each time, since it may change.
func Somaxconn() int {
	n, err := readSysctl("net/core/somaxconn")
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return n
}

// MigrateReq returns net.ipv4.tcp_migrate_req of the caller's network
// namespace: 1 means the kernel moves queued connections of a closing
// SO_REUSEPORT listener to a sibling (Linux 5.14+).
func MigrateReq() (int, error) { return readSysctl("net/ipv4/tcp_migrate_req") }

func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
