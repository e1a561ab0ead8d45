package main

import (
	"fmt"
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
// weight 50 is rolled back under load; three such cycles. 0 failed
// requests throughout; the same cycles without the drain lose requests.
func TestWorkersBlueGreen(t *testing.T) {
	const blueGreenCycles = 3
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
		if tc.wantZero {
			// A canary larger than the pool is refused in one line, and
			// starts nothing; --workers goes with --hold only.
			code, _, errOut := ctl(t, "reload", "--hold", "--workers", "3", "--control", path)
			if code != 1 || !strings.Contains(errOut, "the pool has 2 (--workers), a canary at most that many; nothing was started") {
				t.Errorf("canary of 3 beside a pool of 2: exit %d, %q; want 1 and why", code, errOut)
			}
			if code, _, errOut := ctl(t, "reload", "--workers", "1", "--control", path); code != 2 || !strings.Contains(errOut, "with --hold") {
				t.Errorf("reload --workers without --hold: exit %d, %q; want 2 and why", code, errOut)
			}
			if st := a.settled(t, 2); st.Reloads.OK != 0 || len(st.Generations) != 2 {
				t.Errorf("refused canaries changed the pool: %+v", st)
			}
		}
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
			if _, out, _ := ctl(t, "status", "--control", path); !strings.Contains(out, "canary: generation 2 (1 of 2 workers) at weight 30%") {
				t.Errorf("status without the canary of 1 of 2 workers at 30%%:\n%s", out)
			}
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

		// Under one continuous load, cycles of: promote a canary of 1
		// (generation 2+2c, at weight 30), then hold a canary of the whole
		// pool (3+2c) at weight 50 and roll it back.
		run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: 2 * time.Minute})
		time.Sleep(200 * time.Millisecond)
		for c := range blueGreenCycles {
			promoted, rolledBack := 2+2*c, 3+2*c
			if c > 0 {
				a.write(fmt.Sprintf("v%d", promoted), "--notify")
				must("reload", "--hold", "--workers", "1")
				must("weight", "30")
				time.Sleep(200 * time.Millisecond)
			}
			must("promote") // returns once the canary's generation serves both slots
			for _, w := range a.settled(t, 2).Workers {
				if w.Gen != promoted {
					t.Errorf("%s: after promote worker %d serves generation %d, want %d", tc.name, w.Worker, w.Gen, promoted)
				}
			}
			a.write(fmt.Sprintf("v%d", rolledBack), "--notify")
			must("reload", "--hold")
			ctltest.Wait(a.hs, 10*time.Second, "canary of the whole pool held", func(st supervisor.Status) bool {
				return st.Canary == rolledBack && st.CanaryWorkers == 2
			})
			must("weight", "50")
			time.Sleep(300 * time.Millisecond)
			must("rollback")
			st = a.settled(t, 2)
		}
		time.Sleep(200 * time.Millisecond)
		res := run.Stop()
		t.Logf("%s: %d promotes and rollbacks of a pool's canary: %v; versions %v", tc.name, blueGreenCycles, res, res.Versions)
		checkLoss(t, tc.name, res, tc.wantZero)
		last := fmt.Sprintf("v%d", 2*blueGreenCycles)
		if tc.wantZero {
			for v := 1; v <= 1+2*blueGreenCycles; v++ {
				if res.Versions[fmt.Sprintf("v%d", v)] == 0 {
					t.Errorf("versions %v: want every promoted generation and every canary at weight 50 answering", res.Versions)
					break
				}
			}
			a.checkWorkerSockets(t, st)
			if got := get(t, a.addr); got != last {
				t.Errorf("after the last rollback: answered by %q, want %s", got, last)
			}
		}
		a.hs.Signal(syscall.SIGTERM)
		a.hs.Wait(30 * time.Second)
	}
}
