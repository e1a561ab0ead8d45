package fdpass

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hotswap-dev/hotswap/internal/sys"
)

// classify reads SO_TYPE and SO_ACCEPTCONN of an inherited descriptor.
// It works on the raw number because no *os.File may own the descriptor
// before it is known to be one of ours (see classify).
func classify(fd int) (sockKind, error) {
	sotype, err := getsockoptInt(fd, unix.SO_TYPE)
	if errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.EBADF) {
		return kindOther, nil
	}
	if err != nil {
		return kindOther, err
	}
	listening, err := getsockoptInt(fd, unix.SO_ACCEPTCONN)
	switch {
	case err != nil:
		return kindOther, err
	case listening != 0 && (sotype == unix.SOCK_STREAM || sotype == unix.SOCK_SEQPACKET):
		return kindListener, nil
	case sotype == unix.SOCK_DGRAM:
		return kindPacket, nil
	}
	return kindOther, nil
}

func getsockoptInt(fd, opt int) (int, error) {
	v, err := sys.RetryInt(func() (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt) })
	if err != nil {
		return 0, os.NewSyscallError("getsockopt", err)
	}
	return v, nil
}
