package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// TestWorkersBlueGreen: blue/green with a pool of 2 workers, by a server
// that exits at once on SIGTERM, under load. A canary of 1 worker at
// weight 30 answers 30 % of new connections (the pool's 2 workers the
// rest), each worker on its own socket; promote under load gives it slot
// 0 and rolls its generation over slot 1; a canary of the whole pool at
// weight 50 is rolled back under load. 0 failed requests throughout; the
// same promote and rollback without the drain lose requests.
func TestWorkersBlueGreen(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	proctest.SetSysctl(t, "net.ipv4.tcp_migrate_req", "0")
	for _, tc := range []struct {
		name     string
		flags    []string
		wantZero bool
	}{
		{"drained", nil, true},
		{"naive", []string{"--unsafe-skip-drain"}, false},
	} {
		a := startWorkers(t, "--notify", append([]string{"--ready", "notify"}, tc.flags...), "--on-term", "exit")
		path := ctltest.Path(a.hs)
		must := func(args ...string) {
			t.Helper()
			if code, out, errOut := ctl(t, append(args, "--control", path)...); code != 0 {
				t.Fatalf("%s: hotswap %s: exit %d: %s%s", tc.name, strings.Join(args, " "), code, out, errOut)
			}
		}
		a.write("v2", "--notify")
		must("reload", "--hold", "--workers", "1")
		st := ctltest.Wait(a.hs, 10*time.Second, "canary of 1 worker held", func(st supervisor.Status) bool {
			return st.Canary == 2 && st.CanaryWorkers == 1 && len(st.Generations) == 3
		})
		if tc.wantZero {
			a.checkPool(t, st, "canary held: ")
			if got := askWorkers(t, a.addr, 100); len(got) != 2 {
				t.Errorf("weight 0: 100 requests reached pids %v, want the pool's 2", got)
			}
			must("weight", "30")
			if got := askWorkers(t, a.addr, 150); len(got) != 3 {
				t.Errorf("weight 30: 150 requests reached pids %v, want the pool's 2 and the canary", got)
			}
			res, share := splitShare(t, a.addr, 3000, "v2")
			t.Logf("weight 30, canary of 1 beside 2: %v; v2 share %.1f%%", res, share)
			if res.Failed != 0 || res.OK < 2000 {
				t.Errorf("split load: %v, want at least 2,000 requests and 0 failed", res)
			}
			if share < 26 || share > 34 {
				t.Errorf("canary share %.1f%%, want 30 ± 4", share)
			}
		} else {
			must("weight", "30")
		}

		run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
		time.Sleep(200 * time.Millisecond)
		must("promote") // returns once generation 2 serves both slots
		st = a.settled(t, 2)
		for _, w := range st.Workers {
			if w.Gen != 2 {
				t.Errorf("%s: after promote worker %d serves generation %d, want 2", tc.name, w.Worker, w.Gen)
			}
		}
		a.write("v3", "--notify")
		must("reload", "--hold")
		ctltest.Wait(a.hs, 10*time.Second, "canary of the whole pool held", func(st supervisor.Status) bool {
			return st.Canary == 3 && st.CanaryWorkers == 2
		})
		must("weight", "50")
		time.Sleep(300 * time.Millisecond)
		must("rollback")
		st = a.settled(t, 2)
		time.Sleep(200 * time.Millisecond)
		res := run.Stop()
		t.Logf("%s: promote and rollback of a pool's canary: %v; versions %v", tc.name, res, res.Versions)
		checkLoss(t, tc.name, res, tc.wantZero)
		if res.Versions["v3"] == 0 {
			t.Errorf("%s: the canary pool at weight 50 answered nothing", tc.name)
		}
		if tc.wantZero {
			if res.Versions["v2"] == 0 || res.Versions["v1"] == 0 {
				t.Errorf("versions %v: want v1 before the promote, v2 after", res.Versions)
			}
			a.checkWorkerSockets(t, st)
			if got := get(t, a.addr); got != "v2" {
				t.Errorf("after rollback: answered by %q, want v2", got)
			}
		}
		a.hs.Signal(syscall.SIGTERM)
		a.hs.Wait(30 * time.Second)
	}
}
