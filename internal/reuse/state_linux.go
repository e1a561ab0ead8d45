package reuse

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

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
	ti := tcpInfos.Get().(*unix.TCPInfo)
	defer tcpInfos.Put(ti)
	err = sys.Control(f, func(fd int) error {
		// unix.GetsockoptTCPInfo allocates its result: the drain asks
		// every member of every group at each look.
		l := uint32(unix.SizeofTCPInfo)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
			uintptr(unsafe.Pointer(ti)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return os.NewSyscallError("getsockopt TCP_INFO", e)
		}
		queued, backlog = ti.Unacked, ti.Sacked
		return nil
	})
	return queued, backlog, err
}

var tcpInfos = sync.Pool{New: func() any { return new(unix.TCPInfo) }}

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
