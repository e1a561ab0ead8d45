package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// Handing reuseport groups to a new hotswap (a self-upgrade). The kernel
// puts the new hotswap's sockets in the same SO_REUSEPORT groups as this
// one's, and there is one steering program per group, so exactly one
// supervisor may model and steer a group at a time:
//
//  1. [Supervisor.PrepareHandoff], on the old hotswap, refuses unless every
//     group is quiet (one generation serving, nothing starting, held or
//     draining, and only its socket in each group), then freezes the
//     groups (they attach nothing) and refuses reloads. It returns a dup
//     of the serving generation's member per reuseport listener.
//  2. The new hotswap's [Config.Adopt] returns that socket: the new group
//     adopts it at index 0 (reuse.Group.Adopt); its generation 1 gets a
//     new member at index 1, is gated by probes steered to it while
//     clients stay on the adopted member, and takes every client at the
//     cutover. It then closes its copy of the adopted member, before the
//     old generation's final close (docs/kernel.md, "Close order").
//  3. Once the new hotswap serves, [Supervisor.CommitHandoff] makes the old
//     hotswap drain its generation on stop, as a reload does, instead of
//     stopping it at once. The old generation's exit takes its socket out
//     of the group; the new hotswap's [Supervisor.Sync] re-attaches.
//  4. If the upgrade fails, [Supervisor.AbortHandoff] thaws the groups and
//     re-attaches this hotswap's program.

// errUDPHandoff refuses a self-upgrade with UDP groups: the new hotswap's
// sockets would join them beside this one's steering program.
var errUDPHandoff = errors.New("UDP listeners in reuseport mode cannot be handed to a new hotswap yet: this hotswap keeps serving; restart it to upgrade, or run it with --mode shared")

// errHandingOff refuses reloads while a self-upgrade is in progress.
var errHandingOff = errors.New("a self-upgrade is in progress: try again when it is done")

// PrepareHandoff checks that every reuseport group is quiet, freezes them
// and returns, per reuseport listener, a dup of the serving generation's
// socket, for the caller to hand to the new hotswap and then close. With
// no reuseport listener it returns nothing and freezes nothing.
func (s *Supervisor) PrepareHandoff(ctx context.Context) (map[ListenSpec]*os.File, error) {
	files := map[ListenSpec]*os.File{}
	err := s.call(ctx, func() error {
		if s.udp != nil {
			return errUDPHandoff
		}
		if !s.hasGroups() {
			return nil
		}
		if err := s.quiet(); err != nil {
			return err
		}
		for i, l := range s.listeners {
			if !l.reuseport() {
				continue
			}
			f, err := s.slots[0].current.members[i].Dup()
			if err != nil {
				closeAll(files)
				return fmt.Errorf("hand over %s: %w", l.spec, err)
			}
			files[l.spec] = f
		}
		for _, l := range s.listeners {
			if l.reuseport() {
				if err := l.group.Freeze(); err != nil {
					s.log.Warn("close the spare sockets of a reuseport group", "listener", l.spec.Name, "error", err)
				}
			}
		}
		s.handingOff = true
		s.log.Info("reuseport groups frozen for a self-upgrade", "gen", s.slots[0].current.id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// quiet says why the groups cannot be handed over now, if they cannot.
func (s *Supervisor) quiet() error {
	switch {
	case s.handingOff:
		return errHandingOff
	case s.pool():
		return errors.New("self-upgrade with --workers is not supported: the hand-over passes one serving socket per listener")
	case s.slots[0].current == nil || s.slots[0].current.state != StateReady || s.restart != nil:
		return errors.New("no generation is serving: try again when one is ready")
	case s.reloading() || len(s.queued) > 0:
		return errors.New("a reload is in progress: try again when it is done")
	case len(s.canary) > 0:
		return fmt.Errorf("generation %d is held as a canary: promote or roll it back, then try again", s.canary[0].id)
	case s.draining() > 0:
		return fmt.Errorf("%d old generations are still draining: try again when they have exited", s.draining())
	case s.adopting():
		return errors.New("the first generation has not taken over from the previous hotswap yet: try again when it serves")
	}
	s.sync()
	for _, l := range s.listeners {
		if l.reuseport() && l.group.Len() != 1 {
			return fmt.Errorf("listener %s: %d sockets in its reuseport group, want only the serving generation's (an old one is still held open): try again when it has closed", l.spec, l.group.Len())
		}
	}
	return nil
}

// AbortHandoff undoes PrepareHandoff after a failed upgrade: the groups
// attach this hotswap's program again, and reloads are accepted.
func (s *Supervisor) AbortHandoff(ctx context.Context) error {
	return s.call(ctx, func() error {
		if !s.handingOff {
			return nil
		}
		s.handingOff = false
		var errs []error
		for _, l := range s.listeners {
			if l.reuseport() {
				errs = append(errs, l.group.Thaw())
			}
		}
		s.log.Info("reuseport groups thawed: the self-upgrade did not happen")
		return errors.Join(errs...)
	})
}

// CommitHandoff records that a new hotswap serves: the groups stay frozen
// and, when Run's context ends, every generation is drained before its
// stop signal, as the old generation of a reload is.
func (s *Supervisor) CommitHandoff(ctx context.Context) error {
	return s.call(ctx, func() error {
		s.handedOff = true
		return nil
	})
}

// Sync updates every reuseport group's model for sockets that left it,
// such as a previous hotswap's generation that exited, and re-attaches.
func (s *Supervisor) Sync(ctx context.Context) error {
	return s.call(ctx, func() error {
		s.sync()
		return nil
	})
}

// adopt asks Config.Adopt for l's handed-over socket and records it as
// the first member of l's group; nil when there is none.
func (s *Supervisor) adopt(l *listener) (*reuse.Member, error) {
	if !l.reuseport() || s.cfg.Adopt == nil {
		return nil, nil
	}
	f, err := s.cfg.Adopt(l.spec)
	if err != nil || f == nil {
		return nil, err
	}
	m, err := l.group.Adopt(f)
	if err != nil {
		return nil, err
	}
	// Once released, its queue is the previous hotswap's to drain.
	s.previous[m.Inode()] = true
	s.log.Info("adopted the previous hotswap's socket", "listener", l.spec.Name)
	return m, nil
}

// adopting reports whether adopted members still take the clients.
func (s *Supervisor) adopting() bool {
	for _, m := range s.adopted {
		if m != nil {
			return true
		}
	}
	return false
}

// releaseAdopted closes the copies of the adopted members once the first
// generation serves: the old generation's close is then the last one.
func (s *Supervisor) releaseAdopted() {
	s.release(s.adopted, false)
	s.adopted = nil
}

func (s *Supervisor) hasGroups() bool {
	for _, l := range s.listeners {
		if l.reuseport() {
			return true
		}
	}
	return false
}

func closeAll(files map[ListenSpec]*os.File) {
	for k, f := range files {
		f.Close()
		delete(files, k)
	}
}
