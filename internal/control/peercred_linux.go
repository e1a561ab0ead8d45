package control

import (
	"fmt"
	"net"
	"os"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// peerCred reads the credentials the kernel recorded for conn's peer when
// it connected (SO_PEERCRED), which the peer cannot forge.
func peerCred(conn *net.UnixConn) (peer, error) {
	var cred *unix.Ucred
	err := sys.Control(conn, func(fd int) error {
		return os.NewSyscallError("getsockopt SO_PEERCRED", sys.Retry(func() (err error) {
			cred, err = unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
			return err
		}))
	})
	if err != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid)}, nil
}
