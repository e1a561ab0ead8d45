package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// The run loop's state machine (doc.go) driven in process: fake
// generations (fakeProcs) and testing/synctest's clock, no processes, no
// sockets, no sleeps that take real time.

// fakeProcs starts fake generations; the test decides their gates, exits
// and how their stops end.
type fakeProcs struct {
	s  *Supervisor
	mu sync.Mutex
	gs map[genKey]*fakeGen
}

type fakeGen struct {
	g       *gen
	gate    chan error    // the gate's outcome, sent by the test
	stopped chan bool     // receives drain when the loop stops it
	hold    chan struct{} // when set, the stop waits for it to close before the exit
	signals []syscall.Signal
}

func (f *fakeProcs) start(id, w int, _ argFiles) (*gen, error) {
	s := f.s
	g := &gen{id: id, worker: w, cpu: -1, pid: 10000 + id + 1000*w, started: time.Now(), state: StateStarting,
		log: s.log.With("gen", id, "worker", w), exited: make(chan struct{})}
	if s.cfg.Mode == ModeReusePort {
		// One member slot per listener, as a reuseport generation has:
		// drainingSockets and the canary paths look at it.
		g.members = make([]*reuse.Member, len(s.listeners))
	}
	g.ctx, g.cancel = context.WithCancelCause(context.Background())
	f.mu.Lock()
	f.gs[g.key()] = &fakeGen{g: g, gate: make(chan error, 1), stopped: make(chan bool, 1)}
	f.mu.Unlock()
	return g, nil
}

func (f *fakeProcs) ready(ctx context.Context, g *gen) error {
	select {
	case err := <-f.worker(g.id, g.worker).gate:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (f *fakeProcs) stop(g *gen, drain bool) {
	fg := f.worker(g.id, g.worker)
	f.s.leaveMembers(g, true, nil)
	fg.stopped <- drain
	if fg.hold != nil {
		<-fg.hold
	}
	select {
	case <-g.exited: // it exited on its own meanwhile
	default:
		f.s.reaped(g, errors.New("exited with status 0"))
	}
}

func (f *fakeProcs) signal(g *gen, sig syscall.Signal) error {
	fg := f.worker(g.id, g.worker)
	f.mu.Lock()
	fg.signals = append(fg.signals, sig)
	f.mu.Unlock()
	return nil
}

func (f *fakeProcs) gen(id int) *fakeGen { return f.worker(id, 0) }

// worker is worker w of generation id; a restarted worker of a pool
// replaces its predecessor here.
func (f *fakeProcs) worker(id, w int) *fakeGen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gs[genKey{id, w}]
}

func (f *fakeProcs) started() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.gs)
}

// loop is a supervisor running on fake generations inside a bubble.
type loop struct {
	t      *testing.T
	s      *Supervisor
	f      *fakeProcs
	cancel context.CancelFunc
	runErr chan error
}

func newLoop(t *testing.T, mode Mode, tweak func(*Config)) *loop {
	t.Helper()
	cfg := Config{
		Command:   []string{"/bin/true"},
		Listeners: []ListenSpec{{Name: "http", Network: "unix", Address: filepath.Join(t.TempDir(), "s")}},
		Mode:      mode,
		Logger:    hclog.NewNullLogger(),
		Listen:    func(ListenSpec) (*os.File, error) { return os.Open(os.DevNull) },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProcs{s: s, gs: map[genKey]*fakeGen{}}
	s.procs = f
	ctx, cancel := context.WithCancel(context.Background())
	l := &loop{t: t, s: s, f: f, cancel: cancel, runErr: make(chan error, 1)}
	go func() { l.runErr <- s.Run(ctx) }()
	synctest.Wait()
	return l
}

// ready passes generation id's gate and lets the loop act on it.
func (l *loop) ready(id int) { l.gateOutcome(id, nil) }

func (l *loop) gateOutcome(id int, err error) {
	l.t.Helper()
	fg := l.f.gen(id)
	if fg == nil {
		l.t.Fatalf("generation %d was never started", id)
	}
	fg.gate <- err
	synctest.Wait()
}

// exit makes generation id's process exit on its own.
func (l *loop) exit(id int, status string) {
	l.t.Helper()
	go l.s.reaped(l.f.gen(id).g, errors.New("exited with "+status))
	synctest.Wait()
}

// reload starts a reload and returns its outcome channel.
func (l *loop) reload(hold bool) <-chan error { return l.reloadHold(hold, 0) }

// reloadHold is a reload; with hold, a held one of a canary of workers
// workers (0: the pool's).
func (l *loop) reloadHold(hold bool, workers int) <-chan error {
	c := make(chan error, 1)
	go func() { c <- l.s.reload(context.Background(), hold, workers) }()
	synctest.Wait()
	return c
}

func (l *loop) status() Status {
	l.t.Helper()
	st, err := l.s.Status(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// stop ends Run and returns its error.
func (l *loop) stop() error {
	l.cancel()
	synctest.Wait()
	return <-l.runErr
}

func (l *loop) want(current int, states map[int]State) {
	l.t.Helper()
	st := l.status()
	if st.Current != current {
		l.t.Errorf("current generation %d, want %d", st.Current, current)
	}
	got := map[int]State{}
	for _, g := range st.Generations {
		got[g.ID] = g.State
	}
	for id, s := range states {
		if got[id] != s {
			l.t.Errorf("generation %d is %q, want %q (all: %v)", id, got[id], s, got)
		}
	}
	if len(got) != len(states) {
		l.t.Errorf("live generations %v, want %v", got, states)
	}
}

// oldStillStopping serves generation 1, reloads to generation 2 and
// leaves generation 1 being stopped, not exited.
func (l *loop) oldStillStopping() {
	l.t.Helper()
	l.ready(1)
	l.f.gen(1).hold = make(chan struct{})
	r := l.reload(false)
	l.ready(2)
	if err := mustOutcome(l.t, r); err != nil {
		l.t.Fatalf("reload to generation 2: %v", err)
	}
	<-l.f.gen(1).stopped
}

func done(c <-chan error) (error, bool) {
	select {
	case err := <-c:
		return err, true
	default:
		return nil, false
	}
}

func mustOutcome(t *testing.T, c <-chan error) error {
	t.Helper()
	err, ok := done(c)
	if !ok {
		t.Fatal("the reload has no outcome yet")
	}
	return err
}

// TestLoopGateOutcomes: starting → ready (cutover, the old one drained);
// a gate that fails (stopped without a drain, rolled back); a generation
// that exits before its gate answers (rolled back, its sockets released
// by its exit, no stop); every failure names what still serves.
func TestLoopGateOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeReusePort, nil)
		l.want(1, map[int]State{1: StateStarting})
		l.ready(1)
		l.want(1, map[int]State{1: StateReady})

		r := l.reload(false)
		l.want(1, map[int]State{1: StateReady, 2: StateStarting})
		l.gateOutcome(2, errors.New("not ready after 1m0s"))
		var re *ReloadError
		if err := mustOutcome(t, r); !errors.As(err, &re) || re.Gen != 2 || re.Serving != 1 {
			t.Fatalf("failed gate: %v, want a ReloadError for generation 2, still serving 1", err)
		}
		if drain := <-l.f.gen(2).stopped; drain {
			t.Error("a generation that failed its gate was drained before its stop; it never had clients")
		}
		l.want(1, map[int]State{1: StateReady})

		r = l.reload(false)
		l.exit(3, "status 1")
		if err := mustOutcome(t, r); !errors.As(err, &re) || re.Gen != 3 || !strings.Contains(re.Error(), "exited with status 1") {
			t.Fatalf("exit before ready: %v, want generation 3 exited with status 1", err)
		}
		select {
		case <-l.f.gen(3).stopped:
			t.Error("a generation that had exited was stopped")
		default:
		}
		ran := false
		l.f.gen(3).g.leave.Do(func() { ran = true })
		if ran {
			t.Error("the exit of a generation whose gate had not answered did not release its sockets")
		}
		l.want(1, map[int]State{1: StateReady})

		r = l.reload(false)
		l.ready(4)
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("good reload: %v", err)
		}
		if drain := <-l.f.gen(1).stopped; !drain {
			t.Error("the old generation was stopped without a drain")
		}
		synctest.Wait()
		l.want(4, map[int]State{4: StateReady})
		if st := l.status(); st.Reloads.OK != 1 || st.Reloads.Failed != 2 {
			t.Errorf("reloads %+v, want 1 ok, 2 failed", st.Reloads)
		}
		if err := l.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestLoopFirstGenerationNotReady: at start-up a failed gate and an exit
// before ready both end Run with the reason.
func TestLoopFirstGenerationNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, nil)
		l.gateOutcome(1, errors.New("not ready after 1m0s"))
		if err := <-l.runErr; err == nil || !strings.Contains(err.Error(), "not ready after") {
			t.Errorf("Run: %v, want generation 1 not ready", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, nil)
		l.exit(1, "status 2")
		if err := <-l.runErr; err == nil || !strings.Contains(err.Error(), "before it was ready") {
			t.Errorf("Run: %v, want generation 1 exited before it was ready", err)
		}
	})
}

// TestLoopReloadCoalescing: reloads requested while one gates (or while
// the first generation is not ready yet) coalesce into one more reload,
// whose outcome every one of them gets.
func TestLoopReloadCoalescing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, nil)
		early := l.reload(false) // before generation 1 is ready: queued
		l.ready(1)
		first := l.reload(false)
		if l.f.started() != 2 {
			t.Fatalf("%d generations started, want 2 (the early reload's)", l.f.started())
		}
		l.ready(2)
		if err := mustOutcome(t, early); err != nil {
			t.Fatalf("early reload: %v", err)
		}
		// first was queued behind early's: now gating generation 3.
		var later []<-chan error
		for range 3 {
			later = append(later, l.reload(false))
		}
		if l.f.started() != 3 {
			t.Fatalf("%d generations started, want 3", l.f.started())
		}
		l.ready(3)
		if err := mustOutcome(t, first); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if l.f.started() != 4 {
			t.Fatalf("%d generations started after 3 coalesced reloads, want 4", l.f.started())
		}
		if !l.status().Reloading {
			t.Error("status does not say a reload is in progress")
		}
		l.ready(4)
		for i, c := range later {
			if err := mustOutcome(t, c); err != nil {
				t.Errorf("coalesced reload %d: %v", i, err)
			}
		}
		if l.status().Reloading {
			t.Error("status says a reload is in progress after all finished")
		}
		l.stop()
	})
}

// TestLoopWaitForDrain: in reuseport mode a reload waits while an old
// generation with sockets is still stopping, and starts once it exits.
func TestLoopWaitForDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeReusePort, nil)
		l.oldStillStopping()
		r := l.reload(false)
		if l.f.started() != 2 {
			t.Fatalf("a reload started generation %d while generation 1 drains", l.f.started())
		}
		if !l.status().Reloading {
			t.Error("status does not say a reload waits")
		}
		l.want(2, map[int]State{1: StateDraining, 2: StateReady})
		close(l.f.gen(1).hold)
		synctest.Wait()
		if l.f.started() != 3 {
			t.Fatalf("generation 1 exited, %d generations started, want 3", l.f.started())
		}
		l.ready(3)
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("the waiting reload: %v", err)
		}
		l.stop()
	})
}

// TestLoopMaxDraining: in shared mode a reload beyond --max-draining old
// generations still stopping fails at once and starts nothing.
func TestLoopMaxDraining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, func(c *Config) { c.MaxDraining = 1 })
		l.oldStillStopping()
		err := mustOutcome(t, l.reload(false))
		if err == nil || !strings.Contains(err.Error(), "still draining (--max-draining 1)") {
			t.Errorf("reload beyond the cap: %v, want refused for --max-draining 1", err)
		}
		if l.f.started() != 2 {
			t.Errorf("%d generations started, want 2", l.f.started())
		}
		close(l.f.gen(1).hold)
		synctest.Wait()
		r := l.reload(false)
		l.ready(3)
		if err := mustOutcome(t, r); err != nil {
			t.Errorf("reload once the old one exited: %v", err)
		}
		l.stop()
	})
}

// TestLoopCrashBackoff: a current generation that dies on its own is
// restarted after BackoffMin, doubling while restarts keep dying young,
// capped at BackoffMax, and back to BackoffMin once one stayed up for
// BackoffReset.
func TestLoopCrashBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeReusePort, func(c *Config) { c.BackoffMax = 300 * time.Millisecond })
		l.ready(1)
		id := 1
		for _, want := range []time.Duration{100, 200, 300, 300} {
			want *= time.Millisecond
			l.exit(id, "status 3")
			st := l.status()
			if st.Current != 0 || st.Backoff != want {
				t.Fatalf("after generation %d crashed: current %d, backoff %v; want none and %v", id, st.Current, st.Backoff, want)
			}
			time.Sleep(want - time.Millisecond)
			synctest.Wait()
			if l.f.started() != id {
				t.Fatalf("restarted before the backoff of %v", want)
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			id++
			if l.f.started() != id {
				t.Fatalf("not restarted after the backoff of %v", want)
			}
			l.ready(id)
			l.want(id, map[int]State{id: StateReady})
		}
		time.Sleep(DefaultBackoffReset)
		l.exit(id, "status 3")
		if st := l.status(); st.Backoff != DefaultBackoffMin {
			t.Errorf("after a generation that stayed up %v: backoff %v, want %v", DefaultBackoffReset, st.Backoff, DefaultBackoffMin)
		}
		if st := l.status(); st.Restarts != 4 {
			t.Errorf("%d restarts counted, want 4", st.Restarts)
		}
		l.stop()
	})
}

// TestLoopCanary: a held reload keeps the new generation beside the
// current one; weight, promote (the old one drained), rollback (the
// canary drained); a canary that dies; the current dying while a canary
// is held (the canary takes over, no restart); reloads refused while a
// canary is held; a held reload refused in shared mode.
func TestLoopCanary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeReusePort, nil)
		ctx := context.Background()
		l.ready(1)
		if err := l.s.SetWeight(ctx, 10); !errors.Is(err, ErrNoCanary) {
			t.Errorf("weight without a canary: %v, want ErrNoCanary", err)
		}
		r := l.reload(true)
		l.ready(2)
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("held reload: %v", err)
		}
		l.want(1, map[int]State{1: StateReady, 2: StateCanary})
		if err := mustOutcome(t, l.reload(false)); err == nil || !strings.Contains(err.Error(), "held as a canary") {
			t.Errorf("reload while a canary is held: %v, want refused", err)
		}
		if err := l.s.SetWeight(ctx, 30); err != nil {
			t.Fatal(err)
		}
		if st := l.status(); st.Canary != 2 || st.Weight != 30 {
			t.Errorf("canary %d at %d%%, want 2 at 30%%", st.Canary, st.Weight)
		}
		if err := l.s.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		if drain := <-l.f.gen(1).stopped; !drain {
			t.Error("promote stopped the old generation without a drain")
		}
		synctest.Wait()
		l.want(2, map[int]State{2: StateReady})

		r = l.reload(true)
		l.ready(3)
		mustOutcome(t, r)
		if err := l.s.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if drain := <-l.f.gen(3).stopped; !drain {
			t.Error("rollback stopped the canary without a drain")
		}
		synctest.Wait()
		l.want(2, map[int]State{2: StateReady})

		r = l.reload(true)
		l.ready(4)
		mustOutcome(t, r)
		l.exit(4, "status 3") // the canary dies: back to the current one
		l.want(2, map[int]State{2: StateReady})

		r = l.reload(true)
		l.ready(5)
		mustOutcome(t, r)
		l.exit(2, "signal SIGKILL") // the current dies: the canary takes over
		l.want(5, map[int]State{5: StateReady})
		if st := l.status(); st.Canary != 0 || !st.NextRestart.IsZero() {
			t.Errorf("after the takeover: canary %d, next restart %v; want none", st.Canary, st.NextRestart)
		}
		l.stop()
	})
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, nil)
		l.ready(1)
		if err := mustOutcome(t, l.reload(true)); !errors.Is(err, errNeedsReusePort) {
			t.Errorf("held reload in shared mode: %v, want errNeedsReusePort", err)
		}
		l.stop()
	})
}

// TestLoopSignalAndStop: a signal goes to the current generation; the
// stop at the end stops every live generation and answers waiting
// reloads with ErrStopped.
func TestLoopSignalAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeShared, nil)
		l.ready(1)
		if err := l.s.Signal(context.Background(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if got := l.f.gen(1).signals; len(got) != 1 || got[0] != syscall.SIGUSR1 {
			t.Errorf("generation 1 got signals %v, want SIGUSR1", got)
		}
		r := l.reload(false) // gating when the stop comes
		if err := l.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := mustOutcome(t, r); !errors.Is(err, ErrStopped) {
			t.Errorf("reload cut by the stop: %v, want ErrStopped", err)
		}
		for _, id := range []int{1, 2} {
			select {
			case <-l.f.gen(id).g.exited:
			default:
				t.Errorf("generation %d not stopped at the end", id)
			}
		}
	})
}

// TestLoopSelfUpgradeRefusals: a self-upgrade is refused unless the
// groups are quiet (one generation serving, nothing gating, held or
// draining), and reloads are refused while one is in progress.
func TestLoopSelfUpgradeRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLoop(t, ModeReusePort, nil)
		ctx := context.Background()
		quiet := func(want string) {
			t.Helper()
			err := l.s.call(ctx, l.s.quiet)
			if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
				t.Errorf("self-upgrade: %v, want %q", err, want)
			}
		}
		quiet("no generation is serving")
		l.ready(1)
		quiet("")
		r := l.reload(false)
		quiet("a reload is in progress")
		l.f.gen(1).hold = make(chan struct{})
		l.ready(2)
		mustOutcome(t, r)
		quiet("still draining")
		close(l.f.gen(1).hold)
		synctest.Wait()
		r = l.reload(true)
		l.ready(3)
		mustOutcome(t, r)
		quiet("held as a canary")
		l.s.Rollback(ctx)
		synctest.Wait()
		quiet("")
		l.s.call(ctx, func() error { l.s.handingOff = true; return nil })
		quiet("self-upgrade is in progress")
		if err := mustOutcome(t, l.reload(false)); !errors.Is(err, errHandingOff) {
			t.Errorf("reload during a self-upgrade: %v, want errHandingOff", err)
		}
		l.stop()
	})
}
