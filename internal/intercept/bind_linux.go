package intercept

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// bind answers bind(fd, addr, len). A bind of a TCP or UDP socket to an
// address the table supervises is answered by installing the supervisor's
// socket at fd (ADDFD with SETFD, which closes the child's own socket) and
// then a separate reply of 0. ADDFD_FLAG_SEND is not used: it makes bind()
// return the descriptor number, and busybox treats any non-zero as failure.
func (s *server) bind(n *notif) reply {
	tid := int(n.pid)
	fd := int(int32(n.data.args[0]))
	raw, err := readMem(tid, uintptr(n.data.args[1]), int(uint32(n.data.args[2])))
	if err != nil {
		return replyContinue() // the kernel reports the bad address itself
	}
	// The target's memory is only trusted once the notification is known to
	// be still pending: otherwise tid may already belong to another process.
	if !s.valid(n.id) {
		return replyNone()
	}
	family, addr, ok := parseSockaddr(raw)
	if !ok || addr.Port() == 0 {
		return replyContinue()
	}
	tgid, err := s.tgid(tid)
	if err != nil {
		return replyContinue()
	}
	cs, err := inspect(tgid, fd)
	if err != nil || cs.family != family || cs.network == "" {
		return replyContinue() // not a TCP/UDP socket of this family: not ours to swap
	}
	f, ok := s.t.Lookup(cs.network, addr)
	if !ok {
		return replyContinue()
	}
	r := s.install(n.id, f, fd, cs)
	if r.send && r.errno == 0 {
		s.st.Swapped++
		s.remember(f)
	}
	return r
}

func (s *server) valid(id uint64) bool {
	_, err := sys.IoctlPtr("ioctl SECCOMP_IOCTL_NOTIF_ID_VALID", s.nfd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
	return err == nil
}

// install puts f at the child's fd with the child's own socket's O_NONBLOCK
// (on the shared open file description) and FD_CLOEXEC (per descriptor).
func (s *server) install(id uint64, f *os.File, fd int, cs childSocket) reply {
	err := sys.Control(f, func(ours int) error {
		if err := setNonblock(ours, cs.nonblock); err != nil {
			return err
		}
		add := notifAddfd{id: id, flags: unix.SECCOMP_ADDFD_FLAG_SETFD, srcfd: uint32(ours), newfd: uint32(fd)}
		if cs.cloexec {
			add.newfdFlags = unix.O_CLOEXEC
		}
		_, err := sys.IoctlPtr("ioctl SECCOMP_IOCTL_NOTIF_ADDFD", s.nfd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&add))
		return err
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return replyNone()
	case err != nil:
		s.st.fail(fmt.Errorf("install socket at fd %d of pid %d: %w", fd, s.pid, err))
		var errno unix.Errno
		if errors.As(err, &errno) {
			return replyErr(errno)
		}
		return replyErr(unix.EIO)
	}
	return replyZero()
}

func (s *server) remember(f *os.File) {
	for _, g := range s.installed {
		if g == f {
			return
		}
	}
	s.installed = append(s.installed, f)
}

// childSocket is what bind needs to know about the child's own socket.
type childSocket struct {
	family   int
	network  string // "tcp", "udp", or "" for anything else
	nonblock bool
	cloexec  bool
}

// inspect examines the child's descriptor fd through a pidfd_getfd
// duplicate. MPTCP counts as TCP: Go 1.24+ listens with MPTCP first and a
// plain TCP socket in its place serves normally.
func inspect(tgid, fd int) (childSocket, error) {
	var cs childSocket
	pidfd, err := sys.RetryInt(func() (int, error) { return unix.PidfdOpen(tgid, 0) })
	if err != nil {
		return cs, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	dup, err := sys.RetryInt(func() (int, error) { return unix.PidfdGetfd(pidfd, fd, 0) })
	if err != nil {
		return cs, os.NewSyscallError("pidfd_getfd", err)
	}
	defer unix.Close(dup)
	var typ, proto int
	for _, o := range []struct {
		opt int
		v   *int
	}{{unix.SO_DOMAIN, &cs.family}, {unix.SO_TYPE, &typ}, {unix.SO_PROTOCOL, &proto}} {
		if *o.v, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, o.opt); err != nil {
			return cs, os.NewSyscallError("getsockopt", err)
		}
	}
	switch {
	case typ == unix.SOCK_STREAM && (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP):
		cs.network = "tcp"
	case typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP:
		cs.network = "udp"
	}
	fl, err := unix.FcntlInt(uintptr(dup), unix.F_GETFL, 0)
	if err != nil {
		return cs, os.NewSyscallError("fcntl F_GETFL", err)
	}
	cs.nonblock = fl&unix.O_NONBLOCK != 0
	cs.cloexec, err = fdCloexec(tgid, fd)
	return cs, err
}

// fdCloexec reads FD_CLOEXEC of another process's descriptor from the
// flags line of /proc/<pid>/fdinfo/<fd>, where the kernel reports it as
// O_CLOEXEC. nginx keeps listeners without it for its binary upgrade.
func fdCloexec(pid, fd int) (bool, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "flags:")
		if !ok {
			continue
		}
		fl, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
		if err != nil {
			return false, fmt.Errorf("parse fdinfo flags %q: %w", v, err)
		}
		return fl&unix.O_CLOEXEC != 0, nil
	}
	return false, fmt.Errorf("read fdinfo of pid %d fd %d: no flags line", pid, fd)
}

func setNonblock(fd int, on bool) error {
	return sys.Retry(func() error { return unix.SetNonblock(fd, on) })
}

// tgid returns the thread group of tid: notifications carry the calling
// thread, and pidfd_open and fdinfo need the process.
func (s *server) tgid(tid int) (int, error) {
	if tid == s.pid {
		return tid, nil
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", s.pid, tid)); err == nil {
		return s.pid, nil
	}
	return statusTgid(tid)
}

func statusTgid(tid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Tgid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("read status of tid %d: no Tgid line", tid)
}

// maxSockaddr is the largest address bind reads: sockaddr_in6.
const maxSockaddr = unix.SizeofSockaddrInet6

// readMem copies the bind address from thread tid, with process_vm_readv
// and a /proc/<tid>/mem fallback (for kernels or policies refusing it).
func readMem(tid int, addr uintptr, n int) ([]byte, error) {
	if n < 2 || n > 128 {
		return nil, unix.EINVAL
	}
	buf := make([]byte, min(n, maxSockaddr))
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: addr, Len: len(buf)}}
	got, err := sys.RetryInt(func() (int, error) { return unix.ProcessVMReadv(tid, local, remote, 0) })
	if err == nil && got == len(buf) {
		return buf, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", tid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, int64(addr)); err != nil {
		return nil, err
	}
	return buf, nil
}

// parseSockaddr decodes an AF_INET or AF_INET6 address as bind would.
func parseSockaddr(b []byte) (int, netip.AddrPort, bool) {
	family := int(binary.NativeEndian.Uint16(b))
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		ip := netip.AddrFrom4([4]byte(b[4:8]))
		return family, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[2:4])), true
	case family == unix.AF_INET6 && len(b) >= unix.SizeofSockaddrInet6:
		ip := netip.AddrFrom16([16]byte(b[8:24]))
		return family, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[2:4])), true
	}
	return family, netip.AddrPort{}, false
}
