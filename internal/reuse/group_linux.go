package reuse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// bindSibling binds a non-blocking SO_REUSEPORT socket (TCP or UDP) and
// returns it with its inode and bound port.
func bindSibling(network, address string) (f *os.File, ino uint64, port int, retErr error) {
	f, err := Bind(network, address, Options{ReusePort: true})
	if err != nil {
		return nil, 0, 0, err
	}
	defer func() {
		if retErr != nil {
			f.Close()
		}
	}()
	var st unix.Stat_t
	err = sys.Control(f, func(fd int) error {
		// Non-blocking, for the child, as every listener is ([ListenFile]);
		// a UDP member too, which is never listen()ed. A new socket has no
		// other file status flag, so no F_GETFL first.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
			return os.NewSyscallError("fcntl O_NONBLOCK", err)
		}
		return os.NewSyscallError("fstat", sys.Retry(func() error { return unix.Fstat(fd, &st) }))
	})
	if err != nil {
		return nil, 0, 0, err
	}
	if _, p, err := net.SplitHostPort(address); err == nil && p != "0" {
		if port, err = strconv.Atoi(p); err == nil {
			return f, st.Ino, port, nil // the group's port, known
		}
	}
	a, err := Addr(f)
	if err != nil {
		return nil, 0, 0, err
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		port = a.Port
	case *net.UDPAddr:
		port = a.Port
	}
	return f, st.Ino, port, nil
}

// attachProgram attaches raw as the group's SO_ATTACH_REUSEPORT_CBPF
// program through f, which must be listening (docs/kernel.md, "Steering indices").
func attachProgram(f *os.File, raw []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return sys.Control(f, func(fd int) error {
		return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", sys.Retry(func() error {
			return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog)
		}))
	})
}

// probeSource is the address probes come from: the group's own address, or
// the loopback address of its family when the group binds the wildcard.
func probeSource(network, address string) (netip.Addr, error) {
	fam, _, sa, _, err := resolve(network, address)
	if err != nil {
		return netip.Addr{}, err
	}
	if fam == unix.AF_INET {
		ip := netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr)
		if ip.IsUnspecified() {
			ip = netip.MustParseAddr("127.0.0.1")
		}
		return ip, nil
	}
	ip := netip.AddrFrom16(sa.(*unix.SockaddrInet6).Addr)
	if ip.IsUnspecified() {
		ip = netip.IPv6Loopback()
	}
	return ip, nil
}

// reserveProbe binds, and keeps, a socket on an ephemeral port of the probe
// source address. A port held by bind() is never chosen by another
// socket's implicit bind in connect(), so only probes use it.
func reserveProbe(network, address string) (*os.File, netip.AddrPort, error) {
	src, err := probeSource(network, address)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	nw := "tcp4"
	if src.Is6() {
		nw = "tcp6"
	}
	f, err := Bind(nw, netip.AddrPortFrom(src, 0).String(), Options{})
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	a, err := Addr(f)
	if err != nil {
		f.Close()
		return nil, netip.AddrPort{}, err
	}
	return f, netip.AddrPortFrom(src, uint16(a.(*net.TCPAddr).Port)), nil
}

// DialProbe connects to the group's port from [Group.ProbeAddr], so that
// [Policy.Probe] receives the connection. The connection has SO_LINGER 0:
// closing it sends RST and leaves no TIME_WAIT on the probe's 4-tuple, so
// the next probe can reuse the port at once. Probes must not overlap.
func (g *Group) DialProbe(ctx context.Context) (*net.TCPConn, error) {
	g.mu.Lock()
	port := g.port
	g.mu.Unlock()
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(g.probeAP),
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = os.NewSyscallError("setsockopt SO_REUSEADDR", unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1))
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(g.probeAP.Addr(), uint16(port)).String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if err := tc.SetLinger(0); err != nil {
		tc.Close()
		return nil, err
	}
	return tc, nil
}

// listenSibling calls listen() with backlog somaxconn.
func listenSibling(f *os.File) error { return ListenFile(f, 0) }

func acceptQueue(f *os.File) (uint32, error) {
	q, _, err := QueueLen(f)
	return q, err
}

// pollEmpty polls the listeners fds once, without waiting: none is
// readable when every accept queue is empty. POLLHUP alone is a socket
// that no longer listens (shut down), whose queue is gone.
func pollEmpty(fds []int) (bool, error) {
	pfds := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	var n int
	if err := sys.Retry(func() (err error) { n, err = unix.Poll(pfds, 0); return err }); err != nil {
		return false, os.NewSyscallError("poll", err)
	}
	if n == 0 {
		return true, nil
	}
	for _, p := range pfds {
		switch {
		case p.Revents&unix.POLLNVAL != 0:
			return false, os.NewSyscallError("poll", unix.EBADF)
		case p.Revents&unix.POLLIN != 0:
			return false, nil
		}
	}
	return true, nil
}

// reclaim reports whether f, a member's socket that no process but the
// supervisor holds any more, still listens with an empty accept queue. If
// so it gives the socket back the supervisor's O_NONBLOCK and backlog
// ([ListenFile]): listen() on a listening socket sets the backlog and
// nothing else, so the socket keeps its place in the group (docs/kernel.md,
// "Recycling a member").
func reclaim(f *os.File) (bool, error) {
	listening, queued, err := listenState(f)
	if err != nil || !listening || queued {
		return false, err
	}
	return true, ListenFile(f, 0)
}

// listenState polls f once, without waiting: a listening TCP socket is
// readable (POLLIN) exactly when its accept queue holds a connection, and
// reports nothing else; one that was shut down is in state CLOSE, which
// poll reports as POLLHUP.
func listenState(f *os.File) (listening, queued bool, err error) {
	err = sys.Control(f, func(fd int) error {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if err := sys.Retry(func() (err error) { _, err = unix.Poll(pfd, 0); return err }); err != nil {
			return os.NewSyscallError("poll", err)
		}
		listening = pfd[0].Revents&(unix.POLLHUP|unix.POLLNVAL) == 0
		queued = listening && pfd[0].Revents&unix.POLLIN != 0
		return nil
	})
	return listening, queued, err
}

// shutDown reports whether f no longer listens: a child shut it down, and
// it left its group then.
func shutDown(f *os.File) bool {
	listening, _, err := listenState(f)
	return err == nil && !listening
}

// inspectListener returns the inode and port of f, which must be a
// listening SO_REUSEPORT TCP socket.
func inspectListener(f *os.File) (ino uint64, port int, err error) {
	var st unix.Stat_t
	var listening, reuseport int
	err = sys.Control(f, func(fd int) error {
		if err := sys.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
			return os.NewSyscallError("fstat", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return ErrNotActive
		}
		var err error
		if listening, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil {
			return os.NewSyscallError("getsockopt SO_ACCEPTCONN", err)
		}
		if reuseport, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil {
			return os.NewSyscallError("getsockopt SO_REUSEPORT", err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if listening == 0 {
		return 0, 0, ErrNotActive
	}
	if reuseport == 0 {
		return 0, 0, errors.New("socket has no SO_REUSEPORT")
	}
	a, err := Addr(f)
	if err != nil {
		return 0, 0, err
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return 0, 0, fmt.Errorf("socket %v is not TCP: %w", a, ErrNotMember)
	}
	return st.Ino, ta.Port, nil
}

// Dup returns a CLOEXEC duplicate of the supervisor's copy of m, made
// without Fd() so the socket's flags stay as they are (docs/kernel.md, "O_NONBLOCK"),
// to hand the member to another process.
func (m *Member) Dup() (*os.File, error) {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	f := m.copyLocked()
	if f == nil {
		return nil, ErrRemoved
	}
	var nfd int
	err := sys.Control(f, func(fd int) error {
		var err error
		nfd, err = sys.RetryInt(func() (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) })
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
