package reuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// sock_diag constants of include/uapi/linux/inet_diag.h that x/sys/unix
// does not name.
const (
	diagReqBytecode = 1  // INET_DIAG_REQ_BYTECODE
	diagInfo        = 2  // INET_DIAG_INFO: struct tcp_info
	diagBCJmp       = 1  // INET_DIAG_BC_JMP
	diagBCSEq       = 11 // INET_DIAG_BC_S_EQ
	diagMsgLen      = 72 // sizeof(struct inet_diag_msg)
	diagReqLen      = 56 // sizeof(struct inet_diag_req_v2)
	// diagMaxPorts is the most ports one dump filters on in the kernel;
	// beyond, the dump returns every connection and the ports are
	// matched here.
	diagMaxPorts = 512
	// diagBatch is how many exact lookups share one sendto: their replies
	// (about 340 bytes each) fit the socket's default receive buffer.
	diagBatch = 128
)

// Port is a local TCP port in the address family of its listener: the
// family sock_diag files its connections under (a dual-stack [::]
// listener's IPv4 clients are AF_INET6, v4-mapped).
type Port struct {
	Family uint8
	Port   int
}

// PortOf returns the Port of a listener bound to addr ("host:port").
func PortOf(addr string) (Port, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return Port{}, fmt.Errorf("port of %s: %w", addr, err)
	}
	if ap.Addr().Is4() {
		return Port{unix.AF_INET, int(ap.Port())}, nil
	}
	return Port{unix.AF_INET6, int(ap.Port())}, nil
}

// Conn is one TCP connection as sock_diag reports it, with the part of its
// TCP_INFO that says whether it is between requests.
type Conn struct {
	Inode  uint64
	UID    uint32 // the socket's owner
	State  uint8
	RQueue uint32 // received, not read by the server yet
	WQueue uint32 // written by the server, not acknowledged yet
	// NotSent is what the server wrote that has not been sent at all
	// (tcpi_notsent_bytes).
	NotSent uint32
	// LastSent and LastRecv are how long ago data was last sent and
	// received, in the kernel's clock ticks (CONFIG_HZ) rounded to
	// milliseconds.
	LastSent, LastRecv time.Duration
	// BytesSent and BytesRecvd count the data sent (tcpi_bytes_sent, or
	// tcpi_bytes_acked before Linux 4.19) and received.
	BytesSent, BytesRecvd uint64
	RTT                   time.Duration // smoothed round-trip time
	id                    []byte        // inet_diag_sockid, for exact lookups
	family                uint8
	// steady: c was Idle at the previous look too, with the same byte
	// counts (set by [ConnSet.Refresh]).
	steady bool
	// sent: c sent data between two looks since the snapshot; turned: it
	// received data between two later looks (set by [ConnSet.Refresh]).
	sent, turned bool
}

// Idle reports whether c looks between requests: nothing is unread or
// unsent, it has received data and sent some, and its last data was sent
// no earlier than its last data was received. A server stopped now loses
// nothing of c's: what it sent and is not acknowledged yet is still
// delivered after its close. A connection that has sent nothing yet
// (tcpi_bytes_sent 0: its first request is still coming, or was read and
// is not answered) is busy whatever the stamps say: the kernel stamps the
// handshake's completion as a send (tcp_init_transfer sets lsndtime), so a
// fresh connection whose request was read in the same tick shows equal
// stamps. One look cannot tell two more cases from idle, which is why
// [ConnSet.Busy] also wants no byte moved since the previous look: a
// response written in parts and caught between two writes, and, at the
// clock's tick (4 ms at HZ=250), a keep-alive request read within the
// same tick as the previous response was sent and not answered yet.
func (c Conn) Idle() bool {
	return c.RQueue == 0 && c.NotSent == 0 && c.BytesRecvd > 0 && c.BytesSent > 0 && c.LastSent <= c.LastRecv
}

// ConnSet is the connections on some ports that one process tree held
// when it was taken, kept up to date by exact lookups.
type ConnSet struct {
	Conns []Conn
}

// Snapshot lists the connections (ESTABLISHED or CLOSE_WAIT) on ports that
// the process pid and its descendants hold open, with their TCP_INFO. It
// reads the tree's descriptors once (/proc/PID/fd; children from the
// main thread's task/PID/children),
// takes each socket's addresses and cookie from a duplicate made with
// pidfd_getfd(2) and closed at once, and reads them all with one batch of
// exact sock_diag lookups: it never walks the kernel's table of every
// connection, which costs milliseconds on a busy host. Where pidfd_getfd
// is refused (a process that is not dumpable, without CAP_SYS_PTRACE), it
// falls back to one sock_diag dump filtered on the ports. sock_diag
// answers for the caller's network namespace, which must be the tree's.
// An error wrapping [fs.ErrNotExist] means pid has exited.
//
// skip names socket inodes known not to be connections (the generation's
// listeners), which are then not duplicated.
func Snapshot(pid int, ports []Port, skip map[uint64]bool) (*ConnSet, error) {
	want := map[Port]bool{}
	for _, p := range ports {
		want[p] = true
	}
	set := &ConnSet{}
	socks, err := treeSockets(pid)
	if err != nil {
		return nil, fmt.Errorf("connections of pid %d: %w", pid, err)
	}
	defer closePidfds(socks)
	// A socket two processes of the tree hold is read once, from the
	// first whose descriptor could still be duplicated: one that closed
	// its copy since /proc listed it (a parent that handed the connection
	// to a child) must not hide the holders after it.
	seen := map[uint64]bool{}
	for ino := range skip {
		seen[ino] = true
	}
	for _, ps := range socks {
		cs, err := ps.conns(want, seen)
		if errors.Is(err, unix.EPERM) {
			return dumpSnapshot(pid, socks, want)
		}
		if err != nil {
			return nil, fmt.Errorf("connections of pid %d: %w", pid, err)
		}
		set.Conns = append(set.Conns, cs...)
	}
	if err := set.Refresh(); err != nil {
		return nil, fmt.Errorf("connections of pid %d: %w", pid, err)
	}
	return set, nil
}

// dumpSnapshot is Snapshot by one sock_diag dump per address family.
func dumpSnapshot(pid int, socks []procSockets, want map[Port]bool) (*ConnSet, error) {
	inodes := map[uint64]bool{}
	for _, ps := range socks {
		for _, s := range ps.socks {
			inodes[s.ino] = true
		}
	}
	byFamily := map[uint8]map[int]bool{}
	for p := range want {
		if byFamily[p.Family] == nil {
			byFamily[p.Family] = map[int]bool{}
		}
		byFamily[p.Family][p.Port] = true
	}
	set := &ConnSet{}
	for fam, ports := range byFamily {
		req := diagRequestV2(fam, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1<<tcpEstablished|1<<tcpCloseWait, true, nil, portFilter(ports))
		err := diagExchange(req, func(c Conn) {
			if ports[int(binary.BigEndian.Uint16(c.id))] && inodes[c.Inode] {
				set.Conns = append(set.Conns, c)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("connections of pid %d: %w", pid, err)
		}
	}
	return set, nil
}

// procSockets are the socket descriptors of one process.
type procSockets struct {
	pid   int
	pidfd int // pins the process while its descriptors are read
	socks []procSocket
}

type procSocket struct {
	fd  int
	ino uint64
}

// treeSockets lists the socket descriptors of pid and its descendants.
// Only a missing root is an error: descendants may exit meanwhile. Each
// process is pinned by a pidfd opened before its descriptors are read, so
// a reused pid cannot be mistaken for it; the caller closes them
// (closePidfds). pid is in the caller's pid namespace, /proc may name
// processes by another one's (sys.ProcPids): hotswap as pid 1 of a pid
// namespace under a /proc of the host read some other process's
// /proc/PID/fd and never saw its generation drained.
func treeSockets(pid int) ([]procSockets, error) {
	pids, err := sys.NewProcPids()
	if err != nil {
		return nil, err
	}
	var out []procSockets
	var walk func(pid, procPid int, root bool) error
	walk = func(pid, procPid int, root bool) error {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			if root {
				return fmt.Errorf("pidfd_open %d: %w", pid, os.NewSyscallError("pidfd_open", err))
			}
			return nil
		}
		if !pids.Same() {
			// The pidfd pins the process: its fdinfo names it in /proc.
			_, got, ok := pids.Pidfd(pidfd)
			if !ok || (!root && got != procPid) {
				unix.Close(pidfd)
				if root {
					return fmt.Errorf("pid %d: %w in the pid namespace of /proc", pid, fs.ErrNotExist)
				}
				return nil // exited, and its pid reused meanwhile
			}
			procPid = got
		}
		dir := "/proc/" + strconv.Itoa(procPid)
		fds, err := sys.ReadDirNames(dir + "/fd")
		if err != nil {
			unix.Close(pidfd)
			if root || !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		ps := procSockets{pid: pid, pidfd: pidfd}
		for _, fd := range fds {
			link, err := os.Readlink(dir + "/fd/" + fd)
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err1 := strconv.ParseUint(link[len("socket:["):len(link)-1], 10, 64)
			n, err2 := strconv.Atoi(fd)
			if err1 == nil && err2 == nil {
				ps.socks = append(ps.socks, procSocket{n, ino})
			}
		}
		out = append(out, ps)
		for _, child := range mainThreadChildren(procPid) {
			if own, ok := pids.FromProc(child); ok {
				if err := walk(own, child, false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(pid, pid, true); err != nil {
		closePidfds(out)
		return nil, err
	}
	return out, nil
}

// mainThreadChildren lists the children of the main thread of the process
// /proc names pid, as /proc names them
// (/proc/PID/task/PID/children). The kernel invalidates a process's /proc
// dentries when it is reaped, and every task/TID/children looked up makes
// that dearer: reading them for each of a Go server's threads added about
// 5 ms of hotswap's CPU per reload (docs/kernel.md). Servers that fork
// workers (nginx, gunicorn, php-fpm, Apache prefork) do so from their main
// thread; a child forked by another thread is not seen.
func mainThreadChildren(pid int) []int {
	b, err := sys.ReadProcFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		return nil
	}
	var out []int
	for _, s := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func closePidfds(socks []procSockets) {
	for _, ps := range socks {
		unix.Close(ps.pidfd)
	}
}

// conns returns the TCP connections among ps's sockets whose local port is
// wanted, their addresses and cookie read from a duplicate that is closed
// at once (the process keeps its own). Sockets in seen are skipped, and
// each one duplicated is added to it. A descriptor closed meanwhile is
// (or its number reused) is skipped and left out of seen, for another
// holder to name; EPERM means
// pidfd_getfd is not allowed.
func (ps *procSockets) conns(want map[Port]bool, seen map[uint64]bool) ([]Conn, error) {
	var out []Conn
	for _, s := range ps.socks {
		if seen[s.ino] {
			continue
		}
		fd, err := unix.PidfdGetfd(ps.pidfd, s.fd, 0)
		if errors.Is(err, unix.EPERM) {
			return nil, err
		}
		if err != nil {
			continue // closed since, or the process exited
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Ino != s.ino {
			unix.Close(fd) // closed since and the number reused
			continue
		}
		seen[s.ino] = true
		c, ok := connOf(fd, want)
		unix.Close(fd)
		if ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// connOf describes the socket fd if it is a connected TCP socket on a
// wanted local port.
func connOf(fd int, want map[Port]bool) (Conn, bool) {
	if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l != 0 {
		return Conn{}, false
	}
	if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_TCP {
		return Conn{}, false
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return Conn{}, false
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return Conn{}, false // not connected
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return Conn{}, false
	}
	id := make([]byte, 48) // struct inet_diag_sockid
	var c Conn
	var lport, rport int
	var laddr, raddr []byte
	switch l := local.(type) {
	case *unix.SockaddrInet4:
		if r, ok := peer.(*unix.SockaddrInet4); ok {
			c.family, lport, rport, laddr, raddr = unix.AF_INET, l.Port, r.Port, l.Addr[:], r.Addr[:]
		}
	case *unix.SockaddrInet6:
		if r, ok := peer.(*unix.SockaddrInet6); ok {
			c.family, lport, rport, laddr, raddr = unix.AF_INET6, l.Port, r.Port, l.Addr[:], r.Addr[:]
		}
	}
	if c.family == 0 || !want[Port{c.family, lport}] {
		return Conn{}, false
	}
	binary.BigEndian.PutUint16(id[0:], uint16(lport))
	binary.BigEndian.PutUint16(id[2:], uint16(rport))
	copy(id[4:], laddr)
	copy(id[20:], raddr)
	// The device it is bound to, if any: an exact lookup must name it.
	if dev, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX); err == nil {
		binary.NativeEndian.PutUint32(id[36:], uint32(dev))
	}
	// The cookie as sock_diag reports it: two native 32-bit words.
	binary.NativeEndian.PutUint32(id[40:], uint32(cookie))
	binary.NativeEndian.PutUint32(id[44:], uint32(cookie>>32))
	c.id = id
	return c, true
}

// Refresh reads every connection of s again by its exact address and
// cookie, many in one netlink round trip, and drops those that are gone
// or no longer ESTABLISHED or CLOSE_WAIT (closed by the tree).
func (s *ConnSet) Refresh() error {
	var out []Conn
	for start := 0; start < len(s.Conns); start += diagBatch {
		batch := s.Conns[start:min(start+diagBatch, len(s.Conns))]
		var req []byte
		for _, c := range batch {
			req = append(req, diagRequestV2(c.family, unix.NLM_F_REQUEST, 1<<tcpEstablished|1<<tcpCloseWait, true, c.id, nil)...)
		}
		err := diagExchangeN(req, len(batch), func(c Conn) {
			if c.Inode != 0 && (c.State == tcpEstablished || c.State == tcpCloseWait) {
				out = append(out, c)
			}
		})
		if err != nil {
			return fmt.Errorf("refresh connections: %w", err)
		}
	}
	prev := make(map[uint64]Conn, len(s.Conns))
	for _, c := range s.Conns {
		prev[c.Inode] = c
	}
	for i, c := range out {
		p, ok := prev[c.Inode]
		if !ok {
			continue
		}
		out[i].steady = p.Idle() && c.Idle() && p.BytesSent == c.BytesSent && p.BytesRecvd == c.BytesRecvd
		out[i].turned = p.turned || p.sent && c.BytesRecvd > p.BytesRecvd
		out[i].sent = p.sent || c.BytesSent > p.BytesSent
	}
	s.Conns = out
	return nil
}

// MaxRTT is the longest smoothed round-trip time among s's connections,
// or 0 when it has none.
func (s *ConnSet) MaxRTT() time.Duration {
	var m time.Duration
	for _, c := range s.Conns {
		m = max(m, c.RTT)
	}
	return m
}

// Busy counts the connections of s that may still be in the middle of an
// exchange that was under way when s was taken. A connection is settled
// when it is [Conn.Idle] with the same byte counts at the previous look
// ([ConnSet.Refresh]) as well, or when it has turned over: it sent data
// between two looks and then received data between two later ones, so the
// client has read what was sent and is talking again (a keep-alive client
// that got its response and sent its next request). A fresh snapshot is
// all busy.
//
// Two idle looks with nothing moved between them rule out a response
// caught between two of its writes (whose next write came before the
// second look) and a keep-alive request read in the tick its previous
// response was sent (answered before the second look). What they cannot
// rule out is a server that takes longer than the time between looks
// (at most a few ms) to write the next part of a response, or to answer a
// request that arrived in the tick its previous response left: stopped
// then, a server that exits at once on its stop signal loses it.
//
// A connection that turned over is not waited for: under a closed-loop
// keep-alive load it is never idle at two looks in a row, and waiting
// for it would only keep its client on the old generation for the whole
// bound. A server that drains gracefully (fdpass.ServeHTTP, Go's
// Shutdown, nginx's QUIT) answers its request in flight; one that exits at
// once on its stop signal loses that request after any wait, since such a
// client never pauses. Turning over can also be a request body sent after
// an interim response (100 Continue), which such a server loses too.
func (s *ConnSet) Busy() int {
	n := 0
	for _, c := range s.Conns {
		if !c.turned && (!c.Idle() || !c.steady) {
			n++
		}
	}
	return n
}

// portFilter is inet_diag bytecode that accepts a socket whose local port
// is one of ports, or nil when there are too many to test in the kernel.
// Per port: S_EQ (its port in the next word's no) goes on a match to a
// JMP past the end (accept), else over it to the next test; the last
// test's miss jumps 4 past the end, which rejects. (An op's yes is one
// byte, its no two: only no can jump far.)
func portFilter(ports map[int]bool) []byte {
	if len(ports) > diagMaxPorts {
		return nil
	}
	const block = 12 // S_EQ (8 bytes) + JMP (4)
	ne := binary.NativeEndian
	b := make([]byte, block*len(ports))
	off := 0
	for p := range ports {
		op := b[off : off+block]
		rest := len(b) - off // bytes from this test to the end
		op[0], op[1] = diagBCSEq, 8
		no := block
		if rest == block {
			no = block + 4
		}
		ne.PutUint16(op[2:], uint16(no))
		ne.PutUint16(op[6:], uint16(p))
		op[8], op[9] = diagBCJmp, 4
		ne.PutUint16(op[10:], uint16(rest-8))
		off += block
	}
	return b
}

// diagRequestV2 is one inet_diag_req_v2 message, asking for TCP_INFO with
// info, with id (an inet_diag_sockid) for an exact lookup and bytecode for
// a dump.
func diagRequestV2(family uint8, flags uint16, states uint32, info bool, id, bytecode []byte) []byte {
	const hdr = unix.SizeofNlMsghdr
	l := hdr + diagReqLen
	if bytecode != nil {
		l += 4 + len(bytecode)
	}
	b := make([]byte, l)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(l))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], flags)
	b[hdr] = family
	b[hdr+1] = unix.IPPROTO_TCP
	if info {
		b[hdr+2] = 1 << (diagInfo - 1)
	}
	ne.PutUint32(b[hdr+4:], states)
	if id != nil {
		copy(b[hdr+8:hdr+diagReqLen], id)
	} else {
		// No cookie: INET_DIAG_NOCOOKIE.
		ne.PutUint64(b[hdr+8+40:], ^uint64(0))
	}
	if bytecode != nil {
		a := b[hdr+diagReqLen:]
		ne.PutUint16(a[0:], uint16(4+len(bytecode)))
		ne.PutUint16(a[2:], diagReqBytecode)
		copy(a[4:], bytecode)
	}
	return b
}

// diagExchange sends a dump request and passes every socket in the answer
// to fn.
func diagExchange(req []byte, fn func(Conn)) error { return diagExchangeN(req, -1, fn) }

// diagExchangeN sends req and passes every socket in the answers to fn:
// until NLMSG_DONE for a dump (n < 0), or until n answers (a socket, or an
// error such as ENOENT for one that is gone) to n exact lookups.
//
// Exchanges share one netlink socket and receive buffer, one exchange at a
// time (diagLink): a reload makes a few exchanges, and a new socket and 64
// KiB of garbage for each was most of what the reuseport mode allocated.
func diagExchangeN(req []byte, n int, fn func(Conn)) error {
	return diagExchangeMsgs(req, n, func(msg []byte) { fn(parseConn(msg)) })
}

// diagExchangeMsgs is diagExchangeN passing each inet_diag_msg (at least
// diagMsgLen bytes, valid only during the call) as it is.
func diagExchangeMsgs(req []byte, n int, fn func(msg []byte)) error {
	link.mu.Lock()
	defer link.mu.Unlock()
	if link.fd < 0 {
		fd, err := sys.RetryInt(func() (int, error) {
			return unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		})
		if err != nil {
			return os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
		}
		link.fd = fd
		if link.buf == nil {
			link.buf = make([]byte, 64<<10)
		}
	}
	if err := link.exchange(req, n, fn); err != nil {
		// A part of the answer may still wait in the socket: the next
		// exchange gets a new one.
		unix.Close(link.fd)
		link.fd = -1
		return err
	}
	return nil
}

// diagLink is the NETLINK_SOCK_DIAG socket of every exchange, with its
// receive buffer; it holds no unread answer between exchanges.
type diagLink struct {
	mu  sync.Mutex
	fd  int
	buf []byte
}

var link = diagLink{fd: -1}

func (l *diagLink) exchange(req []byte, n int, fn func(msg []byte)) error {
	if err := sys.Retry(func() error {
		return unix.Sendto(l.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}); err != nil {
		return os.NewSyscallError("sendto sock_diag", err)
	}
	for {
		got, _, err := unix.Recvfrom(l.fd, l.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom sock_diag", err)
		}
		done, answers, err := diagParseConns(l.buf[:got], fn)
		if err != nil {
			return err
		}
		if n >= 0 {
			if n -= answers; n <= 0 {
				return nil
			}
		} else if done {
			return nil
		}
	}
}

// diagParseConns passes the sockets of one datagram to fn; it reports
// whether a dump is complete and how many answers (sockets or errors) the
// datagram held. ENOENT, for a socket gone since, is an answer, not an
// error.
func diagParseConns(b []byte, fn func(msg []byte)) (done bool, answers int, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return false, answers, fmt.Errorf("parse sock_diag: bad message length %d", l)
		}
		typ, msg := ne.Uint16(b[4:]), b[unix.SizeofNlMsghdr:l]
		switch typ {
		case unix.NLMSG_DONE:
			return true, answers, nil
		case unix.NLMSG_ERROR:
			answers++
			if len(msg) >= 4 {
				if e := unix.Errno(-int32(ne.Uint32(msg))); e != 0 && e != unix.ENOENT {
					return false, answers, os.NewSyscallError("sock_diag", e)
				}
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			answers++
			if len(msg) >= diagMsgLen {
				fn(msg)
			}
		}
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
	return false, answers, nil
}

// parseConn reads an inet_diag_msg and its INET_DIAG_INFO attribute.
func parseConn(msg []byte) Conn {
	ne := binary.NativeEndian
	c := Conn{
		family: msg[0],
		State:  msg[1],
		id:     append([]byte(nil), msg[4:52]...),
		RQueue: ne.Uint32(msg[56:]),
		WQueue: ne.Uint32(msg[60:]),
		UID:    ne.Uint32(msg[64:]),
		Inode:  uint64(ne.Uint32(msg[68:])),
	}
	for a := msg[diagMsgLen:]; len(a) >= 4; {
		l := int(ne.Uint16(a))
		if l < 4 || l > len(a) {
			break
		}
		if ne.Uint16(a[2:]) == diagInfo {
			parseTCPInfo(a[4:l], &c)
		}
		a = a[min(len(a), (l+3)&^3):]
	}
	return c
}

// parseTCPInfo reads the fields of struct tcp_info (include/uapi/linux/
// tcp.h) that Conn keeps; a short one (an old kernel) leaves the rest 0.
func parseTCPInfo(ti []byte, c *Conn) {
	ne := binary.NativeEndian
	u32 := func(off int) uint32 {
		if len(ti) < off+4 {
			return 0
		}
		return ne.Uint32(ti[off:])
	}
	u64 := func(off int) uint64 {
		if len(ti) < off+8 {
			return 0
		}
		return ne.Uint64(ti[off:])
	}
	c.LastSent = time.Duration(u32(44)) * time.Millisecond // tcpi_last_data_sent
	c.LastRecv = time.Duration(u32(52)) * time.Millisecond // tcpi_last_data_recv
	c.BytesSent = max(u64(200), u64(120))                  // tcpi_bytes_sent, tcpi_bytes_acked
	c.BytesRecvd = u64(128)                                // tcpi_bytes_received
	c.NotSent = u32(144)                                   // tcpi_notsent_bytes
	c.RTT = time.Duration(u32(68)) * time.Microsecond      // tcpi_rtt
}
