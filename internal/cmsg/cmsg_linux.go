package cmsg

import (
	"errors"
	"fmt"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// ErrTruncated reports a message whose descriptors did not all fit the
// receive buffer; the kernel closed the ones that did not.
var ErrTruncated = errors.New("cmsg: control message truncated")

// Send sends data with fds attached on the unix socket sock. A stream
// socket needs at least one data byte to carry them.
func Send(sock int, data []byte, fds ...int) error {
	err := sys.Retry(func() error { return unix.Sendmsg(sock, data, unix.UnixRights(fds...), nil, 0) })
	return os.NewSyscallError("sendmsg", err)
}

// Recv reads one message into buf from the unix socket sock, taking at
// most maxFDs descriptors; flags adds to MSG_CMSG_CLOEXEC (MSG_DONTWAIT,
// say). A message with more descriptors is [ErrTruncated]. On any error
// no descriptor is left open.
func Recv(sock int, buf []byte, maxFDs, flags int) (n int, fds []int, err error) {
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	var oobn, mflags int
	err = sys.Retry(func() (err error) {
		n, oobn, mflags, _, err = unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC|flags)
		return err
	})
	if err != nil {
		return 0, nil, os.NewSyscallError("recvmsg", err)
	}
	fds, err = Rights(oob[:oobn])
	if err == nil && mflags&unix.MSG_CTRUNC != 0 {
		Close(fds)
		fds, err = nil, ErrTruncated
	}
	return n, fds, err
}

// Rights returns every descriptor that SCM_RIGHTS messages in oob carry,
// skipping messages of other types. On error it closes those it found.
func Rights(oob []byte) ([]int, error) {
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
			Close(fds)
			return nil, fmt.Errorf("cmsg: parse rights: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Close closes every descriptor in fds.
func Close(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
