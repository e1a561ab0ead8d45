package healthgate

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// NotifySocketMode is the file mode of a NotifySocket's socket file, from
// the umask at bind(2): a sender needs write permission, so only its owner
// can send. A generation of another uid is given its own socket (the
// supervisor's privilege drop), never everyone: a datagram is credited only
// to the pid the kernel vouches for, but one from another local user would
// still become the "last ignored" message a failed gate reports.
const NotifySocketMode os.FileMode = 0o600

// oobSize holds the sender's credentials and the largest SCM_RIGHTS a
// sender may attach (FDSTORE=1); such descriptors are closed unread.
func oobSize() int { return unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(253*4) }

// ListenNotify creates the sd_notify socket for one generation at path, a
// file path that must not exist yet or an abstract address starting with
// "@". The socket is CLOEXEC (so no other child inherits it) and has
// SO_PASSCRED set before its address is handed out, so every datagram
// carries its sender's pid. The caller must Attach the generation's pid
// once it is known and Close the socket when the generation is gone.
func ListenNotify(path string) (_ *NotifySocket, retErr error) {
	var conn *net.UnixConn
	err := sys.WithUmask(NotifySocketMode, func() (err error) {
		conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healthgate: listen notify %s: %w", path, err)
	}
	abstract := strings.HasPrefix(path, "@")
	n := newNotifySocket(path, conn, !abstract)
	defer func() {
		if retErr != nil {
			n.Close()
		}
	}()
	if err := setPassCred(conn); err != nil {
		return nil, fmt.Errorf("healthgate: listen notify %s: %w", path, err)
	}
	n.wg.Go(n.readLoop)
	return n, nil
}

func setPassCred(conn *net.UnixConn) error {
	return sys.Control(conn, func(fd int) error {
		return os.NewSyscallError("setsockopt SO_PASSCRED", sys.Retry(func() error {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		}))
	})
}

func (n *NotifySocket) readLoop() {
	buf := make([]byte, MaxMessageSize+1)
	oob := make([]byte, oobSize())
	for {
		nr, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			n.fail(errNotifyClosed)
			return
		}
		if err != nil {
			n.fail(fmt.Errorf("healthgate: read notify socket %s: %w", n.path, err))
			return
		}
		pid, cerr := credentials(oob[:noob])
		switch {
		case flags&unix.MSG_TRUNC != 0 || nr > MaxMessageSize:
			cerr = fmt.Errorf("datagram over %d bytes", MaxMessageSize)
		case flags&unix.MSG_CTRUNC != 0:
			cerr = errors.New("control data truncated")
		}
		n.receive(pid, buf[:nr], cerr)
	}
}

// credentials returns the sender's pid and closes any descriptors the
// datagram carried.
func credentials(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, os.NewSyscallError("parse control message", err)
	}
	pid, nfds := 0, 0
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(cred.Pid)
			}
		case unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				// Received with MSG_CMSG_CLOEXEC; not ours to keep.
				os.NewFile(uintptr(fd), "notify-fd").Close()
			}
			nfds += len(fds)
		}
	}
	if nfds > 0 {
		return pid, fmt.Errorf("%d descriptors attached (fd store is not supported)", nfds)
	}
	if pid == 0 {
		return 0, errors.New("no sender credentials")
	}
	return pid, nil
}
