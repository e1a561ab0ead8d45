package supervisor

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
	rc, err := conn.SyscallConn()
	if err != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = sys.Retry(func() (err error) {
			cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			return err
		})
	})
	if err == nil {
		err = os.NewSyscallError("getsockopt SO_PEERCRED", serr)
	}
	if err != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid)}, nil
}
