package intercept

import (
	"errors"
	"net/netip"
	"os"
)

// ErrNested is returned by [InstallAndSend] when the kernel refuses a second
// notification listener: an ancestor filter of the calling process (hotswap
// running under hotswap, a sandbox or container manager) already has one.
var ErrNested = errors.New("intercept: seccomp listener already installed by an ancestor (nested supervisor or sandbox using user notification)")

// Table tells [Serve] which supervisor-owned sockets a child may receive.
// Its methods are called from the goroutine running Serve, one at a time.
type Table interface {
	// Lookup returns the supervisor socket to install when the child binds a
	// socket of the given network ("tcp" or "udp") to addr, and false to let
	// the bind run unchanged. A 4-byte addr comes from an AF_INET socket, a
	// 16-byte one (possibly IPv4-mapped) from an AF_INET6 socket.
	Lookup(network string, addr netip.AddrPort) (*os.File, bool)
	// Listen is called when the child calls listen(backlog) on a descriptor
	// that refers to f, a socket Lookup returned. The child's listen is never
	// run: a nil error makes it return 0, an error carrying a syscall.Errno
	// makes it fail with that errno (any other error with EIO).
	Listen(f *os.File, backlog int) error
}

// Listener is one supervised socket in a [Listeners] table.
type Listener struct {
	// Network is "tcp" or "udp".
	Network string
	// Addr is the address File is bound to.
	Addr netip.AddrPort
	// File is the supervisor's socket. Children change its O_NONBLOCK, so it
	// must not be in the Go netpoller.
	File *os.File
	// OnListen, if set, is called for the child's listen(). In reuseport
	// mode it is where the supervisor calls listen() on the generation's own
	// sibling socket. Its error is returned by the child's listen().
	OnListen func(backlog int) error
}

// Listeners is a [Table] that applies the package's address matching policy
// (see the package documentation) to a fixed list of sockets.
type Listeners []Listener

// Lookup implements [Table].
func (ls Listeners) Lookup(network string, addr netip.AddrPort) (*os.File, bool) {
	best, bestScore := -1, 0
	for i, l := range ls {
		if l.Network != network {
			continue
		}
		if s := MatchScore(l.Addr, addr); s > bestScore {
			best, bestScore = i, s
		}
	}
	if best < 0 {
		return nil, false
	}
	return ls[best].File, true
}

// Listen implements [Table].
func (ls Listeners) Listen(f *os.File, backlog int) error {
	for _, l := range ls {
		if l.File == f && l.OnListen != nil {
			return l.OnListen(backlog)
		}
	}
	return nil
}

// MatchScore reports how well a child's bind address matches a supervised
// address: 0 no match, 1 a wildcard matched across families, 2 a wildcard
// matched within the family, 3 exact. Port 0 and differing ports never match.
func MatchScore(supervised, bind netip.AddrPort) int {
	if bind.Port() == 0 || bind.Port() != supervised.Port() {
		return 0
	}
	s, b := supervised.Addr(), bind.Addr()
	sameFamily := s.Is4() == b.Is4()
	switch {
	case s == b:
		return 3
	case b.IsUnspecified() && sameFamily:
		return 2 // child wants every address; ours is one of them
	case s.IsUnspecified() && sameFamily:
		return 2 // ours covers the child's address
	case b.IsUnspecified():
		return 1 // a dual-stack [::]:P or 0.0.0.0:P next to our other-family socket
	case s.IsUnspecified() && s.Is6() && b.Unmap().Is4():
		return 1 // our dual-stack [::]:P covers the child's IPv4 address
	}
	return 0
}

// Stats counts what [Serve] did for one child.
type Stats struct {
	Notifications int     // notifications received
	Binds         int     // bind() calls seen
	Swapped       int     // binds answered by installing a supervisor socket
	Listens       int     // listen() calls on a supervisor socket, answered without running
	Shutdowns     int     // shutdown() calls on a supervisor socket, answered 0 without running
	Continued     int     // syscalls that ran unchanged
	Gone          int     // notifications whose caller went away before the answer
	Failed        int     // notifications answered with an error because handling failed
	Errors        []error // the first few handling errors, for the supervisor's log
}

const maxStatsErrors = 8

func (s *Stats) fail(err error) {
	s.Failed++
	if len(s.Errors) < maxStatsErrors {
		s.Errors = append(s.Errors, err)
	}
}
