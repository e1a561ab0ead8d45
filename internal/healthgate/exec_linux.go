package healthgate

import (
	"errors"
	"os"
	"os/exec"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// ownProcessGroup puts cmd in a new process group and makes cancelling it
// kill the whole group, so that `sh -c` probes leave nothing behind.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		killProcessGroup(cmd)
		return nil
	}
}

// killProcessGroup sends SIGKILL to cmd's process group. os/exec calls
// Cancel before it reaps the leader, so the group id still names it.
func killProcessGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	err := sys.Retry(func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) })
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return os.NewSyscallError("kill", err)
	}
	return nil
}
