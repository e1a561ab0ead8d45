package supervisor

import (
	"errors"
	"os/exec"
)

// interceptHook hands each generation's bind() on a supervised address the
// supervisor's socket; see package intercept.
type interceptHook struct{ s *Supervisor }

func newInterceptHook(s *Supervisor) (*interceptHook, error) {
	return nil, errors.New("--intercept is not implemented yet")
}

func (h *interceptHook) before(id int, cmd *exec.Cmd) error { return nil }
func (h *interceptHook) after(g *gen)                       {}
func (h *interceptHook) abort(id int)                       {}
