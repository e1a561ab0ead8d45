package supervisor

import (
	"context"
	"errors"
	"fmt"
)

// Blue/green in reuseport mode: [Supervisor.ReloadHold] starts and gates a
// new generation like a reload, then holds it as a canary beside the
// current one instead of cutting over. [Supervisor.SetWeight] sends a share
// of new connections to it (chosen per connection by the steering
// program), [Supervisor.Promote] finishes the cutover and drains the old
// generation, and [Supervisor.Rollback] sends everything back and drains
// the canary. A held canary starts at weight 0.

// StateCanary is a ready generation held beside the current one.
const StateCanary State = "canary"

// ErrNoCanary is returned by SetWeight, Promote and Rollback when no
// generation is held.
var ErrNoCanary = errors.New("supervisor: no canary generation is held (start one with a held reload)")

// errNeedsReusePort refuses blue/green in shared mode, where the kernel
// cannot split connections between generations.
var errNeedsReusePort = errors.New("blue/green needs --mode reuseport: in shared mode every generation takes connections from one queue")

// ReloadHold starts a new generation and, once it is ready, holds it as a
// canary at weight 0 beside the current one. It returns like Reload.
func (s *Supervisor) ReloadHold(ctx context.Context) error {
	return s.reload(ctx, true)
}

// SetWeight sends pct percent of new connections to the canary.
func (s *Supervisor) SetWeight(ctx context.Context, pct int) error {
	if pct < 0 || pct > 100 {
		return fmt.Errorf("weight %d: want 0 to 100", pct)
	}
	return s.call(ctx, func() error {
		if s.canary == nil {
			return ErrNoCanary
		}
		if err := s.steer(s.canary, s.slots[0].current, pct, nil); err != nil {
			return err
		}
		s.weight = pct
		s.canary.log.Info("canary weight", "percent", pct)
		return nil
	})
}

// Promote makes the canary the current generation and drains the old one.
func (s *Supervisor) Promote(ctx context.Context) error {
	return s.call(ctx, func() error {
		c := s.canary
		if c == nil {
			return ErrNoCanary
		}
		old := s.slots[0].current
		s.slots[0].current, s.canary, s.weight = c, nil, 0
		c.state = StateReady
		if err := s.steer(c, nil, 0, nil); err != nil {
			return err
		}
		c.log.Info("canary promoted")
		if old != nil {
			s.drain(old, true)
		}
		return nil
	})
}

// Rollback sends every new connection back to the current generation and
// drains the canary.
func (s *Supervisor) Rollback(ctx context.Context) error {
	return s.call(ctx, func() error {
		c := s.canary
		if c == nil {
			return ErrNoCanary
		}
		s.canary, s.weight = nil, 0
		if err := s.steer(s.slots[0].current, nil, 0, nil); err != nil {
			return err
		}
		c.log.Info("canary rolled back")
		s.drain(c, true)
		return nil
	})
}

// holdCanary keeps the freshly ready generation g beside the current one.
func (s *Supervisor) holdCanary(g *gen) {
	s.canary, s.weight = g, 0
	g.state = StateCanary
	if err := s.steer(g, s.slots[0].current, 0, nil); err != nil {
		g.log.Error("steer to the canary", "error", err)
	}
	g.log.Info("canary held", "percent", 0)
}

// canaryExited forgets a canary that exited on its own.
func (s *Supervisor) canaryExited(g *gen) {
	s.canary, s.weight = nil, 0
	g.log.Warn("canary exited, all connections back to the current generation")
	if err := s.steer(s.slots[0].current, nil, 0, nil); err != nil {
		s.log.Error("steer back to the current generation", "error", err)
	}
}

type callReq struct {
	fn    func() error
	reply chan error
}

// call runs fn on the run loop.
func (s *Supervisor) call(ctx context.Context, fn func() error) error {
	r := callReq{fn: fn, reply: make(chan error, 1)}
	select {
	case s.callc <- r:
		return <-r.reply
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrStopped
	}
}
