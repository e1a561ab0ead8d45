package healthgate

import (
	"os"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// reuseAddrControl sets SO_REUSEADDR on a probe socket before bind, then
// runs control.
func reuseAddrControl(control func(network, address string, c syscall.RawConn) error) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = sys.Retry(func() error {
				return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			})
		})
		if err == nil && serr != nil {
			err = os.NewSyscallError("setsockopt SO_REUSEADDR", serr)
		}
		if err == nil && control != nil {
			err = control(network, address, c)
		}
		return err
	}
}
