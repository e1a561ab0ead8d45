package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/sys"
)

// A worker pool (--workers N) runs each generation as N processes of the
// command. Worker i of every generation has slot i: in reuseport mode its
// own socket per TCP listener, its own readiness, its own crash restart.
// The steering program splits new connections between the slots' ready
// workers (evenly, or to the worker pinned to the SYN's CPU with
// --cpu-affinity). A reload replaces the pool one slot at a time
// (RolloutRolling: start worker i of the new generation, gate it, steer
// slot i to it, drain and stop the old worker i, then i+1) or all at once
// (RolloutAll: start every new worker, gate them one by one, then cut over
// and drain every slot). Without a pool there is one slot.

// Rollout is how a reload replaces a worker pool.
type Rollout string

const (
	RolloutRolling Rollout = "rolling" // one worker at a time
	RolloutAll     Rollout = "all"     // the whole pool at once
)

// ParseRollout accepts "rolling" and "all".
func ParseRollout(s string) (Rollout, error) {
	switch Rollout(s) {
	case RolloutRolling, RolloutAll:
		return Rollout(s), nil
	}
	return "", fmt.Errorf("rollout %q: want rolling or all", s)
}

// slot is one worker's place in the pool: the worker serving it, the one
// a reload is gating for it, and its crash restart.
type slot struct {
	i       int
	current *gen // the worker serving the slot, or nil after a crash
	pending *gen // the worker a reload is gating for the slot
	// restartAt is when the slot's crashed worker is started again (zero:
	// no restart due), after backoff.
	restartAt time.Time
	backoff   time.Duration
	// orphans are listening reuseport members without a worker, per
	// listener: the first ones, then those of a crashed worker; the next
	// worker started in the slot takes them, queue and all.
	orphans []*reuse.Member
	// crashedFiles are the {file:PATH} values of the slot's last worker
	// to crash, for its restart; crashedID its generation.
	crashedFiles argFiles
	crashedID    int
	lastExit     *os.ProcessState
	restarts     int
}

// rollout is the reload in progress: generation id replacing the pool.
type rollout struct {
	id   int
	next int // the next slot to start (rolling) or to gate (all)
	// wait is set while a rolling step waits for the previous slot's old
	// worker to exit.
	wait bool
}

// workers is the pool size, 1 without a pool.
func (s *Supervisor) workers() int { return max(s.cfg.Workers, 1) }

// pool reports whether generations are worker pools of more than one.
func (s *Supervisor) pool() bool { return s.cfg.Workers > 1 }

func (c *Config) validateWorkers() error {
	if c.Workers < 0 {
		return fmt.Errorf("workers %d: want 1 or more", c.Workers)
	}
	if c.Rollout == "" {
		c.Rollout = RolloutRolling
	}
	if _, err := ParseRollout(string(c.Rollout)); err != nil {
		return err
	}
	if c.Workers <= 1 {
		return nil
	}
	if c.Intercept {
		return errors.New("--workers with --intercept: a worker pool needs a socket per worker, which hotswap hands over, not one bound by the command")
	}
	if _, ok, _ := parsePodmanRun(c.Command); ok {
		return errors.New("--workers with podman run: one container per generation only")
	}
	return nil
}

// AllowedCPUs are the CPUs hotswap may run on, in order: worker i of
// --cpu-affinity is pinned to the i-th (round robin).
func AllowedCPUs() ([]int, error) { return sys.AllowedCPUs() }

// AutoWorkers is --workers auto: the CPUs hotswap may run on.
func AutoWorkers() (int, error) {
	cpus, err := AllowedCPUs()
	if err != nil {
		return 0, err
	}
	return len(cpus), nil
}

// cpuOf is the CPU worker i is pinned to with --cpu-affinity, else -1.
func (s *Supervisor) cpuOf(i int) int {
	if !s.cfg.CPUAffinity || len(s.cpus) == 0 {
		return -1
	}
	return s.cpus[i%len(s.cpus)]
}

// startPinned runs start (which forks) on a thread pinned to cpu, so the
// child inherits that affinity from its first instruction: pinning it
// after the fork would miss threads a Go or Java child starts at once.
func startPinned(cpu int, start func() error) error {
	if cpu < 0 {
		return start()
	}
	return sys.OnCPU(cpu, start)
}

// poolPolicy is the steering policy of listener i for the pool: every
// slot's ready worker (or, while none is ready, every slot's worker, so
// clients queue on the first generation's or a restart's sockets), and
// with --cpu-affinity each CPU's worker.
func (s *Supervisor) poolPolicy(i int, probe *gen) reuse.Policy {
	var ws []*gen
	for _, sl := range s.slots {
		if g := sl.current; g != nil && g.state == StateReady {
			ws = append(ws, g)
		}
	}
	if len(ws) == 0 {
		for _, sl := range s.slots {
			if sl.current != nil {
				ws = append(ws, sl.current)
			}
		}
	}
	p := reuse.Policy{Probe: member(probe, i)}
	for _, g := range ws {
		m := member(g, i)
		if m == nil {
			continue
		}
		p.Slots = append(p.Slots, m)
		if s.cfg.CPUAffinity && g.cpu >= 0 {
			for len(p.ByCPU) <= g.cpu {
				p.ByCPU = append(p.ByCPU, nil)
			}
			if p.ByCPU[g.cpu] == nil {
				p.ByCPU[g.cpu] = m
			}
		}
	}
	return p
}

// beginRollout starts replacing the pool with a new generation.
func (s *Supervisor) beginRollout() {
	s.roll = &rollout{id: s.next()}
	if s.cfg.Rollout == RolloutAll {
		for _, sl := range s.slots {
			g, err := s.procs.start(s.roll.id, sl.i, nil)
			if err != nil {
				s.abortRollout(s.reloadError(s.roll.id, 0, err))
				return
			}
			sl.pending = g
			s.live[g.key()] = g
		}
		s.gate(s.slots[0].pending)
		return
	}
	s.rollStep()
}

// rollStep starts the next slot of a rolling reload, once the previous
// slot's old worker has exited (one socket leaves a group at a time), or
// finishes the reload.
func (s *Supervisor) rollStep() {
	r := s.roll
	if s.drainingSockets() {
		r.wait = true
		return
	}
	r.wait = false
	if r.next == len(s.slots) {
		s.roll = nil
		s.log.Info("reload succeeded", "gen", r.id, "workers", len(s.slots))
		s.finishReload(nil)
		return
	}
	sl := s.slots[r.next]
	g, err := s.procs.start(r.id, sl.i, nil)
	if err != nil {
		s.abortRollout(s.reloadError(r.id, 0, err))
		return
	}
	sl.pending = g
	s.gate(g)
}

// onPoolGate is a gate's outcome for a worker a reload started.
func (s *Supervisor) onPoolGate(sl *slot, g *gen, err error) {
	r := s.roll
	if err != nil {
		s.abortRollout(s.reloadError(g.id, g.pid, fmt.Errorf("worker %d: %w", sl.i, err)))
		return
	}
	s.markReady(g)
	if s.cfg.Rollout == RolloutAll {
		r.next++
		if r.next < len(s.slots) {
			// One gate at a time: a probe of the public port reaches
			// exactly the worker being gated.
			s.gate(s.slots[r.next].pending)
			return
		}
		for _, o := range s.slots {
			s.cutover(o, o.pending)
		}
		s.roll = nil
		s.log.Info("reload succeeded", "gen", r.id, "workers", len(s.slots), "after", time.Since(s.reloadT0))
		s.finishReload(nil)
		return
	}
	s.cutover(sl, g)
	r.next++
	s.rollStep()
}

// cutover makes g the worker of sl, steers to it and drains the old one.
func (s *Supervisor) cutover(sl *slot, g *gen) {
	old := sl.current
	sl.current, sl.pending = g, nil
	if err := s.steer(g, nil, 0, nil); err != nil {
		g.log.Error("cutover", "error", err)
	}
	if old != nil {
		s.drain(old, true)
	}
	s.relayOrphans(sl)
}

// abortRollout stops a reload: the workers it started that are not
// serving yet are stopped; those already serving their slot stay, so
// every slot keeps a serving worker. err says which.
func (s *Supervisor) abortRollout(err *ReloadError) {
	s.roll = nil
	for _, sl := range s.slots {
		if g := sl.pending; g != nil {
			sl.pending = nil
			s.drain(g, false)
		}
		if sl.current == nil && sl.restartAt.IsZero() {
			s.scheduleRestart(sl, 0)
		}
	}
	if err2 := s.steer(nil, nil, 0, nil); err2 != nil {
		s.log.Error("steer back to the serving workers", "error", err2)
	}
	s.finishReload(err)
}

// poolServing says which generation serves each slot, for a reload error:
// "workers 0-1 serve generation 5, worker 2 generation 4".
func (s *Supervisor) poolServing() string {
	var parts []string
	for i := 0; i < len(s.slots); {
		id := s.slotGen(i)
		j := i + 1
		for j < len(s.slots) && s.slotGen(j) == id {
			j++
		}
		who := "worker " + strconv.Itoa(i)
		if j-i > 1 {
			who = fmt.Sprintf("workers %d-%d", i, j-1)
		}
		if id == 0 {
			parts = append(parts, who+" restarting")
		} else {
			parts = append(parts, fmt.Sprintf("%s generation %d", who, id))
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

func (s *Supervisor) slotGen(i int) int {
	if g := s.slots[i].current; g != nil && g.state == StateReady {
		return g.id
	}
	return 0
}

// slotOf is the slot g belongs to.
func (s *Supervisor) slotOf(g *gen) *slot { return s.slots[g.worker] }

// armRestart arms the restart timer for the earliest slot restart due.
func (s *Supervisor) armRestart() {
	if s.restart != nil {
		s.restart.Stop()
		s.restart = nil
	}
	var at time.Time
	for _, sl := range s.slots {
		if !sl.restartAt.IsZero() && (at.IsZero() || sl.restartAt.Before(at)) {
			at = sl.restartAt
		}
	}
	if !at.IsZero() {
		s.restart = time.NewTimer(time.Until(at))
	}
}
