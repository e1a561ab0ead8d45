package sys

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// WithUmask runs fn with umask 0777&^mode on a thread whose umask no other
// thread shares; mode 0 runs fn with the process's umask.
func WithUmask(mode os.FileMode, fn func() error) error {
	if mode == 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, with its own umask, exits with
		// this goroutine instead of running others.
		runtime.LockOSThread()
		if err := Retry(func() error { return unix.Unshare(unix.CLONE_FS) }); err != nil {
			errc <- os.NewSyscallError("unshare CLONE_FS", err)
			return
		}
		unix.Umask(int(0o777 &^ mode.Perm()))
		errc <- fn()
	}()
	return <-errc
}
