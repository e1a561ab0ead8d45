package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hotswap-dev/hotswap/internal/cmsg"
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
	for {
		if _, err := w.readable(ctx, s); err != nil {
			return -1, err
		}
		n, fds, err := cmsg.Recv(s, buf, 4, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			return -1, err
		case n == 0 && len(fds) == 0:
			return -1, io.ErrUnexpectedEOF
		case len(fds) != 1:
			cmsg.Close(fds)
			return -1, fmt.Errorf("got %d fds, want 1", len(fds))
		}
		return fds[0], nil
	}
}
