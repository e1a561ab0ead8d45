package supervisor

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The worker pool's rows of the state machine (doc.go), on fake workers.

func newPool(t *testing.T, rollout Rollout) *loop {
	t.Helper()
	return newLoop(t, ModeReusePort, func(c *Config) { c.Workers, c.Rollout = 2, rollout })
}

// readyW passes the gate of worker w of generation id.
func (l *loop) readyW(id, w int, err error) {
	l.t.Helper()
	fg := l.f.worker(id, w)
	if fg == nil {
		l.t.Fatalf("worker %d of generation %d was never started", w, id)
	}
	fg.gate <- err
	synctest.Wait()
}

// wantWorkers checks which generation serves each slot (0: none).
func (l *loop) wantWorkers(gens ...int) {
	l.t.Helper()
	st := l.status()
	var got []int
	for _, w := range st.Workers {
		g := w.Gen
		if w.State != StateReady {
			g = 0
		}
		got = append(got, g)
	}
	if len(got) != len(gens) {
		l.t.Fatalf("workers %v, want %v", got, gens)
	}
	for i := range gens {
		if got[i] != gens[i] {
			l.t.Errorf("workers serve generations %v, want %v", got, gens)
			return
		}
	}
}

// startPool brings generation 1 up: its workers are gated one at a time,
// and hotswap is ready once both are.
func (l *loop) startPool() {
	l.t.Helper()
	select {
	case <-l.f.worker(1, 1).gate:
		l.t.Fatal("worker 1's gate was read before worker 0 was ready")
	default:
	}
	l.readyW(1, 0, nil)
	select {
	case <-l.s.Ready():
		l.t.Fatal("ready with one worker of two")
	default:
	}
	l.readyW(1, 1, nil)
	select {
	case <-l.s.Ready():
	default:
		l.t.Fatal("not ready with both workers ready")
	}
	l.wantWorkers(1, 1)
}

// TestLoopPoolRolling: a rolling reload starts worker i of the new
// generation only once the old worker i-1 has exited, drains each old
// worker after its slot cut over, and answers once the last old one has
// exited.
func TestLoopPoolRolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPool(t, RolloutRolling)
		l.startPool()
		l.f.worker(1, 0).hold = make(chan struct{})
		r := l.reload(false)
		if l.f.worker(2, 1) != nil {
			t.Fatal("worker 1 of generation 2 started with worker 0's slot not rolled yet")
		}
		l.readyW(2, 0, nil)
		if drain := <-l.f.worker(1, 0).stopped; !drain {
			t.Error("old worker 0 was stopped without a drain")
		}
		l.wantWorkers(2, 1)
		if l.f.worker(2, 1) != nil {
			t.Fatal("worker 1 of generation 2 started while old worker 0 was still stopping")
		}
		close(l.f.worker(1, 0).hold)
		synctest.Wait()
		if l.f.worker(2, 1) == nil {
			t.Fatal("worker 1 of generation 2 not started after old worker 0 exited")
		}
		if _, ok := done(r); ok {
			t.Fatal("reload answered with slot 1 not rolled")
		}
		l.readyW(2, 1, nil)
		if drain := <-l.f.worker(1, 1).stopped; !drain {
			t.Error("old worker 1 was stopped without a drain")
		}
		synctest.Wait()
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("rolling reload: %v", err)
		}
		l.wantWorkers(2, 2)
		if err := l.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestLoopPoolRollingStops: a worker that fails its gate stops the
// rollout; the slot already rolled keeps the new worker, the other keeps
// the old one, and the error says so.
func TestLoopPoolRollingStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPool(t, RolloutRolling)
		l.startPool()
		r := l.reload(false)
		l.readyW(2, 0, nil)
		l.readyW(2, 1, errors.New("not ready after 1s"))
		var re *ReloadError
		err := mustOutcome(t, r)
		if !errors.As(err, &re) || re.Gen != 2 || !strings.Contains(err.Error(), "worker 1: not ready") ||
			re.StillServing() != "serving: worker 0 generation 2, worker 1 generation 1" {
			t.Fatalf("stopped rollout: %v (%s), want worker 1 of generation 2 not ready, worker 0 on 2, worker 1 on 1", err, re.StillServing())
		}
		if drain := <-l.f.worker(2, 1).stopped; drain {
			t.Error("the worker that failed its gate was drained; it never had clients")
		}
		synctest.Wait()
		l.wantWorkers(2, 1)
		select {
		case <-l.f.worker(1, 1).stopped:
			t.Error("old worker 1 was stopped by a rollout that did not reach its slot")
		default:
		}
		// The next reload replaces both slots.
		r = l.reload(false)
		l.readyW(3, 0, nil)
		l.readyW(3, 1, nil)
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("reload after the stopped one: %v", err)
		}
		l.wantWorkers(3, 3)
		l.stop()
	})
}

// TestLoopPoolAll: --rollout all starts every new worker at once, gates
// them one by one, then cuts every slot over and drains every old worker.
func TestLoopPoolAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPool(t, RolloutAll)
		l.startPool()
		r := l.reload(false)
		if l.f.worker(2, 0) == nil || l.f.worker(2, 1) == nil {
			t.Fatal("not every worker of generation 2 started at once")
		}
		l.readyW(2, 0, nil)
		l.wantWorkers(1, 1)
		if _, ok := done(r); ok {
			t.Fatal("reload answered with one worker of two ready")
		}
		l.readyW(2, 1, nil)
		for w := range 2 {
			if drain := <-l.f.worker(1, w).stopped; !drain {
				t.Errorf("old worker %d was stopped without a drain", w)
			}
		}
		if err := mustOutcome(t, r); err != nil {
			t.Fatalf("reload: %v", err)
		}
		synctest.Wait()
		l.wantWorkers(2, 2)
		// A held reload (blue/green) is refused, and starts nothing.
		if err := mustOutcome(t, l.reload(true)); err == nil || !strings.Contains(err.Error(), "does not work with --workers") {
			t.Errorf("held reload of a pool: %v, want refused", err)
		}
		if l.f.worker(3, 0) != nil {
			t.Error("a refused held reload started a worker")
		}
		l.stop()
	})
}

// TestLoopPoolCrash: a worker that exits on its own is restarted alone,
// after its backoff, in its generation; the other worker is not touched.
func TestLoopPoolCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newPool(t, RolloutRolling)
		l.startPool()
		first := l.f.worker(1, 1)
		go l.s.reaped(first.g, errors.New("exited with signal KILL"))
		synctest.Wait()
		l.wantWorkers(1, 0)
		if st := l.status(); st.Workers[1].NextRestart.IsZero() || !st.Workers[0].NextRestart.IsZero() {
			t.Errorf("restarts due %v, want only worker 1's", st.Workers)
		}
		time.Sleep(DefaultBackoffMin)
		synctest.Wait()
		again := l.f.worker(1, 1)
		if again == first {
			t.Fatal("worker 1 not restarted after its backoff")
		}
		l.readyW(1, 1, nil)
		l.wantWorkers(1, 1)
		if st := l.status(); st.Workers[1].Restarts != 1 || st.Workers[0].Restarts != 0 || l.f.started() != 2 {
			t.Errorf("restarts %+v, %d workers started; want worker 1 restarted once, in generation 1", st.Workers, l.f.started())
		}
		l.stop()
	})
}
