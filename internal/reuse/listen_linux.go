package reuse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Listen creates a socket for network ("tcp", "tcp4", "tcp6", "unix",
// "udp", "udp4", "udp6") bound to address, and for stream networks calls
// listen() with the backlog of opts. The result is a blocking,
// close-on-exec descriptor that Go's poller does not own.
func Listen(network, address string, opts Options) (*os.File, error) {
	f, err := Bind(network, address, opts)
	if err != nil || isDatagram(network) {
		return f, err
	}
	if err := ListenFile(f, opts.Backlog); err != nil {
		f.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: addrOf(f), Err: err}
	}
	return f, nil
}

// ListenFile calls listen() on a bound socket, backlog 0 meaning
// somaxconn, and makes it non-blocking, for the child: a process with
// several acceptors on one blocking listener (nginx's workers, which keep
// an inherited socket's mode) can leave one blocked in accept() after a
// wake-up another won, and it stays blocked until a connection comes that
// no other acceptor takes first. On a member steered away from, or on any
// listener once the load stops, none comes: the worker serves none of the
// connections it had accepted and never handles its stop signal
// (docs/kernel.md, "A blocking listener"). f stays a file Go's poller does
// not own, so os/exec's Fd() leaves the flag alone.
func ListenFile(f *os.File, backlog int) error {
	if backlog <= 0 {
		// listen() caps the backlog at net.core.somaxconn as it is now
		// (listen(2)), without reading /proc/sys for every listen.
		backlog = math.MaxInt32
	}
	return sys.Control(f, func(fd int) error {
		if err := sys.Retry(func() error { return unix.Listen(fd, backlog) }); err != nil {
			return os.NewSyscallError("listen", err)
		}
		return os.NewSyscallError("fcntl O_NONBLOCK", unix.SetNonblock(fd, true))
	})
}

// Bind creates and binds a socket for network and address without listening.
func Bind(network, address string, opts Options) (*os.File, error) {
	fam, typ, sa, v6only, err := resolve(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	fd, err := sys.RetryInt(func() (int, error) { return unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		return nil, &net.OpError{Op: "socket", Net: network, Err: os.NewSyscallError("socket", err)}
	}
	if err := setup(fd, fam, v6only, opts); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if err := sys.Retry(func() error { return unix.Bind(fd, sa) }); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			err = ErrInUse
		} else {
			err = os.NewSyscallError("bind", err)
		}
		return nil, &net.OpError{Op: "bind", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	return os.NewFile(uintptr(fd), network+":"+address), nil
}

func setup(fd, fam int, v6only bool, opts Options) error {
	if fam == unix.AF_UNIX {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if opts.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if fam == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolint(v6only)); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	return nil
}

func boolint(b bool) int {
	if b {
		return 1
	}
	return 0
}

func isDatagram(network string) bool { return strings.HasPrefix(network, "udp") }

// resolve maps network and address to a family, socket type and sockaddr.
// "tcp" and "udp" with a wildcard or empty host give a dual-stack IPv6
// socket (V6ONLY=0), as Go's net package does; an explicit IPv4 address gives
// AF_INET, and tcp6/udp6 are V6ONLY.
func resolve(network, address string) (fam, typ int, sa unix.Sockaddr, v6only bool, err error) {
	if network == "unix" {
		if !strings.HasPrefix(address, "/") {
			return 0, 0, nil, false, fmt.Errorf("unix socket path %q is not absolute", address)
		}
		return unix.AF_UNIX, unix.SOCK_STREAM, &unix.SockaddrUnix{Name: address}, false, nil
	}
	typ = unix.SOCK_STREAM
	switch network {
	case "tcp", "tcp4", "tcp6":
	case "udp", "udp4", "udp6":
		typ = unix.SOCK_DGRAM
	default:
		return 0, 0, nil, false, fmt.Errorf("unknown network %q", network)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return 0, 0, nil, false, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return 0, 0, nil, false, fmt.Errorf("bad port %q", portStr)
	}
	ip, err := hostIP(network, host)
	if err != nil {
		return 0, 0, nil, false, err
	}
	want4 := strings.HasSuffix(network, "4")
	want6 := strings.HasSuffix(network, "6")
	switch {
	case ip.Is4() || (want4 && ip.IsUnspecified()):
		if want6 {
			return 0, 0, nil, false, fmt.Errorf("address %s is not IPv6", host)
		}
		return unix.AF_INET, typ, &unix.SockaddrInet4{Port: int(port), Addr: ip.Unmap().As4()}, false, nil
	case want4:
		return 0, 0, nil, false, fmt.Errorf("address %s is not IPv4", host)
	}
	v6only = want6 || !ip.IsUnspecified()
	return unix.AF_INET6, typ, &unix.SockaddrInet6{Port: int(port), Addr: ip.As16()}, v6only, nil
}

func hostIP(network, host string) (netip.Addr, error) {
	if host == "" {
		if strings.HasSuffix(network, "4") {
			return netip.IPv4Unspecified(), nil
		}
		return netip.IPv6Unspecified(), nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), ipNet(network), host)
	if err != nil {
		return netip.Addr{}, err
	}
	// LookupNetIP("ip", ...) gives an IPv4 address in its IPv4-mapped
	// form, which an IPv6-only socket cannot bind (EINVAL): "localhost"
	// failed so.
	return ips[0].Unmap(), nil
}

func ipNet(network string) string {
	switch {
	case strings.HasSuffix(network, "4"):
		return "ip4"
	case strings.HasSuffix(network, "6"):
		return "ip6"
	}
	return "ip"
}

type stringAddr struct{ net, addr string }

func (a stringAddr) Network() string { return a.net }
func (a stringAddr) String() string  { return a.addr }
