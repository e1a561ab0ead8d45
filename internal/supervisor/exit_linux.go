package supervisor

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// awaitExit returns once child pid has exited, leaving it unreaped for
// cmd.Wait, which then returns at once. cmd.Wait alone blocks a thread in
// waitid(2) for as long as the child runs: a thread for each live
// generation, two during a reload, and the runtime hands the P of each to
// yet another thread. A pidfd waited on by the runtime's netpoller holds
// no thread. Without pidfds (Linux before 5.3) it returns at once and
// cmd.Wait blocks as before.
func awaitExit(pid int) {
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		waitExit(fd, -1)
	}
}

// waitExit waits up to d (without limit when d < 0) for the process of
// pidfd fd to exit, on the netpoller, and closes fd. It reports whether
// the process exited.
func waitExit(fd int, d time.Duration) bool {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: on the netpoller
	defer f.Close()
	if d >= 0 {
		if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
			return false
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	rc.Read(func(fd uintptr) bool {
		// A pidfd is readable once its process has exited.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		exited = err == nil && n > 0
		return exited
	})
	return exited
}

// treeGone reports whether nothing of g's can still hold a socket it was
// given: g has exited, it ran no container (whose processes are conmon's,
// not g's), and no process is left in its process group (every
// generation has one of its own, Setpgid): kill(-pgid, 0) finds none. A
// descendant that left the group (setsid, or a daemon's double fork) is
// not seen; one that stayed, and any doubt (EPERM), counts as alive.
func (g *gen) treeGone() bool {
	if g.ctr != nil || g.pid <= 0 {
		return false
	}
	return unix.Kill(-g.pid, 0) == unix.ESRCH
}
