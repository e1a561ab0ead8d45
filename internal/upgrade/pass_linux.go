package upgrade

import (
	"errors"
	"fmt"
	"os"

	"github.com/hotswap-dev/hotswap/internal/cmsg"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// maxKey bounds a hand-over message: a listener's key.
const maxKey = 4096

// passer is the socketpair on which a hotswap queues the reuseport members
// it hands over: one message per member, its key as data and the socket
// as SCM_RIGHTS. theirs is registered with tableflip, so the next hotswap
// inherits it and reads the queue at start; this hotswap keeps its own
// copy of theirs too, to close what a failed successor did not take.
type passer struct {
	ours, theirs *os.File
}

func newPasser() (*passer, error) {
	var fds [2]int
	err := sys.Retry(func() (err error) {
		fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hand-over socket: %w", os.NewSyscallError("socketpair", err))
	}
	return &passer{
		ours:   os.NewFile(uintptr(fds[0]), "handover"),
		theirs: os.NewFile(uintptr(fds[1]), "handover-next"),
	}, nil
}

// send queues f under key. The queue holds its own reference to the
// socket, so the caller may close f.
func (p *passer) send(key string, f *os.File) error {
	return sys.Control(p.ours, func(s int) error {
		return sys.Control(f, func(fd int) error { return cmsg.Send(s, []byte(key), fd) })
	})
}

// drain closes every member still queued.
func (p *passer) drain() {
	m, _ := receive(p.theirs)
	for _, f := range m {
		f.Close()
	}
}

func (p *passer) close() {
	if p != nil {
		p.ours.Close()
		p.theirs.Close()
	}
}

// receive takes every queued member from f, the receiving end, by key.
func receive(f *os.File) (map[string]*os.File, error) {
	got := map[string]*os.File{}
	buf := make([]byte, maxKey)
	err := sys.Control(f, func(s int) error {
		for {
			n, fds, err := cmsg.Recv(s, buf, 1, unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return nil
			case err != nil:
				return err
			case n == 0 && len(fds) == 0:
				return nil // the other end is closed and the queue empty
			case len(fds) != 1:
				cmsg.Close(fds)
				return fmt.Errorf("hand-over message %q carries %d descriptors, want 1", buf[:n], len(fds))
			}
			k := string(buf[:n])
			if old := got[k]; old != nil {
				old.Close()
			}
			got[k] = os.NewFile(uintptr(fds[0]), k)
		}
	})
	if err != nil {
		for _, f := range got {
			f.Close()
		}
		return nil, err
	}
	return got, nil
}
