package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// TestFaults runs rows of the fault matrix, each under continuous load:
// whatever goes wrong with a generation, no request fails and the outcome
// is the documented one.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	tests := []struct {
		name       string
		hsFlags    []string
		goappFlags []string
		fault      func(t *testing.T, a *app)
	}{
		{
			name:       "never ready",
			hsFlags:    []string{"--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "1s"},
			goappFlags: []string{"--health-listen", "127.0.0.1:{port}"},
			fault: func(t *testing.T, a *app) {
				if e := a.reload(2, "v2", "--health-status 500"); e.Msg() != "reload failed" {
					t.Fatalf("got %q, want reload failed", e.Msg())
				}
				// In shared mode the rejected generation may answer until it
				// has stopped.
				a.hs.WaitEvent(10*time.Second, "generation exited", proctest.Gen(2))
				if got := get(t, a.addr); got != "v1" {
					t.Errorf("answered by %q after a rollback, want v1", got)
				}
			},
		},
		{
			// In shared mode a generation that ignores its stop signal keeps
			// accepting from the shared queue until SIGKILL and loses what it
			// had accepted (1-2 per kill measured); reuseport mode steers new
			// connections away from it first, so the kill loses nothing.
			name:    "old ignores its stop signal (reuseport)",
			hsFlags: []string{"--mode", "reuseport", "--ready", "200ms", "--drain-timeout", "1s"},
			fault: func(t *testing.T, a *app) {
				if e := a.reload(2, "v2", "--ignore-term"); e.Msg() != "reload succeeded" {
					t.Fatalf("reload to the stubborn version: %v", e)
				}
				if e := a.reload(3, "v3", ""); e.Msg() != "reload succeeded" {
					t.Fatalf("reload away from it: %v", e)
				}
				a.hs.WaitEvent(10*time.Second, "generation did not stop in time, killing it", proctest.Gen(2))
				e := a.hs.WaitEvent(10*time.Second, "generation exited", proctest.Gen(2))
				if e.Str("status") != "signal SIGKILL" {
					t.Errorf("generation 2 %s, want killed by SIGKILL", e.Str("status"))
				}
			},
		},
		{
			name:    "100 SIGHUPs in one second",
			hsFlags: []string{"--ready", "100ms"},
			fault: func(t *testing.T, a *app) {
				a.write("v2", "")
				for range 100 {
					a.hs.Signal(syscall.SIGHUP)
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(time.Second) // the coalesced reloads finish
				ok := len(a.hs.Events("reload succeeded"))
				e := a.hs.WaitEvent(10*time.Second, "reload succeeded", proctest.Gen(ok+1))
				t.Logf("100 SIGHUPs: %d reloads (coalesced), last %v", ok, e.Str("gen"))
				if ok >= 100 || ok < 1 {
					t.Errorf("%d reloads for 100 SIGHUPs, want between 1 and 99", ok)
				}
				if len(a.hs.Events("reload failed")) != 0 {
					t.Errorf("failed reloads: %v", a.hs.Events("reload failed"))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, tc.hsFlags, tc.goappFlags...)
			run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 8, Duration: time.Minute})
			time.Sleep(100 * time.Millisecond)
			tc.fault(t, a)
			time.Sleep(200 * time.Millisecond)
			res := run.Stop()
			t.Logf("load: %v", res)
			if res.Failed != 0 {
				t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
			}
		})
	}
}
