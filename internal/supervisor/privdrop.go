package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/healthgate"
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

// shareNotify lets the generation's uid connect to its notify socket.
func (h *credentialHook) shareNotify(path string) error {
	if err := os.Chmod(filepath.Dir(path), 0o711); err != nil {
		return err
	}
	return os.Chown(path, int(h.cred.Uid), int(h.cred.Gid))
}

// notifyPath is NOTIFY_SOCKET in env when it names a file (not an
// abstract socket).
func notifyPath(env []string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], healthgate.NOTIFY_SOCKET+"="); ok {
			return v, strings.HasPrefix(v, "/")
		}
	}
	return "", false
}
