package supervisor

import "os/exec"

// A startHook extends how every generation starts, each capability in its
// own file (interception, privilege drop). Hooks run on the run loop.
type startHook interface {
	// before may add descriptors after the listeners (cmd.ExtraFiles),
	// environment and SysProcAttr settings to generation id's command.
	before(id int, cmd *exec.Cmd) error
	// after runs once the process is running, with g.pid known; it may
	// start goroutines owned by s.wg that end when g exits. abort undoes
	// before when the process could not start.
	after(g *gen)
	abort(id int)
}
