package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
)

// restartRun is what one method showed over its restarts under one load.
type restartRun struct {
	Method    string
	KeepAlive bool
	NoRetry   bool // keep-alive clients that never retry (load.Config.NoRetry)
	Restarts  int
	OK        int
	Failed    int
	Errors    map[string]int
	// Handover is, per restart, the time from the restart request to the
	// first response of the new version seen by the load.
	Handover []time.Duration
	Skipped  string // why the method did not run, if it did not
	Err      string // what went wrong, if the run broke off

	t0      []time.Time
	samples []load.Sample
}

// loadKind is one of the loads every method is restarted under.
type loadKind struct{ keepAlive, noRetry bool }

var (
	newConnLoad   = loadKind{}
	keepAliveLoad = loadKind{keepAlive: true}
	noRetryLoad   = loadKind{keepAlive: true, noRetry: true}
)

// key names l in -loads.
func (l loadKind) key() string {
	switch {
	case l.noRetry:
		return "no-retry"
	case l.keepAlive:
		return "keep-alive"
	}
	return "new-conn"
}

func loadKeys() []string {
	return []string{newConnLoad.key(), keepAliveLoad.key(), noRetryLoad.key()}
}

func (l loadKind) String() string {
	switch {
	case l.noRetry:
		return "keep-alive, no retry"
	case l.keepAlive:
		return "keep-alive"
	}
	return "new conn"
}

// runRestarts restarts t cfg.restarts times under a closed-loop load of
// cfg.conc workers and counts every failed request.
func runRestarts(ctx context.Context, cfg config, name string, t target, l loadKind) restartRun {
	r := restartRun{Method: name, KeepAlive: l.keepAlive, NoRetry: l.noRetry, Errors: map[string]int{}}
	defer t.close()
	addr, err := t.start()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	if _, err := waitVersion(addr, "v1", 10*time.Second); err != nil {
		r.Err = err.Error()
		return r
	}
	bound := time.Duration(cfg.restarts)*5*time.Second + 30*time.Second
	run := load.Start(ctx, load.Config{Addr: addr, Concurrency: cfg.conc, KeepAlive: l.keepAlive, NoRetry: l.noRetry, Duration: bound, MaxRequests: 5_000_000})
	time.Sleep(cfg.gap)
	for n := 2; n <= cfg.restarts+1 && ctx.Err() == nil; n++ {
		t0, err := t.restart(n)
		if err == nil {
			_, err = waitVersion(addr, version(n), 10*time.Second)
		}
		if err != nil {
			r.Err = fmt.Sprintf("restart %d: %v", n-1, err)
			break
		}
		r.t0 = append(r.t0, t0)
		r.Restarts++
		time.Sleep(cfg.gap)
	}
	res := run.Stop()
	r.OK, r.Failed, r.Errors, r.samples = res.OK, res.Failed, res.Errors, res.Samples
	r.Handover = handovers(r.t0, res.Samples)
	return r
}

// handovers returns, for restart i (to version i+2), the time from t0[i]
// to the end of the first successful request answered by that version.
func handovers(t0 []time.Time, samples []load.Sample) []time.Duration {
	first := map[string]time.Time{}
	for _, s := range samples {
		if s.Err != "" {
			continue
		}
		end := s.Start.Add(s.Dur)
		if f, ok := first[s.Version]; !ok || end.Before(f) {
			first[s.Version] = end
		}
	}
	var out []time.Duration
	for i, t := range t0 {
		if f, ok := first[version(i+2)]; ok {
			out = append(out, f.Sub(t))
		}
	}
	return out
}
