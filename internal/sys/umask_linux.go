package sys

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// WithUmask runs fn with umask 0777&^mode on a thread whose umask no other
// thread shares; mode 0 runs fn with the process's umask.
//
// The thread is unlocked afterwards, with the umask it had, rather than
// left to exit with a locked goroutine: a generation started with
// Pdeathsig gets SIGKILL when the thread that forked it exits, and this
// goroutine may run on such a thread. It keeps its own copy of the
// filesystem attributes (umask, working and root directory), the same as
// every other thread's, since hotswap never changes them after start.
func WithUmask(mode os.FileMode, fn func() error) error {
	if mode == 0 {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := Retry(func() error { return unix.Unshare(unix.CLONE_FS) }); err != nil {
		return os.NewSyscallError("unshare CLONE_FS", err)
	}
	old := unix.Umask(int(0o777 &^ mode.Perm()))
	defer unix.Umask(old)
	return fn()
}
