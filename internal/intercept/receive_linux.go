package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Receive waits for the notification fd that [InstallAndSend] sends on the
// supervisor's end sock of the socketpair, until ctx is done. The returned
// file is close-on-exec. A shim that exits or execs without sending makes
// Receive fail with io.ErrUnexpectedEOF.
func Receive(ctx context.Context, sock *os.File) (*os.File, error) {
	var fd int
	err := sys.Control(sock, func(s int) (err error) {
		fd, err = receive(ctx, s)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("intercept: receive notification fd: %w", err)
	}
	return os.NewFile(uintptr(fd), "seccomp-notify"), nil
}

func receive(ctx context.Context, s int) (int, error) {
	w, err := newWaker(ctx)
	if err != nil {
		return -1, err
	}
	defer w.close()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		if _, err := w.readable(ctx, s); err != nil {
			return -1, err
		}
		n, oobn, flags, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return -1, os.NewSyscallError("recvmsg", err)
		}
		fds, perr := parseRights(oob[:oobn])
		switch {
		case perr != nil:
		case flags&unix.MSG_CTRUNC != 0:
			perr = errors.New("control message truncated")
		case n == 0 && len(fds) == 0:
			perr = io.ErrUnexpectedEOF
		case len(fds) != 1:
			perr = fmt.Errorf("got %d fds, want 1", len(fds))
		}
		if perr != nil {
			closeAll(fds)
			return -1, perr
		}
		return fds[0], nil
	}
}

// parseRights returns every fd carried by SCM_RIGHTS messages in oob.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, os.NewSyscallError("parse control message", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(fds)
			return nil, os.NewSyscallError("parse rights", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
