package supervisor

import (
	"context"
	"syscall"
)

// procs is how the run loop reaches processes and their readiness gates:
// it starts a generation (with its sockets), waits for its gate, stops it
// and signals it. A generation's exit reaches the loop as an event
// (Supervisor.reaped). The run loop's own state (doc.go) depends on
// nothing else, so in-process tests drive it with a fake procs and
// testing/synctest's clock; osProcs is the real one.
type procs interface {
	// start starts worker w (0 without a pool) of generation id; a crash
	// restart passes the crashed generation's {file:PATH} values
	// (argfile.go).
	start(id, w int, files argFiles) (*gen, error)
	ready(ctx context.Context, g *gen) error
	// stop stops g off the loop (draining its reuseport sockets first
	// with drain) and returns once it has been reaped.
	stop(g *gen, drain bool)
	signal(g *gen, sig syscall.Signal) error
}

// osProcs runs generations as processes through the exec shim.
type osProcs struct{ s *Supervisor }

func (p osProcs) start(id, w int, files argFiles) (*gen, error) {
	return p.s.startGen(id, w, files)
}
func (p osProcs) ready(ctx context.Context, g *gen) error { return p.s.waitReady(ctx, g) }
func (p osProcs) stop(g *gen, drain bool)                 { p.s.stop(g, drain) }
func (p osProcs) signal(g *gen, sig syscall.Signal) error { return g.cmd.Process.Signal(sig) }

// reaped records that g's process is gone, with cause (its exit status, or
// why waiting failed), and reports the exit to the run loop.
func (s *Supervisor) reaped(g *gen, cause error) {
	g.cancel(cause)
	g.ready.close()
	close(g.exited)
	select {
	case s.exitc <- g:
	case <-s.done: // stopAll waits on g.exited instead
	}
}
