package intercept

import (
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Serve answers the notifications of one child and everything it forks,
// received on notify (from [Receive]), until every task using the filter has
// exited (it then returns nil) or ctx is done (it returns the context's
// cause). pid is the child's pid. Serve uses its own duplicate of notify:
// the caller keeps and closes notify; once both are closed, trapped system
// calls in the child fail with ENOSYS.
func Serve(ctx context.Context, notify *os.File, pid int, t Table) (Stats, error) {
	nfd, err := dupFile(notify)
	if err != nil {
		return Stats{}, fmt.Errorf("intercept: serve pid %d: %w", pid, err)
	}
	defer unix.Close(nfd)
	sz, err := kernelSizes()
	if err != nil {
		return Stats{}, err
	}
	w, err := newWaker(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("intercept: serve pid %d: %w", pid, err)
	}
	defer w.close()
	s := &server{nfd: nfd, pid: pid, self: os.Getpid(), t: t}
	s.buf = make([]uint64, (max(int(sz.notif), int(unsafe.Sizeof(notif{})))+7)/8)
	err = s.run(ctx, w)
	if err != nil {
		err = fmt.Errorf("intercept: serve pid %d: %w", pid, err)
	}
	return s.st, err
}

type server struct {
	nfd       int
	pid       int
	self      int
	t         Table
	buf       []uint64   // a zeroed seccomp_notif of the kernel's size before each RECV
	installed []*os.File // supervisor sockets installed in this child's tree
	st        Stats
}

// reply is how a notification is answered.
type reply struct {
	send  bool // false: the caller is gone, send nothing
	cont  bool // let the system call run
	val   int64
	errno unix.Errno
}

// The replies without a value: let the call run, make it return 0, or
// send nothing.
func replyContinue() reply { return reply{send: true, cont: true} }
func replyZero() reply     { return reply{send: true} }
func replyNone() reply     { return reply{} }

func replyErr(errno unix.Errno) reply { return reply{send: true, errno: errno} }

func (s *server) run(ctx context.Context, w *waker) error {
	for {
		rev, err := w.readable(ctx, s.nfd)
		if err != nil {
			return err
		}
		if rev&unix.POLLIN == 0 {
			if rev&(unix.POLLHUP|unix.POLLERR) != 0 {
				return nil // every task using the filter has exited
			}
			continue
		}
		n, ok, err := s.recv()
		if err != nil {
			return err
		}
		if ok {
			s.answer(n)
		}
	}
}

// recv reads one notification; ok is false when its caller went away.
func (s *server) recv() (*notif, bool, error) {
	clear(s.buf)
	n := (*notif)(unsafe.Pointer(&s.buf[0]))
	_, err := sys.IoctlPtr("ioctl SECCOMP_IOCTL_NOTIF_RECV", s.nfd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
	switch {
	case errors.Is(err, unix.ENOENT):
		s.st.Gone++
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	s.st.Notifications++
	return n, true, nil
}

func (s *server) answer(n *notif) {
	var r reply
	switch {
	case n.data.arch != auditArch:
		r = replyContinue()
	case n.data.nr == unix.SYS_BIND:
		s.st.Binds++
		r = s.bind(n)
	case n.data.nr == unix.SYS_LISTEN:
		r = s.onOurs(n, s.listen)
	case n.data.nr == unix.SYS_SHUTDOWN:
		r = s.onOurs(n, s.shutdown)
	default:
		r = replyContinue()
	}
	s.send(n.id, r)
}

func (s *server) send(id uint64, r reply) {
	if !r.send {
		s.st.Gone++
		return
	}
	resp := notifResp{id: id, val: r.val, error: -int32(r.errno)}
	if r.cont {
		resp.flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		s.st.Continued++
	}
	_, err := sys.IoctlPtr("ioctl SECCOMP_IOCTL_NOTIF_SEND", s.nfd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
	switch {
	case errors.Is(err, unix.ENOENT):
		s.st.Gone++ // interrupted by a signal or killed; the call restarts
	case err != nil:
		s.st.fail(fmt.Errorf("reply to notification %d: %w", id, err))
	}
}

// onOurs calls fn when the notification's first argument is a descriptor
// of a supervisor socket installed in this child, and lets the call run
// otherwise.
func (s *server) onOurs(n *notif, fn func(n *notif, f *os.File) reply) reply {
	fd := int(int32(n.data.args[0]))
	for _, f := range s.installed {
		same := false
		err := sys.Control(f, func(ours int) error {
			var err error
			same, err = sys.KcmpFile(s.self, int(n.pid), ours, fd)
			return err
		})
		if err == nil && same {
			return fn(n, f)
		}
	}
	return replyContinue()
}

// listen answers listen() on a supervisor socket without running it: the
// child's backlog must not replace the supervisor's (a Python child would
// shrink it to 5).
func (s *server) listen(n *notif, f *os.File) reply {
	s.st.Listens++
	err := s.t.Listen(f, int(int32(n.data.args[1])))
	if err == nil {
		return replyZero()
	}
	s.st.fail(fmt.Errorf("listen hook for pid %d: %w", n.pid, err))
	var errno unix.Errno
	if errors.As(err, &errno) {
		return replyErr(errno)
	}
	return replyErr(unix.EIO)
}

// shutdown answers shutdown(SHUT_RD or SHUT_RDWR) on a supervisor socket
// with 0 without running it: on a listening socket it would stop accepting
// for the supervisor and every generation.
func (s *server) shutdown(*notif, *os.File) reply {
	s.st.Shutdowns++
	return replyZero()
}

// dupFile returns a close-on-exec duplicate of f's descriptor.
func dupFile(f *os.File) (int, error) {
	var nfd int
	err := sys.Control(f, func(fd int) error {
		var err error
		nfd, err = sys.RetryInt(func() (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) })
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	})
	return nfd, err
}
