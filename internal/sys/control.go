package sys

import "syscall"

// Control runs fn with c's raw descriptor, inside SyscallConn().Control so
// the descriptor stays valid and Go's poller keeps its O_NONBLOCK setting
// (Fd would switch the shared description to blocking). It returns the
// error of Control or, failing that, of fn.
func Control(c syscall.Conn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
