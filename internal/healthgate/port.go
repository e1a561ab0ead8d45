package healthgate

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// HealthName is the LISTEN_FDNAMES name of the {port} socket a generation
// receives after its listeners.
const HealthName = "health"

// HealthSocket is the socket behind {port}: a TCP listener on 127.0.0.1 with
// a port the kernel chose, bound and listening before the generation starts.
// The supervisor hands it to the generation (named [HealthName]) and keeps
// its own copy until the generation exits, so no other process can bind the
// port in between: the kernel refuses any bind on the address of a listening
// socket that has no SO_REUSEPORT, SO_REUSEADDR or not, and on the wildcard
// address of its port. A probe of {port} is thus answered by the generation
// or by nobody, whoever reads the port from the generation's argv.
type HealthSocket struct {
	f    *os.File
	addr netip.AddrPort
}

// ListenHealth binds and listens on a new [HealthSocket]. The socket is
// non-blocking, for the child: no connection comes to it after the gate,
// so a process with several acceptors on a blocking one (nginx's workers,
// which keep an inherited socket's mode) can leave one blocked in accept()
// for good after a wake-up another won, and that worker then serves none
// of its connections and never handles its stop signal. (ln.File() would
// hand it blocking: its file is Go's, and os/exec's Fd() switches it.)
func ListenHealth() (*HealthSocket, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("healthgate: health socket: %w", err)
	}
	defer ln.Close() // the duplicate below keeps the socket
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("healthgate: health socket: %w", err)
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) { dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("healthgate: health socket: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("healthgate: health socket: %w", os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr))
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	// The description is already non-blocking (Go's), so this file is
	// one Fd() leaves alone.
	return &HealthSocket{f: os.NewFile(uintptr(dup), "health:"+addr.String()), addr: addr}, nil
}

// File returns the socket, for the generation's ExtraFiles.
func (h *HealthSocket) File() *os.File { return h.f }

// Port returns the port substituted for {port}.
func (h *HealthSocket) Port() int { return int(h.addr.Port()) }

// Addr returns the socket's address, 127.0.0.1:{port}.
func (h *HealthSocket) Addr() netip.AddrPort { return h.addr }

// Verify is an [Options].Verify that accepts a probe connection only when it
// reached this socket's address, the one address whose listener hotswap
// owns: a name that resolved elsewhere (localhost to ::1) is refused.
func (h *HealthSocket) Verify(c net.Conn) error {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok || netip.AddrPortFrom(ta.AddrPort().Addr().Unmap(), ta.AddrPort().Port()) != h.addr {
		return fmt.Errorf("answered on %v, not on the generation's health socket %v", c.RemoteAddr(), h.addr)
	}
	return nil
}

// Close closes the supervisor's copy.
func (h *HealthSocket) Close() error { return h.f.Close() }
