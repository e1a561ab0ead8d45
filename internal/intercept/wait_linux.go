package intercept

import (
	"context"
	"errors"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// waker turns a context's cancellation into a readable eventfd, so that a
// blocking poll(2) on a descriptor outside the Go netpoller can wait for
// either.
type waker struct {
	efd  int
	stop func() bool
}

func newWaker(ctx context.Context) (*waker, error) {
	efd, err := sys.RetryInt(func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK) })
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	w := &waker{efd: efd}
	w.stop = context.AfterFunc(ctx, func() {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		_, _ = sys.RetryInt(func() (int, error) { return unix.Write(efd, one) })
	})
	return w, nil
}

// close releases the eventfd once the AfterFunc can no longer run.
func (w *waker) close() {
	if !w.stop() {
		// The AfterFunc has started or finished; wait for its write by
		// taking the eventfd's own readiness as the barrier.
		w.wait(-1)
	}
	unix.Close(w.efd)
}

func (w *waker) wait(fd int) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(w.efd), Events: unix.POLLIN}}
	if fd >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	_, err := sys.RetryInt(func() (int, error) { return unix.Poll(fds, -1) })
	if err != nil {
		return 0, os.NewSyscallError("poll", err)
	}
	if fd >= 0 && fds[1].Revents != 0 {
		return fds[1].Revents, nil
	}
	return 0, errCanceled
}

var errCanceled = errors.New("intercept: canceled")

// readable waits until fd is readable or hung up, returning its revents, or
// until ctx is done, returning the context's cause.
func (w *waker) readable(ctx context.Context, fd int) (int16, error) {
	rev, err := w.wait(fd)
	if err == errCanceled {
		return 0, context.Cause(ctx)
	}
	return rev, err
}
