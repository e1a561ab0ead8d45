package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// credentialHook runs every generation as another user: os/exec calls
// setgroups (Credential.Groups), setgid and setuid in the child before it
// execs the shim. hotswap binds first and keeps its own identity, so the
// listeners, the pidfile and the control socket stay its own. The child
// gets no ambient capabilities: execve as a non-root uid clears the
// permitted and effective sets.
//
// The notify socket of --ready notify lives in the run directory, which
// os.MkdirTemp makes 0700 and owned by hotswap: a child of another uid
// could neither reach nor write to it. before opens the directory for
// search only (0711: names cannot be listed) and gives the generation's
// own socket to its uid; the sockets of other generations stay hotswap's.
type credentialHook struct{ cred *syscall.Credential }

func newCredentialHook(c *syscall.Credential) *credentialHook { return &credentialHook{cred: c} }

func (h *credentialHook) before(id int, cmd *exec.Cmd) error {
	cmd.SysProcAttr.Credential = h.cred
	if path, ok := notifyPath(cmd.Env); ok {
		if err := h.shareNotify(path); err != nil {
			return fmt.Errorf("notify socket for uid %d: %w", h.cred.Uid, err)
		}
	}
	return nil
}

func (h *credentialHook) after(g *gen) {}
func (h *credentialHook) abort(id int) {}

// shareNotify lets the generation's uid connect to its notify socket: the
// run directory is opened without following a link and made searchable
// through its descriptor, and the socket, 0600, is given to that uid by
// name in that directory, which only hotswap can write.
func (h *credentialHook) shareNotify(path string) error {
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return os.NewSyscallError("open", err)
	}
	defer unix.Close(fd)
	if err := sys.Retry(func() error { return unix.Fchmod(fd, 0o711) }); err != nil {
		return os.NewSyscallError("fchmod", err)
	}
	err = sys.Retry(func() error {
		return unix.Fchownat(fd, filepath.Base(path), int(h.cred.Uid), int(h.cred.Gid), unix.AT_SYMLINK_NOFOLLOW)
	})
	return os.NewSyscallError("fchownat", err)
}

// notifyPath is NOTIFY_SOCKET in env when it names a file (not an
// abstract socket).
func notifyPath(env []string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], fdpass.NotifySocket+"="); ok {
			return v, strings.HasPrefix(v, "/")
		}
	}
	return "", false
}

// ParseCredential resolves --user and --group, each a name or a number;
// nil when neither is given. Only root can switch users.
func ParseCredential(userName, group string) (*syscall.Credential, error) {
	if userName == "" && group == "" {
		return nil, nil
	}
	if userName == "" {
		// setgid alone leaves the generation uid 0 with every capability.
		return nil, fmt.Errorf("--group %s without --user: the generation would still run as uid %d with every capability (add --user NAME|UID; --group then replaces its primary group)", group, os.Geteuid())
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("--user and --group: hotswap runs as uid %d and cannot switch users (run it as root)", os.Geteuid())
	}
	c := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if userName != "" {
		u, err := lookupUser(userName)
		if err != nil {
			return nil, fmt.Errorf("--user %s: %w", userName, err)
		}
		c.Uid, c.Gid = u.uid, u.gid
		if c.Groups, err = u.groups(); err != nil {
			return nil, fmt.Errorf("--user %s: supplementary groups: %w", userName, err)
		}
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("--group %s: %w", group, err)
		}
		c.Gid = gid
	}
	if len(c.Groups) == 0 {
		c.Groups = []uint32{c.Gid} // never keep root's supplementary groups
	}
	return c, nil
}

func atou32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
