package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
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
// canary at weight 0 beside the current one. It returns like Reload. With
// a worker pool the canary runs workers processes (0: as many as the pool,
// at most that); SetWeight's share is split between them, the rest between
// the current pool's, and Promote rolls the pool to the canary.
func (s *Supervisor) ReloadHold(ctx context.Context, workers int) error {
	return s.reload(ctx, true, workers)
}

// checkHold refuses a held reload's canary size that does not fit.
func (s *Supervisor) checkHold(r reloadReq) error {
	switch {
	case r.workers < 0:
		return fmt.Errorf("canary of %d workers: want 1 or more; nothing was started", r.workers)
	case r.workers > 0 && !r.hold:
		return errors.New("a number of canary workers goes with a held reload only; nothing was started")
	case r.workers > s.workers():
		return fmt.Errorf("canary of %d workers: the pool has %d (--workers), a canary at most that many; nothing was started", r.workers, s.workers())
	}
	return nil
}

// SetWeight sends pct percent of new connections to the canary.
func (s *Supervisor) SetWeight(ctx context.Context, pct int) error {
	if pct < 0 || pct > 100 {
		return fmt.Errorf("weight %d: want 0 to 100", pct)
	}
	return s.call(ctx, func() error {
		if len(s.canary) == 0 {
			return ErrNoCanary
		}
		was := s.weight
		s.weight = pct
		if err := s.steerCanary(); err != nil {
			s.weight = was
			return err
		}
		s.canary[0].log.Info("canary weight", "percent", pct, "workers", len(s.canary))
		return nil
	})
}

// steerCanary steers new connections between the current generation (or
// pool) and the held canary at its weight, or all to the current one
// when none is held.
func (s *Supervisor) steerCanary() error {
	if s.pool() {
		return s.steer(nil, nil, 0, nil) // poolPolicy adds the canary
	}
	if len(s.canary) > 0 {
		return s.steer(s.canary[0], s.slots[0].current, s.weight, nil)
	}
	return s.steer(s.slots[0].current, nil, 0, nil)
}

// Promote makes the canary the current generation and drains the old one.
// With a worker pool, canary worker i takes slot i at once (the old
// worker i drains); a canary of fewer workers than the pool then rolls
// its generation over the remaining slots one at a time, like a rolling
// reload, and Promote returns when that is done.
func (s *Supervisor) Promote(ctx context.Context) error {
	rolled := make(chan error, 1)
	rolling := false
	err := s.call(ctx, func() error {
		c := s.canary
		if len(c) == 0 {
			return ErrNoCanary
		}
		s.canary, s.weight = nil, 0
		if !s.pool() {
			old := s.slots[0].current
			s.slots[0].current = c[0]
			c[0].state = StateReady
			if err := s.steer(c[0], nil, 0, nil); err != nil {
				return err
			}
			c[0].log.Info("canary promoted")
			if old != nil {
				s.drain(old, true)
			}
			return nil
		}
		for i, g := range c {
			g.state = StateReady
			s.cutover(s.slots[i], g)
		}
		c[0].log.Info("canary promoted", "workers", len(c), "pool", len(s.slots))
		if len(c) < len(s.slots) {
			rolling = true
			s.reloadT0 = time.Now()
			s.waiting = append(s.waiting, reloadReq{reply: rolled})
			s.roll = &rollout{id: c[0].id, next: len(c)}
			s.rollStep()
		}
		return nil
	})
	if err != nil || !rolling {
		return err
	}
	select {
	case err := <-rolled:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rollback sends every new connection back to the current generation and
// drains the canary.
func (s *Supervisor) Rollback(ctx context.Context) error {
	return s.call(ctx, func() error {
		c := s.canary
		if len(c) == 0 {
			return ErrNoCanary
		}
		s.canary, s.weight = nil, 0
		if err := s.steerCanary(); err != nil {
			return err
		}
		c[0].log.Info("canary rolled back", "workers", len(c))
		s.retire(c)
		return nil
	})
}

// holdCanary keeps the freshly ready generation c (its workers, one
// without a pool) beside the current one.
func (s *Supervisor) holdCanary(c []*gen) {
	s.canary, s.weight = c, 0
	for _, g := range c {
		g.state = StateCanary
	}
	if err := s.steerCanary(); err != nil {
		c[0].log.Error("steer to the canary", "error", err)
	}
	c[0].log.Info("canary held", "percent", 0, "workers", len(c))
}

// isCanary reports whether g is a worker of the held canary.
func (s *Supervisor) isCanary(g *gen) bool { return slices.Contains(s.canary, g) }

// canaryExited forgets a canary that exited on its own. A canary pool
// whose worker exited is rolled back whole: its other workers drain.
func (s *Supervisor) canaryExited(g *gen) {
	c := s.canary
	s.canary, s.weight = nil, 0
	if len(c) > 1 {
		g.log.Warn("a canary worker exited: the canary is rolled back, all connections back to the current pool", "worker", g.worker, "workers", len(c))
	} else {
		g.log.Warn("canary exited, all connections back to the current generation")
	}
	if err := s.steerCanary(); err != nil {
		s.log.Error("steer back to the current generation", "error", err)
	}
	s.retire(slices.DeleteFunc(c, func(o *gen) bool { return o == g }))
}

// retire drains gs, steered away from already, one at a time: the next
// once the previous has exited. A group applies departures found together
// in the order of their Remove calls, and two workers that exit at the
// same moment can leave the kernel's group in the other order: the model
// then swaps two spares, and the next Take hands out a socket the program
// does not name (TestWorkersBlueGreen saw a canary's share queue on a
// spare). Reloads wait until every retired worker has exited.
func (s *Supervisor) retire(gs []*gen) {
	s.retiring = append(s.retiring, gs...)
	s.retireNext()
}

// retireNext drains the next retired worker once no generation with
// sockets is draining.
func (s *Supervisor) retireNext() {
	for len(s.retiring) > 0 {
		if s.socketsLeaving() {
			return
		}
		g := s.retiring[0]
		s.retiring = s.retiring[1:]
		if g.state != StateExited {
			s.drain(g, true)
			return
		}
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
