package main

import (
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
)

// healthCode GETs a --stop-health address.
func healthCode(t *testing.T, addr string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET stop health %s: %v", addr, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The stop's own log lines are read as text: the status lists the
// supervisor's listeners, not --stop-health (its port 0 is resolved only
// in the log), and the line that begins a stop says why and when (its
// timestamp is measured), while hotswap is on its way out.

// TestStopWhenIdle: new connections keep arriving for 2s after SIGTERM;
// with --stop-when-idle 1s every one is served, --stop-health says 503
// from the SIGTERM on, and the stop begins 1s after the last one arrived.
// The same SIGTERM without the flag loses connections, so the zero means
// something.
func TestStopWhenIdle(t *testing.T) {
	const idle = time.Second
	for _, mode := range []string{"reuseport", "shared"} {
		t.Run(mode, func(t *testing.T) {
			a := startApp(t, []string{"--mode", mode, "--ready", "200ms",
				"--stop-when-idle", idle.String(), "--stop-timeout", "20s", "--stop-health", "127.0.0.1:0"})
			health := a.hs.WaitEvent(10*time.Second, "stop health listening", nil).Str("address")
			if c := healthCode(t, health); c != http.StatusOK {
				t.Errorf("stop health while serving: %d, want 200", c)
			}
			res, term := loadAcrossTerm(t, a)
			if c := healthCode(t, health); c != http.StatusServiceUnavailable {
				t.Errorf("stop health after SIGTERM: %d, want 503", c)
			}
			e := a.hs.WaitEvent(10*time.Second, "stop: no new connection for the idle time; stopping", nil)
			if code := a.hs.Wait(30 * time.Second); code != 0 {
				t.Errorf("hotswap exited %d, want 0 (goapp drains and exits 0)", code)
			}
			stopAt, err := time.Parse(time.RFC3339Nano, e.Str("@timestamp"))
			if err != nil {
				t.Fatal(err)
			}
			var after int
			var lastStart time.Time
			for _, s := range res.Samples {
				if s.Start.After(term) {
					after++
				}
				if s.Start.After(lastStart) {
					lastStart = s.Start
				}
			}
			t.Logf("load: %v; %d requests started after SIGTERM, the last %v after it; the stop began %v after the last request started (%d new connections seen)",
				res, after, lastStart.Sub(term).Round(time.Millisecond), stopAt.Sub(lastStart).Round(time.Millisecond), e.Int("new_connections"))
			if res.Failed != 0 {
				t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
			}
			if after < 100 || lastStart.Sub(term) < 1900*time.Millisecond {
				t.Errorf("only %d requests after SIGTERM, the last %v after it: the load did not go on for 2s", after, lastStart.Sub(term))
			}
			if d := stopAt.Sub(lastStart); d < idle || d > idle+2*time.Second {
				t.Errorf("the stop began %v after the last request started, want %v (and not much more)", d, idle)
			}
		})
	}
	t.Run("stop-timeout", func(t *testing.T) {
		// Connections never stop within --stop-timeout: the stop begins
		// at the bound, and says why.
		a := startApp(t, []string{"--ready", "200ms", "--stop-when-idle", idle.String(), "--stop-timeout", "1s"})
		_, term := loadAcrossTerm(t, a)
		e := a.hs.WaitEvent(10*time.Second, "stop: connections still arriving at --stop-timeout; stopping", nil)
		if d := eventTime(t, e).Sub(term); d < time.Second || d > 2*time.Second {
			t.Errorf("the stop began %v after SIGTERM, want 1s (--stop-timeout)", d)
		}
		a.hs.Wait(30 * time.Second)
	})
	t.Run("second-sigterm", func(t *testing.T) {
		// A second SIGTERM ends the wait at once.
		a := startApp(t, []string{"--ready", "200ms", "--stop-when-idle", "1m"})
		a.hs.Signal(syscall.SIGTERM)
		a.hs.WaitEvent(10*time.Second, "stop: serving until no new connection arrives", nil)
		if got := get(t, a.addr); got != "v1" {
			t.Errorf("during the wait: answered by %q, want v1", got)
		}
		second := time.Now()
		a.hs.Signal(syscall.SIGTERM)
		if code := a.hs.Wait(10 * time.Second); code != 0 {
			t.Errorf("hotswap exited %d, want 0", code)
		}
		if d := time.Since(second); d > 5*time.Second {
			t.Errorf("hotswap took %v to stop after the second SIGTERM", d)
		}
	})
	t.Run("without", func(t *testing.T) {
		a := startApp(t, []string{"--ready", "200ms"})
		res, _ := loadAcrossTerm(t, a)
		t.Logf("without --stop-when-idle: %v", res)
		if res.Failed == 0 {
			t.Errorf("no request failed after a plain SIGTERM: the load cannot see a stop too early")
		}
	})
}

// loadAcrossTerm runs a load (a new connection per request) across a
// SIGTERM to a's hotswap, for 2s after it.
func loadAcrossTerm(t *testing.T, a *app) (load.Result, time.Time) {
	t.Helper()
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 8, Duration: 30 * time.Second, Timeout: 2 * time.Second})
	waitOK(t, run, 200)
	term := time.Now()
	a.hs.Signal(syscall.SIGTERM)
	time.Sleep(time.Until(term.Add(2 * time.Second)))
	return run.Stop(), term
}

// TestStopHealthAcrossSelfUpgrade: the --stop-health socket passes to the
// new hotswap of a self-upgrade (as the metrics socket does), which then
// answers on the same address; without that the new hotswap could not
// bind it and the upgrade failed.
func TestStopHealthAcrossSelfUpgrade(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	a := startAppCmd(t, []string{"--ready", "200ms", "--pidfile", pidfile, "--stop-health", "127.0.0.1:0", "--metrics", "127.0.0.1:0"})
	health := a.hs.WaitEvent(10*time.Second, "stop health listening", nil).Str("address")
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 4, Duration: time.Minute})
	newPid, res := a.upgradeUnderLoad(t, pidfile, run)
	if res.Failed != 0 {
		t.Errorf("%d failed requests across the self-upgrade: %v", res.Failed, res.Errors)
	}
	if c := healthCode(t, health); c != http.StatusOK {
		t.Errorf("stop health of the new hotswap (pid %d): %d, want 200", newPid, c)
	}
}
