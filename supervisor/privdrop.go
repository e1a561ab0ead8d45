package supervisor

import (
	"os/exec"
	"syscall"
)

// credentialHook runs every generation as another user.
type credentialHook struct{ cred *syscall.Credential }

func newCredentialHook(c *syscall.Credential) *credentialHook { return &credentialHook{cred: c} }

func (h *credentialHook) before(id int, cmd *exec.Cmd) error {
	cmd.SysProcAttr.Credential = h.cred
	return nil
}
func (h *credentialHook) after(g *gen) {}
func (h *credentialHook) abort(id int) {}
