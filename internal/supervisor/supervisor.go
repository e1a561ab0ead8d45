package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// ErrStopped is returned to requests that reach a supervisor that has
// stopped or is stopping.
var ErrStopped = errors.New("supervisor: stopped")

// Supervisor runs generations of one command on sockets it owns.
type Supervisor struct {
	cfg   Config
	log   hclog.Logger
	names []string // listener names, in fd order
	hooks []startHook
	udp   *udpSteer // UDP listeners in reuseport mode, or nil (quic.go)
	// podman is set when the command is `podman run` (podman.go).
	podman *podmanHook
	// listeners are the sockets, in fd order; never closed while Run runs.
	listeners []*listener
	// noDirect is set once a generation could not be exec'd directly
	// (startDirect): the later ones start through a shim. Run loop only.
	noDirect bool

	reloadc chan reloadReq
	sigc    chan sigReq
	statusc chan chan Status
	callc   chan callReq
	exitc   chan *gen
	gatec   chan gateResult
	readyc  chan struct{} // closed when the first generation is ready
	boundc  chan struct{} // closed when every listener is bound
	done    chan struct{} // closed when the run loop has returned
	wg      sync.WaitGroup

	procs procs // processes and gates (seam.go)

	// Owned by the run loop.
	nextID int
	// slots are the places of a worker pool (workers.go), one without
	// --workers: the worker serving each, the one a reload gates for it,
	// its crash restart and orphaned sockets.
	slots     []*slot
	roll      *rollout // a worker pool's reload in progress
	starts    int      // workers started, for unique notify socket names
	cpus      []int    // the CPUs hotswap may run on, for --cpu-affinity
	waitDrain bool     // the reload in s.waiting waits for an old generation to stop
	canary    []*gen   // a ready generation's workers held beside current (bluegreen.go)
	retiring  []*gen   // rolled-back canary workers waiting to drain, one at a time (bluegreen.go)
	weight    int      // percent of new connections to the canary
	live      map[genKey]*gen
	waiting   []reloadReq // callers of the reload in progress
	queued    []reloadReq // callers coalesced into the next reload
	everReady bool
	restart   *time.Timer // fires at the earliest slot restart due
	// adopted are the members a previous hotswap handed over, per
	// listener (handoff.go): clients stay on them until generation 1 is
	// ready; then their copies are closed.
	adopted    []*reuse.Member
	handingOff bool   // groups frozen for a self-upgrade (handoff.go)
	handedOff  bool   // a new hotswap took over: drain on stop
	runDir     string // notify sockets
	upstream   string // hotswap's own NOTIFY_SOCKET, if any
	started    time.Time
	stats      counters
	lastFailed string
	reloadT0   time.Time // when the reload in progress began
	// warnedStale are sockets of exited generations found with a queue
	// (steering.go), reported once each.
	warnedStale map[uint64]bool
	// previous are the inodes of adopted sockets, which the previous
	// hotswap's generation drains.
	previous map[uint64]bool
	// relaying are the inodes of sockets whose queue handQueue is
	// relaying (steering.go), written off the loop.
	relaying sync.Map
	// lastCensus is the census of the loop's last pass that read the
	// kernel (members, sync), for the check after the event to use
	// while it still holds; run loop only.
	lastCensus *reuse.Census
}

type counters struct {
	reloadsOK, reloadsFailed, restarts int
	repairs, foreign                   int // steering.go
}

type reloadReq struct {
	hold bool // keep the new generation as a canary (bluegreen.go)
	// workers, with hold, is how many workers the canary of a pool runs
	// (0: as many as the pool).
	workers int
	reply   chan error
}

type sigReq struct {
	sig   syscall.Signal
	reply chan error
}

type gateResult struct {
	g   *gen
	err error
}

// New validates cfg and applies its defaults. It starts nothing.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger.Named("supervisor"),
		reloadc: make(chan reloadReq),
		sigc:    make(chan sigReq),
		statusc: make(chan chan Status),
		callc:   make(chan callReq),
		exitc:   make(chan *gen),
		gatec:   make(chan gateResult),
		readyc:  make(chan struct{}),
		boundc:  make(chan struct{}),
		done:    make(chan struct{}),
		live:    map[genKey]*gen{},

		warnedStale: map[uint64]bool{},
		previous:    map[uint64]bool{},
	}
	s.procs = osProcs{s}
	for i := range s.workers() {
		s.slots = append(s.slots, &slot{i: i})
	}
	if cfg.CPUAffinity {
		cpus, err := AllowedCPUs()
		if err != nil {
			return nil, err
		}
		s.cpus = cpus
	}
	for _, l := range cfg.Listeners {
		s.names = append(s.names, l.Name)
	}
	if !cfg.Intercept {
		s.hooks = append(s.hooks, newBindWatchHook(s))
	}
	s.warnStopSignal()
	if cfg.Intercept {
		h, err := newInterceptHook(s)
		if err != nil {
			return nil, err
		}
		s.hooks = append(s.hooks, h)
	}
	if cfg.Subreaper || os.Getpid() == 1 {
		h, err := newReaper(s)
		if err != nil {
			return nil, err
		}
		s.hooks = append(s.hooks, h)
	}
	if u := newUDPSteer(cfg); u != nil {
		if s.pool() {
			return nil, errors.New("--workers with a UDP listener in reuseport mode: not supported; use --mode shared for it")
		}
		s.udp = u
		s.hooks = append(s.hooks, u)
	}
	if cfg.Credential != nil {
		s.hooks = append(s.hooks, newCredentialHook(cfg.Credential))
	}
	if p, ok, _ := parsePodmanRun(cfg.Command); ok {
		s.podman = newPodmanHook(s, p)
		s.hooks = append(s.hooks, s.podman)
		if !p.isTrue("rm") {
			s.log.Warn("podman run without --rm: every generation that stops leaves its container behind")
		}
	}
	for _, kv := range cfg.Env {
		if v, ok := strings.CutPrefix(kv, fdpass.NotifySocket+"="); ok {
			s.upstream = v
		}
	}
	return s, nil
}

// Listening is closed once every listener is bound, before the first
// generation starts; if binding fails, Run returns the error instead.
func (s *Supervisor) Listening() <-chan struct{} { return s.boundc }

// Ready is closed once the first generation is ready.
func (s *Supervisor) Ready() <-chan struct{} { return s.readyc }

// Done is closed once Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Run binds every listener, starts the first generation and supervises
// generations until ctx is done; then it stops them all (stop signal, drain
// timeout, SIGKILL) and closes the listeners. It returns an error when a
// listener cannot be bound or the first generation never becomes ready.
func (s *Supervisor) Run(ctx context.Context) error {
	s.started = time.Now()
	if err := s.listen(); err != nil {
		close(s.done)
		return err
	}
	defer s.closeListeners()
	dir, err := os.MkdirTemp("", "hotswap-")
	if err != nil {
		close(s.done)
		return fmt.Errorf("make run directory: %w", err)
	}
	s.runDir = dir
	defer os.RemoveAll(dir)
	close(s.boundc)
	err = s.startFirst()
	if err == nil {
		err = s.loop(ctx)
	}
	s.notifyUp("STOPPING=1")
	close(s.done)
	s.stopAll()
	s.wg.Wait()
	for _, r := range append(s.waiting, s.queued...) {
		r.reply <- ErrStopped
	}
	return err
}

func (s *Supervisor) startFirst() error {
	id := s.next()
	for _, sl := range s.slots {
		g, err := s.procs.start(id, sl.i, nil)
		if err != nil {
			return err
		}
		sl.current = g
		s.live[g.key()] = g
	}
	// One gate at a time (onGate gates the next worker): a probe of the
	// public port reaches exactly the worker being gated.
	s.gate(s.slots[0].current)
	s.checkGroups("first generation started")
	return nil
}

func (s *Supervisor) loop(ctx context.Context) error {
	for {
		var restartC <-chan time.Time
		if s.restart != nil {
			restartC = s.restart.C
		}
		var err error
		why := ""
		select {
		case <-ctx.Done():
			s.log.Info("stopping", "cause", context.Cause(ctx))
			return nil
		case r := <-s.reloadc:
			why = "reload"
			s.onReload(r)
		case g := <-s.exitc:
			why = fmt.Sprintf("generation %d exited", g.id)
			err = s.onExit(g)
		case r := <-s.gatec:
			why = fmt.Sprintf("gate of generation %d", r.g.id)
			err = s.onGate(r)
		case <-restartC:
			why = "restart"
			s.onRestart()
		case r := <-s.sigc:
			r.reply <- s.onSignal(r.sig)
		case c := <-s.statusc:
			c <- s.status()
		case r := <-s.callc:
			why = "control request"
			r.reply <- r.fn()
		}
		if err != nil {
			return err
		}
		if why != "" {
			s.checkGroups(why)
		}
	}
}

func (s *Supervisor) next() int {
	s.nextID++
	return s.nextID
}

// Reload starts a new generation and waits until it serves (nil) or was
// rolled back (a *ReloadError). Reloads requested while one is in progress
// are coalesced into one more reload after it.
func (s *Supervisor) Reload(ctx context.Context) error { return s.reload(ctx, false, 0) }

func (s *Supervisor) reload(ctx context.Context, hold bool, workers int) error {
	r := reloadReq{hold: hold, workers: workers, reply: make(chan error, 1)}
	select {
	case s.reloadc <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrStopped
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal forwards sig to the current generation.
func (s *Supervisor) Signal(ctx context.Context, sig syscall.Signal) error {
	r := sigReq{sig: sig, reply: make(chan error, 1)}
	select {
	case s.sigc <- r:
		return <-r.reply
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrStopped
	}
}

// ExitCode is, after Run has returned, the exit status of the last current
// generation (worker 0 of a pool) in shell convention (its code, or
// 128+signal).
func (s *Supervisor) ExitCode() int {
	<-s.done
	sl := s.slots[0]
	if sl.current != nil && sl.current.ps != nil {
		return exitCode(sl.current.ps)
	}
	return exitCode(sl.lastExit)
}

func (s *Supervisor) onReload(r reloadReq) {
	switch {
	case s.handingOff:
		r.reply <- errHandingOff
		return
	case r.hold && s.cfg.Mode != ModeReusePort:
		r.reply <- errNeedsReusePort
		return
	case s.checkHold(r) != nil:
		r.reply <- s.checkHold(r)
		return
	case len(s.canary) > 0:
		r.reply <- fmt.Errorf("generation %d is held as a canary: promote or roll it back first", s.canary[0].id)
		return
	case r.hold && (s.reloading() || s.waitDrain || len(s.queued) > 0):
		r.reply <- errors.New("a reload is in progress: hold a canary after it")
		return
	}
	if s.reloading() || !s.everReady || s.waitDrain {
		s.queued = append(s.queued, r)
		return
	}
	s.waiting = append(s.waiting, r)
	s.beginReload()
}

func (s *Supervisor) beginReload() {
	s.reloadT0 = time.Now()
	if s.drainingSockets() {
		// Reuseport steering names sockets by their place in the group,
		// and the kernel fills a leaving socket's place with the last
		// one. With one old generation leaving at a time the current
		// generation's place stays right until the model catches up;
		// with two, connections can reach the other leaving one. So the
		// reload waits (and later requests coalesce into it) until the
		// old generation has stopped; onExit resumes it.
		if !s.waitDrain {
			s.log.Info("reload waits for the old generation to stop")
		}
		s.waitDrain = true
		return
	}
	if n := s.draining(); n >= s.cfg.MaxDraining {
		s.finishReload(s.reloadError(0, 0, fmt.Errorf("%d old generations are still draining (--max-draining %d); nothing was started", n, s.cfg.MaxDraining)))
		return
	}
	s.notifyUp(reloadingState())
	if s.pool() {
		s.beginRollout()
		return
	}
	g, err := s.procs.start(s.next(), 0, nil)
	if err != nil {
		s.finishReload(s.reloadError(s.nextID, 0, err))
		return
	}
	s.slots[0].pending = g
	s.gate(g)
}

// reloading reports whether a reload has started a generation that is
// not serving yet.
func (s *Supervisor) reloading() bool {
	if s.roll != nil {
		return true
	}
	for _, sl := range s.slots {
		if sl.pending != nil {
			return true
		}
	}
	return false
}

// finishReload answers the callers of the reload that ended and starts the
// coalesced one, if any.
func (s *Supervisor) finishReload(err error) {
	s.cfg.Observer.ReloadDone(s.nextID, time.Since(s.reloadT0), err)
	if err != nil {
		s.stats.reloadsFailed++
		s.lastFailed = err.Error()
		var re *ReloadError
		if errors.As(err, &re) {
			s.log.Error("reload failed", "gen", re.Gen, "pid", re.PID, "reason", re.Err, "still_serving", re.Serving)
		}
	} else {
		s.stats.reloadsOK++
	}
	s.notifyUp(fmt.Sprintf("READY=1\nSTATUS=serving generation %d", s.servingID()))
	for _, r := range s.waiting {
		r.reply <- err
	}
	s.waiting, s.queued = s.queued, nil
	if len(s.canary) > 0 {
		// Reloads asked for while the canary was gated.
		for _, r := range s.waiting {
			r.reply <- fmt.Errorf("generation %d is held as a canary: promote or roll it back first", s.canary[0].id)
		}
		s.waiting = nil
	}
	if len(s.waiting) > 0 {
		s.beginReload()
	}
}

func (s *Supervisor) reloadError(id, pid int, err error) *ReloadError {
	re := &ReloadError{Gen: id, PID: pid, Err: err}
	if c := s.slots[0].current; c != nil && c.state == StateReady {
		re.Serving, re.ServingPID = c.id, c.pid
	}
	if s.pool() {
		re.Pool = s.poolServing()
	}
	return re
}

// gate waits, off the loop, for g to become ready.
func (s *Supervisor) gate(g *gen) {
	s.live[g.key()] = g
	g.gated = true
	// Reuseport mode: clients stay with the current generation, the
	// gate's probes reach g. A first or restarted generation is the
	// current one: clients queue on its sockets (a restart took over the
	// crashed generation's, queue included), never on a draining one's.
	to := s.slots[0].current
	if s.adopting() {
		to = nil // clients stay on the adopted members, the oldest
	}
	if err := s.steer(to, nil, 0, g); err != nil {
		g.log.Error("steer probes to generation", "error", err)
	}
	s.wg.Go(func() {
		err := s.procs.ready(g.ctx, g)
		if err != nil {
			err = gateError(g, err)
		}
		select {
		case s.gatec <- gateResult{g, err}:
		case <-s.done:
		}
	})
}

// gateError says why g did not become ready: it exited, or the gate's
// own error (the timeout with the last probe failure). g.ctx is cancelled
// only by g's exit, before g.exited is closed: a gate whose probe was in
// flight (a {port} request waits on the socket hotswap holds) returns in
// between, and its error is the exit.
func gateError(g *gen, err error) error {
	if g.ctx.Err() != nil {
		return context.Cause(g.ctx)
	}
	if g.watch != nil {
		if h := g.watch.protocolHint(); h != "" {
			return fmt.Errorf("%w: %s", err, h)
		}
	}
	return err
}

func (s *Supervisor) onGate(r gateResult) error {
	g := r.g
	sl := s.slotOf(g)
	if s.pool() {
		return s.onGatePool(sl, g, r.err)
	}
	switch g {
	case sl.pending:
		sl.pending = nil
		if r.err != nil {
			if err := s.steer(sl.current, nil, 0, nil); err != nil {
				g.log.Error("steer back to the current generation", "error", err)
			}
			s.drain(g, false)
			if sl.current == nil {
				s.scheduleRestart(sl, 0)
			}
			s.finishReload(s.reloadError(g.id, g.pid, r.err))
			return nil
		}
		s.markReady(g)
		if len(s.waiting) > 0 && s.waiting[0].hold {
			s.holdCanary([]*gen{g})
			s.finishReload(nil)
			return nil
		}
		// The current generation crashed during this reload's gate: what
		// waits on its sockets goes to the new one (cutover).
		s.cutover(sl, g)
		g.log.Info("reload succeeded", "after", g.readyAt.Sub(g.started))
		s.finishReload(nil)
	case sl.current:
		if r.err != nil {
			if !s.everReady {
				return firstNotReady(g, r.err)
			}
			g.log.Error("restarted generation not ready, stopping it", "reason", r.err)
			s.drain(g, false)
			return nil
		}
		s.markReady(g)
		if err := s.steer(g, nil, 0, nil); err != nil {
			g.log.Error("steer to the generation", "error", err)
		}
		s.releaseAdopted()
		s.firstReady(g)
	}
	return nil
}

// onGatePool is a gate's outcome for a worker of a pool: one a reload
// started, or a first or restarted one.
func (s *Supervisor) onGatePool(sl *slot, g *gen, err error) error {
	switch g {
	case sl.pending:
		s.onPoolGate(sl, g, err)
	case sl.current:
		if err != nil {
			if !s.everReady {
				return firstNotReady(g, err)
			}
			g.log.Error("restarted worker not ready, stopping it", "worker", sl.i, "reason", err)
			s.drain(g, false)
			return nil
		}
		s.markReady(g)
		if err := s.steer(nil, nil, 0, nil); err != nil {
			g.log.Error("steer to the worker", "error", err)
		}
		if !s.everReady {
			for _, o := range s.slots {
				if o.current != nil && !o.current.gated {
					s.gate(o.current)
					return nil
				}
			}
			s.firstReady(g)
		}
	}
	return nil
}

// firstReady marks hotswap ready once the first generation (every worker
// of it) is.
func (s *Supervisor) firstReady(g *gen) {
	if s.everReady {
		return
	}
	s.everReady = true
	close(s.readyc)
	s.notifyUp(fmt.Sprintf("READY=1\nSTATUS=serving generation %d", g.id))
	if len(s.queued) > 0 {
		s.waiting, s.queued = s.queued, nil
		s.beginReload()
	}
}

// drainingSockets reports whether a generation with reuseport sockets
// of its own is being stopped and has not exited yet, or a rolled-back
// canary worker waits to be (retire).
func (s *Supervisor) drainingSockets() bool {
	return len(s.retiring) > 0 || s.socketsLeaving()
}

// socketsLeaving reports whether a generation with reuseport sockets is
// draining.
func (s *Supervisor) socketsLeaving() bool {
	for _, g := range s.live {
		if g.state == StateDraining && g.members != nil {
			return true
		}
	}
	return false
}

// draining counts the generations being stopped (a pool's workers count
// as their generation).
func (s *Supervisor) draining() int {
	ids := map[int]bool{}
	for _, g := range s.live {
		if g.state == StateDraining {
			ids[g.id] = true
		}
	}
	return len(ids)
}

// servingID is the generation serving (worker 0's in a pool), or 0.
func (s *Supervisor) servingID() int {
	if c := s.slots[0].current; c != nil {
		return c.id
	}
	return 0
}

func (s *Supervisor) markReady(g *gen) {
	g.state = StateReady
	g.readyAt = time.Now()
	g.log.Info("generation ready", "after", g.readyAt.Sub(g.started))
}

// drain stops g off the loop, after draining its reuseport sockets when
// wait is set; its exit arrives as an event.
func (s *Supervisor) drain(g *gen, wait bool) {
	if g.state == StateDraining || g.state == StateExited {
		return
	}
	g.state = StateDraining
	s.wg.Go(func() { s.procs.stop(g, wait) })
}

// canaryTakesOver reports whether a held canary replaces a current
// generation that dies. A pool's crashed worker is restarted instead,
// beside the canary.
func (s *Supervisor) canaryTakesOver() bool { return len(s.canary) > 0 && !s.pool() }

func (s *Supervisor) onExit(g *gen) error {
	members := g.members
	delete(s.live, g.key())
	sl := s.slotOf(g)
	prev := g.state
	g.state = StateExited
	up := time.Since(g.started)
	g.log.Info("generation exited", "status", describeExit(g.ps), "up", up.Round(time.Millisecond))
	if g == sl.current && prev != StateDraining {
		if !s.canaryTakesOver() {
			// Its sockets stay open and keep their queues for the restart.
			s.leaveMembers(g, false, func(ms []*reuse.Member) { sl.orphans = ms })
		} else {
			// The canary takes over below: what waits in the dead
			// generation's queues is handed to it.
			s.leaveMembers(g, false, func(ms []*reuse.Member) {
				for i, m := range ms {
					if m != nil {
						s.handQueue(s.listeners[i], m)
					}
				}
			})
		}
		g.members = nil
	}
	// Every other way out, including a generation whose gate had not
	// answered yet and a stop that has not reached its release, closes
	// the supervisor's copies now, and so does a stop that kept them: a
	// socket held only by hotswap would keep a queue nobody accepts from.
	s.leaveMembers(g, false, nil)
	s.closeKept(g, members)
	if s.udp != nil {
		s.udp.exited(g.id, g == sl.current && prev != StateDraining)
	}
	s.sync()
	s.retireNext()
	if s.waitDrain && !s.drainingSockets() {
		s.waitDrain = false
		s.beginReload()
	}
	if s.roll != nil && s.roll.wait && !s.drainingSockets() {
		s.rollStep()
	}
	if s.isCanary(g) {
		s.canaryExited(g)
	}
	if g == sl.current && s.canaryTakesOver() {
		// The canary takes over from a current generation that died.
		c := s.canary[0]
		s.canary, s.weight, sl.current = nil, 0, c
		c.state = StateReady
		c.log.Warn("current generation exited, the canary takes over", "exited", g.id)
		if err := s.steer(c, nil, 0, nil); err != nil {
			s.log.Error("steer to the canary", "error", err)
		}
		return nil
	}
	if g != sl.current {
		return nil
	}
	sl.lastExit = g.ps
	sl.current = nil
	sl.crashedFiles, sl.crashedID = g.files, g.id
	if !s.everReady {
		return firstNotReady(g, nil)
	}
	if prev != StateDraining {
		if h := causeHint(g); h != "" {
			g.log.Warn("generation exited on its own", "status", describeExit(g.ps), "hint", h)
		} else {
			g.log.Warn("generation exited on its own", "status", describeExit(g.ps))
		}
	}
	if s.pool() {
		// New connections for its slot go to the other workers; its
		// queue waits for the restart.
		if err := s.steer(nil, nil, 0, nil); err != nil {
			s.log.Error("steer away from the exited worker", "error", err)
		}
	}
	if sl.pending == nil {
		s.scheduleRestart(sl, up)
	}
	return nil
}

// scheduleRestart arms sl's crash restart with exponential backoff; a
// worker that stayed up for BackoffReset resets it.
func (s *Supervisor) scheduleRestart(sl *slot, up time.Duration) {
	switch {
	case sl.backoff == 0 || up >= s.cfg.BackoffReset:
		sl.backoff = s.cfg.BackoffMin
	default:
		sl.backoff = min(2*sl.backoff, s.cfg.BackoffMax)
	}
	s.log.Info("restarting after backoff", "backoff", sl.backoff, "worker", sl.i)
	sl.restartAt = time.Now().Add(sl.backoff)
	s.armRestart()
}

// onRestart restarts every slot whose backoff has passed.
func (s *Supervisor) onRestart() {
	now := time.Now()
	for _, sl := range s.slots {
		if sl.restartAt.IsZero() || sl.restartAt.After(now) {
			continue
		}
		sl.restartAt = time.Time{}
		if sl.current != nil || sl.pending != nil {
			continue
		}
		// A pool's worker restarts in its generation; a lone generation
		// restarts as the next one.
		id := sl.crashedID
		if !s.pool() || id == 0 {
			id = s.next()
		}
		g, err := s.procs.start(id, sl.i, sl.crashedFiles)
		if err != nil {
			s.log.Error("restart failed", "worker", sl.i, "error", err)
			s.scheduleRestart(sl, 0)
			continue
		}
		s.stats.restarts++
		sl.restarts++
		s.cfg.Observer.Restarted(g.id)
		sl.current = g
		s.gate(g)
	}
	s.armRestart()
}

func (s *Supervisor) onSignal(sig syscall.Signal) error {
	var errs []error
	n := 0
	for _, sl := range s.slots {
		g := sl.current
		if g == nil {
			continue
		}
		n++
		if err := s.procs.signal(g, sig); err != nil {
			errs = append(errs, fmt.Errorf("signal generation %d (pid %d): %w", g.id, g.pid, err))
		}
	}
	if n == 0 {
		return errors.New("no generation is running")
	}
	return errors.Join(errs...)
}

// stopAll stops every live generation concurrently and waits for them.
func (s *Supervisor) stopAll() {
	if s.restart != nil {
		s.restart.Stop()
	}
	var wg sync.WaitGroup
	for _, g := range s.live {
		if g.state == StateDraining {
			continue // already being stopped by its own goroutine
		}
		g.state = StateDraining
		wg.Go(func() { s.procs.stop(g, s.handedOff) })
	}
	wg.Wait()
	for _, g := range s.live {
		<-g.exited
		g.log.Info("generation exited", "status", describeExit(g.ps), "up", time.Since(g.started).Round(time.Millisecond))
	}
}

func (s *Supervisor) listen() error {
	for _, spec := range s.cfg.Listeners {
		l, err := s.openListener(spec)
		if err != nil {
			s.closeListeners()
			return listenError(spec, err)
		}
		s.listeners = append(s.listeners, l)
		var first *reuse.Member
		adopted, err := s.adopt(l)
		if err != nil {
			s.closeListeners()
			return listenError(spec, err)
		}
		s.adopted = append(s.adopted, adopted)
		if l.reuseport() {
			// The group's first member listens from the start, as a
			// shared socket does: the address must be free now, port 0
			// is fixed from here on, and clients queue for generation 1.
			if adopted == nil {
				// Another SO_REUSEPORT listener of this user on the
				// address (a generation of a killed hotswap) would share
				// the group and take connections nobody steers.
				var busy bool
				if busy, err = reuse.InUse(spec.Network, spec.Address); err == nil && busy {
					err = reuse.ErrInUse
				}
				if err == nil {
					first, err = l.group.Take()
				}
			}
			if err != nil {
				s.closeListeners()
				return listenError(spec, err)
			}
			_, p, _ := net.SplitHostPort(l.group.Addr())
			l.port, _ = strconv.Atoi(p)
			if l.diagPort, err = diagPort(first, adopted); err != nil {
				s.closeListeners()
				return fmt.Errorf("listen %s: %w", spec, err)
			}
		}
		s.slots[0].orphans = append(s.slots[0].orphans, first)
		s.log.Info("listening", "name", spec.Name, "address", l.addr(), "mode", string(l.mode))
	}
	for _, sl := range s.slots[1:] {
		sl.orphans = make([]*reuse.Member, len(s.listeners))
	}
	if s.cfg.Mode == ModeReusePort {
		s.logMigrateReq()
	}
	if s.udp != nil {
		s.udp.setGroups(s.listeners)
	}
	return nil
}

// diagPort is the port and address family of a reuseport group's first
// member, or of the adopted one.
func diagPort(first, adopted *reuse.Member) (reuse.Port, error) {
	m := first
	if m == nil {
		m = adopted
	}
	a, err := reuse.Addr(m.File())
	if err != nil {
		return reuse.Port{}, err
	}
	return reuse.PortOf(a.String())
}

func (s *Supervisor) closeListeners() {
	for _, l := range s.listeners {
		l.close()
	}
}
