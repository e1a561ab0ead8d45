package intercept

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Handshake is the supervisor's half of one generation's shim handshake
// (see the protocol in the package doc): a socketpair whose other end the
// exec shim gets as an extra descriptor, named in fdpass.InterceptFDEnv;
// [ShimPrepare] is the shim's half.
type Handshake struct {
	ours, theirs *os.File
}

// NewHandshake makes the socketpair of a generation about to start as cmd
// and hands its end to the shim: the next of cmd.ExtraFiles, with its
// number in cmd.Env. name labels the descriptors.
func NewHandshake(cmd *exec.Cmd, name string) (*Handshake, error) {
	var fds [2]int
	err := sys.Retry(func() (err error) {
		fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("intercept socketpair: %w", os.NewSyscallError("socketpair", err))
	}
	h := &Handshake{
		ours:   os.NewFile(uintptr(fds[0]), "intercept-"+name),
		theirs: os.NewFile(uintptr(fds[1]), "intercept-shim-"+name),
	}
	cmd.Env = append(cmd.Env, fdpass.InterceptFDEnv+"="+strconv.Itoa(fdpass.FirstFD+len(cmd.ExtraFiles)))
	cmd.ExtraFiles = append(cmd.ExtraFiles, h.theirs)
	return h, nil
}

// Started closes the shim's end once the process started with it: the
// shim has its own copy, and a shim that exits without sending then makes
// Receive fail at once.
func (h *Handshake) Started() { h.theirs.Close() }

// Receive waits for the notification fd the shim sends, until ctx is done.
func (h *Handshake) Receive(ctx context.Context) (*os.File, error) { return Receive(ctx, h.ours) }

// Close closes both ends.
func (h *Handshake) Close() {
	h.ours.Close()
	h.theirs.Close()
}

// ShimPrepare is the shim's half of the handshake, for fdpass.RunShim: it
// runs on the thread that will exec the target and, when the supervisor
// asked for interception (fdpass.InterceptFDEnv), installs the seccomp
// filter there and sends its notification fd ([InstallAndSend]).
func ShimPrepare() error {
	v, ok := os.LookupEnv(fdpass.InterceptFDEnv)
	if !ok {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < fdpass.FirstFD {
		return fmt.Errorf("%s=%q is not a descriptor number", fdpass.InterceptFDEnv, v)
	}
	err = InstallAndSend(fd)
	if errors.Is(err, ErrNested) {
		return fmt.Errorf("intercept binds: the command already runs under a seccomp notification listener (hotswap --intercept or a sandbox above it), which cannot be nested: %w", err)
	}
	if err != nil {
		return fmt.Errorf("intercept binds: %w", err)
	}
	return nil
}
