package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// reloadRun is one run of reloads under load.
type reloadRun struct {
	hsFlags    []string // besides -l and --log-format
	goappFlags []string
	reloads    int
	stall      bool // SIGUSR1 to the old generation (goapp --stall-on) before each reload
}

// run drives r and returns what the load saw; every reload must succeed.
func (r reloadRun) run(t *testing.T) load.Result {
	t.Helper()
	a := startApp(t, r.hsFlags, r.goappFlags...)
	res := a.loadReloads(t, r.reloads, r.stall)
	a.hs.Signal(syscall.SIGTERM)
	a.hs.Wait(30 * time.Second)
	return res
}

func (a *app) loadReloads(t *testing.T, reloads int, stall bool) load.Result {
	t.Helper()
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: 2 * time.Minute})
	time.Sleep(100 * time.Millisecond)
	for n := 2; n <= reloads+1; n++ {
		if stall {
			a.hs.Signal(syscall.SIGUSR1)
			time.Sleep(20 * time.Millisecond)
		}
		version := fmt.Sprintf("v%d", n)
		if a.pool {
			if code, out := a.reloadCmd(version, a.workerFlags); code != 0 {
				t.Fatalf("reload to generation %d: exit %d: %s", n, code, out)
			}
			a.waitWorkers(n, 30*time.Second)
		} else {
			if r := a.reload(n, version, ""); !r.OK {
				t.Fatalf("reload to generation %d: %v", n, r)
			}
			a.waitGone(n-1, 30*time.Second)
		}
		if got := get(t, a.addr); got != version {
			t.Fatalf("after reload %d: answered by %q, want %q", n, got, version)
		}
	}
	time.Sleep(100 * time.Millisecond)
	return run.Stop()
}

// TestReusePortServerWithoutGracefulShutdown is reuseport mode's promise:
// a server that exits at once on SIGTERM loses nothing over 30 reloads,
// with tcp_migrate_req=0, where shared mode and a naive SO_REUSEPORT
// restart (no drain) lose requests in the same setup; and an old
// generation that stops accepting for a while before its stop signal
// loses its whole queue without the drain, nothing with it.
func TestReusePortServerWithoutGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	proctest.SetSysctl(t, "net.ipv4.tcp_migrate_req", "0")
	noDrain := []string{"--on-term", "exit", "--stall-on", "200ms"}
	runs := []struct {
		name     string
		r        reloadRun
		wantZero bool
	}{
		{"reuseport", reloadRun{hsFlags: []string{"--mode", "reuseport", "--ready", "200ms"}, goappFlags: noDrain, reloads: 30}, true},
		{"shared", reloadRun{hsFlags: []string{"--mode", "shared", "--ready", "200ms"}, goappFlags: noDrain, reloads: 30}, false},
		{"naive reuseport", reloadRun{hsFlags: []string{"--mode", "reuseport", "--ready", "200ms", "--unsafe-skip-drain"}, goappFlags: noDrain, reloads: 30}, false},
		{"reuseport, old stalls", reloadRun{hsFlags: []string{"--mode", "reuseport", "--ready", "200ms"}, goappFlags: noDrain, reloads: 10, stall: true}, true},
		{"naive reuseport, old stalls", reloadRun{hsFlags: []string{"--mode", "reuseport", "--ready", "200ms", "--unsafe-skip-drain"}, goappFlags: noDrain, reloads: 10, stall: true}, false},
	}
	for _, tc := range runs {
		res := tc.r.run(t)
		t.Logf("%s, %d reloads: %v", tc.name, tc.r.reloads, res)
		checkLoss(t, tc.name, res, tc.wantZero)
	}
}

// checkLoss fails a run under load that did not run, or that lost
// requests when wantZero is set, or that lost none when it is the
// control that must show losses.
func checkLoss(t *testing.T, name string, res load.Result, wantZero bool) {
	t.Helper()
	if res.OK < 1000 {
		t.Errorf("%s: only %d requests succeeded: the load did not run", name, res.OK)
	}
	switch {
	case wantZero && res.Failed != 0:
		t.Errorf("%s: %d failed requests, want 0: %v", name, res.Failed, res.Errors)
	case !wantZero && res.Failed == 0:
		t.Errorf("%s: no failed requests; the control must show losses", name)
	}
}

// TestReusePortProbeReachesNewGeneration: a readiness probe of the public
// port must test the new generation. The new version's /healthz fails
// while the old one answers 200 on the same port: the reload fails, and no
// client request is lost or answered by the failed version.
func TestReusePortProbeReachesNewGeneration(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	port := proctest.FreePort(t) // in the test's own network namespace: stays free
	addr := "127.0.0.1:" + strconv.Itoa(port)
	a := startAppOn(t, addr, []string{"--mode", "reuseport", "--ready", "http://" + addr + "/healthz", "--ready-timeout", "2s"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(100 * time.Millisecond)
	r := a.reload(2, "v2-sick", "--health-status 500")
	if r.OK {
		t.Fatalf("reload of a version whose health check fails: %v, want reload failed", r)
	}
	t.Logf("reason: %s", r.Reason)
	if r := a.reload(3, "v3", ""); !r.OK {
		t.Fatalf("reload of a healthy version: %v", r)
	}
	res := run.Stop()
	t.Logf("load: %v; versions %v", res, res.Versions)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	if n := res.Versions["v2-sick"]; n != 0 {
		t.Errorf("%d client requests answered by the version that was never ready, want 0", n)
	}
}

// TestReusePortNoClientBeforeReady: under load, a new version that crashes
// 100 ms after it started accepting, and one that answers every request
// with 500 while its readiness probe fails, are rolled back with 0 failed
// client requests and no client request answered by them.
func TestReusePortNoClientBeforeReady(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	cases := []struct {
		name, version, flags string
		ready                func(addr string) string
	}{
		{"crashes after 100ms", "v2-crash", "--crash-after 100ms", func(string) string { return "500ms" }},
		{"answers 500", "v2-500", "--status 500 --health-status 500", func(addr string) string { return "http://" + addr + "/healthz" }},
	}
	for _, tc := range cases {
		addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
		a := startAppOn(t, addr, []string{"--mode", "reuseport", "--ready", tc.ready(addr), "--ready-timeout", "2s"})
		run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
		time.Sleep(100 * time.Millisecond)
		r := a.reload(2, tc.version, tc.flags)
		time.Sleep(100 * time.Millisecond)
		res := run.Stop()
		t.Logf("%s: %s (%s); load: %v; versions %v", tc.name, r, r.Reason, res, res.Versions)
		if r.OK {
			t.Errorf("%s: %s, want reload failed", tc.name, r)
		}
		if res.Failed != 0 {
			t.Errorf("%s: %d failed requests, want 0: %v", tc.name, res.Failed, res.Errors)
		}
		if n := res.Versions[tc.version]; n != 0 {
			t.Errorf("%s: %d client requests answered by %s, want 0", tc.name, n, tc.version)
		}
		if res.OK < 100 {
			t.Errorf("%s: only %d requests succeeded: the load did not run", tc.name, res.OK)
		}
		a.hs.Signal(syscall.SIGTERM)
		a.hs.Wait(30 * time.Second)
	}
}

// TestBlueGreen: a canary held beside the current generation gets its
// weight's share of new connections (20 % of 3,000, within 4 points), and
// promote and rollback each lose no request under load.
func TestBlueGreen(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	a := startApp(t, []string{"--mode", "reuseport", "--ready", "100ms", "--pidfile", pidfile})
	hotswap := proctest.Build(t, hotswapPkg)
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(hotswap, append(args, "--pidfile", pidfile)...).CombinedOutput()
		if err != nil {
			t.Fatalf("hotswap %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	a.write("v2", "")
	t.Log(ctl("reload", "--hold"))
	t.Log(ctl("weight", "20"))
	res, share := splitShare(t, a.addr, 3000, "v2")
	t.Logf("weight 20: %v; v2 share %.1f%%", res, share)
	if res.Failed != 0 || res.OK < 2000 {
		t.Errorf("split load: %v, want at least 2,000 requests and 0 failed", res)
	}
	if share < 16 || share > 24 {
		t.Errorf("canary share %.1f%%, want 20 ± 4", share)
	}

	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(200 * time.Millisecond)
	t.Log(ctl("promote"))
	a.waitGone(1, 30*time.Second)
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after promote: answered by %q, want v2", got)
	}
	a.write("v3", "")
	t.Log(ctl("reload", "--hold"))
	t.Log(ctl("weight", "50"))
	time.Sleep(300 * time.Millisecond)
	t.Log(ctl("rollback"))
	a.waitGone(3, 30*time.Second)
	time.Sleep(200 * time.Millisecond)
	res = run.Stop()
	t.Logf("promote and rollback: %v; versions %v", res, res.Versions)
	if res.Failed != 0 {
		t.Errorf("%d failed requests across promote and rollback, want 0: %v", res.Failed, res.Errors)
	}
	if res.Versions["v3"] == 0 {
		t.Errorf("the canary at weight 50 answered nothing")
	}
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after rollback: answered by %q, want v2", got)
	}
}

// TestReusePortSelfUpgradeUnderLoad: a self-upgrade in reuseport mode, of
// a server with no graceful shutdown, under load with tcp_migrate_req=0,
// loses no request: the new hotswap adopts the serving generation's socket,
// gates its own generation beside it and cuts over; the old hotswap drains
// its generation and exits 0. No copy of the old socket survives, and a
// reload on the new hotswap loses nothing either.
func TestReusePortSelfUpgradeUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	proctest.SetSysctl(t, "net.ipv4.tcp_migrate_req", "0")
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	a := startAppCmd(t, []string{"--mode", "reuseport", "--ready", "200ms", "--pidfile", pidfile}, "--on-term", "exit")
	_, p, _ := net.SplitHostPort(a.addr)
	port, _ := strconv.Atoi(p)
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	newPid, res := a.upgradeUnderLoad(t, pidfile, run)
	if res.Failed != 0 {
		t.Errorf("%d failed requests across a self-upgrade, want 0: %v", res.Failed, res.Errors)
	}
	if res.Versions["v1"] == 0 || res.Versions["v2"] == 0 || res.OK < 1000 {
		t.Errorf("load %v, versions %v: want at least 1,000 requests, by v1 and v2", res, res.Versions)
	}
	waitListeners(t, port, 1+reuse.Spares) // the old generation's socket left the group

	run = load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(200 * time.Millisecond)
	a.write("v3", "")
	// The new hotswap is not the test's child; its log goes on on the
	// old one's stderr, its control socket is its pid's.
	if st, ok := ctltest.ReloadAt(a.hs, control.DefaultPath(newPid), 2, 30*time.Second, func() { syscall.Kill(newPid, syscall.SIGHUP) }); !ok {
		t.Fatalf("reload on the new hotswap failed: %s", st.LastFailure)
	}
	// Its first generation's socket is a spare again once it has exited.
	st := ctltest.WaitAt(a.hs, control.DefaultPath(newPid), 15*time.Second, "generation 1 gone", ctltest.Gone(1))
	waitListeners(t, port, 1+st.Listeners[0].Spares)
	time.Sleep(200 * time.Millisecond)
	res = run.Stop()
	t.Logf("load across a reload on the new hotswap: %v; versions %v", res, res.Versions)
	if res.Failed != 0 {
		t.Errorf("%d failed requests across the reload after the upgrade, want 0: %v", res.Failed, res.Errors)
	}
	if got := get(t, a.addr); got != "v3" {
		t.Errorf("after the reload answered by %q, want v3", got)
	}
	syscall.Kill(newPid, syscall.SIGTERM)
	waitGone(t, newPid, 15*time.Second)
}

// splitShare sends n requests (16 clients, a new connection each) and
// returns the result and version's share of the successes, in percent.
func splitShare(t *testing.T, addr string, n int, version string) (load.Result, float64) {
	t.Helper()
	split := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 16, MaxRequests: n, Duration: time.Minute})
	for ok, failed := split.Count(); ok+failed < n; ok, failed = split.Count() {
		time.Sleep(20 * time.Millisecond)
	}
	res := split.Stop()
	return res, 100 * float64(res.Versions[version]) / float64(max(res.OK, 1))
}

// waitListeners waits up to 5s until exactly n TCP sockets listen on port
// (this network namespace's /proc/net/tcp).
func waitListeners(t *testing.T, port, n int) {
	t.Helper()
	got := -1
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if got = listenersOn(t, port); got == n {
			return
		}
	}
	t.Errorf("%d sockets listen on port %d, want %d", got, port, n)
}

func listenersOn(t *testing.T, port int) int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" {
			n++
		}
	}
	return n
}

// TestReusePortSelfUpgradeRefusedWhileBusy: with a canary held, a
// self-upgrade is refused with the reason, nothing is frozen, and the
// canary can still be promoted.
func TestReusePortSelfUpgradeRefusedWhileBusy(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	a := startApp(t, []string{"--mode", "reuseport", "--ready", "100ms", "--pidfile", pidfile})
	hotswap := proctest.Build(t, hotswapPkg)
	ctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(hotswap, append(args, "--pidfile", pidfile)...).CombinedOutput(); err != nil {
			t.Fatalf("hotswap %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	a.write("v2", "")
	ctl("reload", "--hold")
	a.hs.Signal(upgradeSignal)
	// The refusal and its reason are the feature: the log event says them.
	e := a.hs.WaitEvent(10*time.Second, "self-upgrade failed, still serving", nil)
	if !strings.Contains(e.Str("error"), "held as a canary") {
		t.Errorf("got %q, want the held canary named", e.Str("error"))
	}
	if got := get(t, a.addr); got != "v1" {
		t.Errorf("answered by %q, want v1", got)
	}
	ctl("promote")
	a.waitGone(1, 30*time.Second)
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after promote answered by %q, want v2", got)
	}
}
