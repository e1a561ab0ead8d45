package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
)

// TestKeepAliveNoRetry: 16 keep-alive clients that never retry (each
// sends its next request on the same connection and counts any error)
// across 10 reloads 1.5 s apart, reuseport mode, goapp: fdpass.ServeHTTP's
// drain answers the next request on each connection with Connection:
// close, so nothing fails and every reload is seen. The control is goapp
// draining with http.Server.Shutdown alone, which closes idle keep-alive
// connections under the clients' next requests in the same setup.
func TestKeepAliveNoRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	for _, tc := range []struct {
		name     string
		goapp    []string
		wantLoss bool
	}{
		{"ServeHTTP", nil, false},
		{"Shutdown alone", []string{"--plain-shutdown"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, []string{"--mode", "reuseport", "--ready", "notify"}, append([]string{"--notify"}, tc.goapp...)...)
			run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, KeepAlive: true, NoRetry: true, Duration: time.Minute})
			const reloads = 10
			for n := 2; n <= reloads+1; n++ {
				time.Sleep(1500 * time.Millisecond)
				if r := a.reload(n, fmt.Sprintf("v%d", n), ""); !r.OK {
					t.Fatalf("reload to generation %d: %v", n, r)
				}
			}
			time.Sleep(1500 * time.Millisecond)
			res := run.Stop()
			a.hs.Signal(syscall.SIGTERM)
			a.hs.Wait(30 * time.Second)
			t.Logf("%s, %d reloads: %v; versions %v", tc.name, reloads, res, res.Versions)
			var drained []time.Duration
			for _, e := range a.hs.Events("drained") {
				drained = append(drained, time.Duration(e.Int("after")).Round(time.Millisecond))
			}
			t.Logf("old generations drained after %v", drained)
			if res.OK < 1000 {
				t.Errorf("only %d requests succeeded: the load did not run", res.OK)
			}
			switch {
			case !tc.wantLoss && res.Failed != 0:
				t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
			case tc.wantLoss && res.Failed == 0:
				t.Errorf("no failed requests: the control must show the race with idle connections")
			}
			if !tc.wantLoss {
				for n := 2; n <= reloads+1; n++ {
					if res.Versions[fmt.Sprintf("v%d", n)] == 0 {
						t.Errorf("no keep-alive client saw v%d", n)
					}
				}
			}
		})
	}
}
