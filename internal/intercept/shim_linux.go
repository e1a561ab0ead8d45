package intercept

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/hotswap-dev/hotswap/internal/cmsg"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// InstallAndSend is the exec shim's side. It must run on a thread locked with
// [runtime.LockOSThread] that then calls [unix.Exec] itself: no_new_privs and
// the filter apply to the calling thread only (no TSYNC), and execve keeps
// exactly that thread. It sets no_new_privs, installs the filter with a new
// notification listener, sends the listener over the unix socket sock
// (SCM_RIGHTS, one data byte) and closes its own copies of the listener and
// of sock, so that the target never holds either.
func InstallAndSend(sock int) (retErr error) {
	defer func() {
		if err := unix.Close(sock); err != nil && retErr == nil {
			retErr = fmt.Errorf("intercept: close socket: %w", os.NewSyscallError("close", err))
		}
	}()
	if errArch != nil {
		return errArch
	}
	nfd, err := install()
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if err := cmsg.Send(sock, []byte{'N'}, nfd); err != nil {
		return fmt.Errorf("intercept: send notification fd: %w", err)
	}
	return nil
}

// install sets no_new_privs and loads the filter on the calling thread,
// returning the notification fd (close-on-exec, as the kernel creates it).
func install() (int, error) {
	err := sys.Retry(func() error { return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
	if err != nil {
		return -1, fmt.Errorf("intercept: set no_new_privs: %w", os.NewSyscallError("prctl", err))
	}
	prog := buildFilter()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	nfd, err := sys.Seccomp(unix.SECCOMP_SET_MODE_FILTER, filterFlags, unsafe.Pointer(&fprog))
	if errors.Is(err, unix.EINVAL) {
		// WAIT_KILLABLE_RECV needs Linux 5.19; without it a non-fatal signal
		// (Go's SIGURG preemption) can interrupt a received notification,
		// which Serve tolerates as ENOENT and the child restarts the call.
		nfd, err = sys.Seccomp(unix.SECCOMP_SET_MODE_FILTER, filterFlags&^unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, unsafe.Pointer(&fprog))
	}
	runtime.KeepAlive(prog)
	switch {
	case errors.Is(err, unix.EBUSY):
		return -1, ErrNested
	case err != nil:
		return -1, fmt.Errorf("intercept: install seccomp filter: %w", err)
	}
	return nfd, nil
}
