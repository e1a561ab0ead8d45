package fdpass

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrNotInherited is returned by [Listen] and [ListenPacket] when the
// process did receive sockets, but none under the requested name.
var ErrNotInherited = errors.New("fdpass: socket not inherited")

// defaultName is what systemd calls every descriptor when LISTEN_FDNAMES is
// absent.
const defaultName = "unknown"

// handoff is what this process inherited, read once.
type handoff struct {
	ok        bool // LISTEN_FDS and LISTEN_PID were for this process
	listeners map[string]net.Listener
	packets   map[string]net.PacketConn
	names     []string // every key of both maps, in descriptor order
	err       error
}

var inherit = sync.OnceValue(func() *handoff {
	h := readHandoff(os.Getpid(), os.Getenv(ListenPID), os.Getenv(ListenFDs), os.Getenv(ListenFDNames))
	// Pitfall: a child of ours must not claim these descriptors
	// (sd_listen_fds(3) with unset_environment).
	for _, k := range []string{ListenPID, ListenFDs, ListenFDNames} {
		os.Unsetenv(k)
	}
	return h
})

// Listeners returns the stream sockets handed over per sd_listen_fds(3):
// LISTEN_FDS descriptors from [FirstFD], named by LISTEN_FDNAMES ("unknown"
// for each when it is absent, as systemd does), provided LISTEN_PID equals
// this process's pid. Otherwise the map is empty and the error nil.
//
// A name that occurs more than once (systemd gives every descriptor of one
// socket unit the unit's name) keys its first descriptor by the name and each
// later one by "name:fd", for example "unknown:4"; names never contain ':'.
//
// The first call unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so that
// no child process of ours claims the descriptors, and replaces every
// inherited descriptor by a close-on-exec duplicate (closing the original);
// later calls return the same sockets. Datagram sockets are returned by
// [PacketConns] instead. A descriptor that is neither a listening stream
// socket nor a datagram socket makes every call fail, and all inherited
// sockets are closed.
func Listeners() (map[string]net.Listener, error) {
	h := inherit()
	if h.err != nil {
		return nil, h.err
	}
	return clone(h.listeners), nil
}

// PacketConns returns the inherited datagram sockets (UDP, unixgram), named
// as in [Listeners].
func PacketConns() (map[string]net.PacketConn, error) {
	h := inherit()
	if h.err != nil {
		return nil, h.err
	}
	return clone(h.packets), nil
}

// Listen returns the inherited stream socket called name. When the process
// was started without a hand-off (no LISTEN_FDS for this pid) it listens on
// network and address itself, so the same binary runs with and without
// hotswap. When sockets were inherited but none is called name, the error
// wraps [ErrNotInherited] and lists what was inherited. Every call for one
// name returns the same listener; network and address are not compared with
// an inherited socket, since the supervisor decides where it listens.
func Listen(name, network, address string) (net.Listener, error) {
	return lookup(name, "stream", func(h *handoff) map[string]net.Listener { return h.listeners },
		func() (net.Listener, error) { return net.Listen(network, address) })
}

// ListenPacket is [Listen] for datagram sockets.
func ListenPacket(name, network, address string) (net.PacketConn, error) {
	return lookup(name, "datagram", func(h *handoff) map[string]net.PacketConn { return h.packets },
		func() (net.PacketConn, error) { return net.ListenPacket(network, address) })
}

// lookup returns the inherited socket called name from the map pick
// selects, or what fallback returns when nothing was inherited.
func lookup[V any](name, kind string, pick func(*handoff) map[string]V, fallback func() (V, error)) (V, error) {
	var zero V
	h := inherit()
	if h.err != nil {
		return zero, h.err
	}
	if !h.ok {
		return fallback()
	}
	if v, ok := pick(h)[name]; ok {
		return v, nil
	}
	return zero, h.missing(name, kind)
}

func (h *handoff) missing(name, kind string) error {
	var got []string
	for _, n := range h.names {
		if _, ok := h.listeners[n]; ok {
			got = append(got, n+" (stream)")
		} else {
			got = append(got, n+" (datagram)")
		}
	}
	have := "nothing"
	if len(got) > 0 {
		have = strings.Join(got, ", ")
	}
	return fmt.Errorf("%w: no %s socket %q among %s", ErrNotInherited, kind, name, have)
}

func clone[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// readHandoff interprets the sd_listen_fds(3) variables for process pid.
func readHandoff(pid int, listenPID, listenFDs, fdNames string) *handoff {
	h := &handoff{listeners: map[string]net.Listener{}, packets: map[string]net.PacketConn{}}
	if listenFDs == "" || listenPID != strconv.Itoa(pid) {
		return h
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 {
		h.err = fmt.Errorf("fdpass: %s=%q: not a count", ListenFDs, listenFDs)
		return h
	}
	if n == 0 {
		return h
	}
	names, err := fdNameList(fdNames, n)
	if err != nil {
		h.err = err
		return h
	}
	h.ok = true
	h.err = h.adopt(names)
	return h
}

// fdNameList splits LISTEN_FDNAMES into n names.
func fdNameList(v string, n int) ([]string, error) {
	if v == "" {
		return slices.Repeat([]string{defaultName}, n), nil
	}
	names := strings.Split(v, ":")
	if len(names) != n {
		return nil, fmt.Errorf("fdpass: %s=%q: %d names for %s=%d", ListenFDNames, v, len(names), ListenFDs, n)
	}
	return names, nil
}

// adopt turns descriptors FirstFD.. into sockets. It holds syscall.ForkLock
// throughout: the inherited descriptors are not close-on-exec (os/exec
// clears the flag on ExtraFiles), and no process we start concurrently may
// keep a copy of a socket, or the supervisor can never close it.
func (h *handoff) adopt(names []string) (retErr error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	defer func() {
		if retErr != nil {
			h.closeAll()
		}
	}()
	for i, name := range names {
		fd := FirstFD + i
		if h.has(name) {
			name += ":" + strconv.Itoa(fd)
		}
		if err := h.adoptOne(fd, name); err != nil {
			return err
		}
		h.names = append(h.names, name)
	}
	return nil
}

func (h *handoff) has(name string) bool {
	_, ln := h.listeners[name]
	_, pc := h.packets[name]
	return ln || pc
}

// sockKind classifies an inherited descriptor.
type sockKind int

const (
	kindUnknown  sockKind = iota // the platform cannot tell: try listener, then datagram
	kindListener                 // a listening stream or seqpacket socket
	kindPacket                   // a datagram socket
	kindOther                    // anything else: a connected socket, a pipe, a file
)

// classify (child_linux.go) is a getsockopt(SO_TYPE, SO_ACCEPTCONN) check
// on the raw descriptor, before any *os.File owns it: net.FileListener
// alone cannot tell a unix datagram socket from a listening unix stream
// socket, and a descriptor that is not a socket (LISTEN_FDS larger than what
// was really passed) may be one the runtime uses, which must not be closed.
// Elsewhere it says kindUnknown.

// adoptOne converts one descriptor. net.FileListener and net.FilePacketConn
// work on a close-on-exec duplicate, so the original is closed in every case
// (pitfall 2: otherwise it is a hidden holder of the socket).
func (h *handoff) adoptOne(fd int, name string) error {
	kind, err := classify(fd)
	if err != nil {
		return fmt.Errorf("fdpass: inherited fd %d (%s): %w", fd, name, err)
	}
	if kind == kindOther {
		return fmt.Errorf("fdpass: inherited fd %d (%s): not a listening stream socket or a datagram socket", fd, name)
	}
	// A descriptor passed to os.NewFile is never switched to blocking mode
	// by Fd (only sockets the os package put into non-blocking mode are),
	// so the shared open file description keeps its flags (pitfall 1).
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var lerr, perr error
	if kind == kindListener || kind == kindUnknown {
		var ln net.Listener
		if ln, lerr = net.FileListener(f); lerr == nil {
			h.listeners[name] = ln
			return nil
		}
	}
	if kind == kindPacket || kind == kindUnknown {
		var pc net.PacketConn
		if pc, perr = net.FilePacketConn(f); perr == nil {
			h.packets[name] = pc
			return nil
		}
	}
	return fmt.Errorf("fdpass: inherited fd %d (%s): not a listening stream socket or a datagram socket: %w",
		fd, name, errors.Join(lerr, perr))
}

func (h *handoff) closeAll() {
	for _, ln := range h.listeners {
		ln.Close()
	}
	for _, pc := range h.packets {
		pc.Close()
	}
	h.listeners, h.packets, h.names = map[string]net.Listener{}, map[string]net.PacketConn{}, nil
}
