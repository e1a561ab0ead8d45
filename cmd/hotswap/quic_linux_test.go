package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/quicload"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

const quicappPkg = "github.com/hotswap-dev/hotswap/examples/quicapp"

// quicScale is the load of the QUIC reload tests: 50 long-lived
// connections over 10 reloads in make test, the 200 over 20 with
// HOTSWAP_QUIC_FULL=1 (make test-quic).
func quicScale() (long, reloads int) {
	if os.Getenv("HOTSWAP_QUIC_FULL") != "" {
		return 200, 20
	}
	return 50, 10
}

// quicConnWait is --drain-conn-wait of the QUIC tests, hotswap's default:
// how long an old generation keeps its connections after the cutover
// before its stop signal. Handshakes in flight at the cutover must end
// within it.
const quicConnWait = supervisor.DefaultDrainConnWait

// quicRun is one QUIC load across reloads.
type quicRun struct {
	hsFlags  []string
	appFlags []string
	long     int
	reloads  int
}

// quicOutcome is what a run saw: the load, and when the test saw each
// generation's cutover.
type quicOutcome struct {
	res     quicload.Result
	cutover map[int]time.Time // generation to when the status showed it serving
	stopped map[int]time.Time // generation to when hotswap logged its stop signal
	sockets int               // UDP sockets on the port once the last old generation has exited
	peak    int               // the most UDP sockets on the port right after a cutover
}

func (r quicRun) run(t *testing.T) quicOutcome {
	t.Helper()
	hotswap := proctest.Build(t, hotswapPkg)
	quicapp := proctest.Build(t, quicappPkg)
	args := append([]string{"--log-format", "json", "-l", "quic=udp4://127.0.0.1:0", "--ready", "notify",
		"--drain-conn-wait", quicConnWait.String(), "--drain-timeout", "10s", "--max-draining", "32"}, r.hsFlags...)
	args = append(args, "--", quicapp, "--version", "v{gen}", "--notify", "--grace", "5s")
	hs := proctest.Start(t, hotswap, append(args, r.appFlags...)...)
	addr := ctltest.WaitServing(hs, 1, 10*time.Second).Listeners[0].Address
	_, port, _ := strings.Cut(addr, ":")

	out := quicOutcome{cutover: map[int]time.Time{}}
	load := quicload.Start(t.Context(), quicload.Config{Addr: addr, Long: r.long, RampUp: 2 * time.Second, New: 2, Duration: 3 * time.Minute})
	for deadline := time.Now().Add(30 * time.Second); load.Up() < r.long; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d long-lived connections answered within 30s", load.Up(), r.long)
		}
	}
	for n := 2; n <= r.reloads+1; n++ {
		if st, ok := ctltest.Reload(hs, n, 30*time.Second, func() { hs.Signal(syscall.SIGHUP) }); !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
		out.cutover[n] = time.Now()
		out.peak = max(out.peak, udpSockets(t, port))
		time.Sleep(400 * time.Millisecond)
	}
	// The last old generation drains, its clients move on.
	ctltest.WaitGone(hs, r.reloads, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	out.res = load.Stop()
	out.sockets = udpSockets(t, port)
	// When each stop signal went out is history the status does not
	// keep: the log events' timestamps hold it.
	out.stopped = map[int]time.Time{}
	for _, e := range hs.Events("stopping generation") {
		at, err := time.Parse(time.RFC3339Nano, e.Str("@timestamp"))
		if err != nil {
			t.Fatalf("stopping generation %d: @timestamp %q: %v", e.Int("gen"), e.Str("@timestamp"), err)
		}
		out.stopped[e.Int("gen")] = at
	}
	hs.Signal(syscall.SIGTERM)
	hs.Wait(30 * time.Second)
	return out
}

// TestQUICReloadsKeepConnections is the promise: long-lived
// HTTP/3 connections, each sending a request every 100 ms, plus new
// connections all the time, across reloads: no failed request, no
// connection error, no handshake timeout; every long-lived connection
// stays on the generation that accepted it until that one drains (its
// stop signal comes quicConnWait after the cutover, and its GOAWAY moves
// the client); new connections reach the new generation right after the
// cutover.
func TestQUICReloadsKeepConnections(t *testing.T) {
	long, reloads := quicScale()
	out := quicRun{long: long, reloads: reloads}.run(t)
	res := out.res
	t.Logf("CID steering, %d long-lived connections, %d reloads: %s", long, reloads, res)
	if res.Failed > 0 {
		t.Errorf("%d requests failed: %v", res.Failed, res.Errors)
		logFailures(t, out)
	}
	if res.OK < long*reloads {
		t.Errorf("only %d requests answered", res.OK)
	}
	checkStays(t, out)
	checkNewReachNew(t, out)
	// One generation serves; the group may keep spares, which receive
	// nothing, but never more sockets than generations overlapped.
	t.Logf("UDP sockets on the port: at most %d right after a cutover, %d at the end", out.peak, out.sockets)
	if out.sockets < 1 || out.sockets > out.peak {
		t.Errorf("%d UDP sockets on the port with one generation left, want 1 to %d", out.sockets, out.peak)
	}
}

// checkStays checks that every long-lived connection answers from one
// generation until that generation was told to stop, and never goes back.
func checkStays(t *testing.T, out quicOutcome) {
	t.Helper()
	last := map[int]quicload.Sample{}
	moves := 0
	samples := append([]quicload.Sample(nil), out.res.Samples...)
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].Start.Before(samples[j].Start) })
	for _, s := range samples {
		if s.Client < 0 || s.Err != "" {
			continue
		}
		prev, ok := last[s.Client]
		last[s.Client] = s
		if !ok || prev.Gen == s.Gen {
			continue
		}
		moves++
		if s.Gen < prev.Gen {
			t.Errorf("connection %d went back from generation %d to %d at %s", s.Client, prev.Gen, s.Gen, s.Start.Format(time.StampMicro))
			continue
		}
		// An answer from a new generation can only come once the old
		// one was told to stop (it then sends GOAWAY): hotswap logs that
		// just before the signal.
		if stop, ok := out.stopped[prev.Gen]; !ok || s.Start.Add(s.Dur).Before(stop) {
			t.Errorf("connection %d left generation %d (answered by %d at %s) before hotswap told it to stop (%s)", s.Client, prev.Gen, s.Gen,
				s.Start.Add(s.Dur).Format(time.StampMicro), stop.Format(time.StampMicro))
		}
	}
	if moves == 0 {
		t.Errorf("no long-lived connection moved to a new generation: the load did not see the reloads")
	}
	t.Logf("long-lived connections moved %d times", moves)
}

// checkNewReachNew checks that a new connection started after a cutover was
// answered by that generation or a later one.
func checkNewReachNew(t *testing.T, out quicOutcome) {
	t.Helper()
	bad := 0
	for _, s := range out.res.Samples {
		if s.Client >= 0 || s.Err != "" {
			continue
		}
		for n, c := range out.cutover {
			if s.Start.After(c) && s.Gen < n {
				if bad++; bad <= 5 {
					t.Errorf("new connection at +%s after the cutover to %d answered by generation %d", s.Start.Sub(c).Round(time.Millisecond), n, s.Gen)
				}
				break
			}
		}
	}
}

// TestQUICReloadsWithoutSteeringFail runs the same load where hotswap
// cannot keep connections on their generation: shared mode (both
// generations read one socket) and reuseport mode with a server that
// ignores HOTSWAP_QUIC_CID (everything reaches the new generation at the
// cutover). Both must show failures, or the test above proves nothing.
func TestQUICReloadsWithoutSteeringFail(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	long, reloads := quicScale()
	for _, tc := range []struct {
		name     string
		hsFlags  []string
		appFlags []string
	}{
		{"shared", []string{"--mode", "shared"}, nil},
		{"reuseport without CIDs", nil, []string{"--no-cid"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			res := quicRun{hsFlags: tc.hsFlags, appFlags: tc.appFlags, long: long, reloads: reloads}.run(t).res
			t.Logf("%s: %s", tc.name, res)
			if res.Failed == 0 {
				t.Errorf("%s: no request failed across %d reloads: the load cannot see broken connections", tc.name, reloads)
			}
		})
	}
}

// udpSockets counts the UDP sockets bound to port, from /proc/net/udp.
func udpSockets(t *testing.T, port string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) {
			n++
		}
	}
	return n
}

// TestQUICRestartAfterCrash: when the current generation dies, its
// restart takes over its UDP socket and slot; new connections are served
// by it, and the group holds no socket of the dead one.
func TestQUICRestartAfterCrash(t *testing.T) {
	q := startQUIC(t)
	hs, hotswap, pidfile, addr, pid := q.hs, q.hotswap, q.pidfile, q.addr, q.pid1
	_, port, _ := strings.Cut(addr, ":")
	if n := udpSockets(t, port); n != 1 {
		t.Fatalf("%d UDP sockets on port %s with one generation, want 1", n, port)
	}
	out, err := exec.Command(hotswap, "status", "--json", "--pidfile", pidfile).Output()
	if err != nil {
		t.Fatalf("hotswap status: %v", err)
	}
	var st struct {
		Generations []struct {
			Gen     int    `json:"gen"`
			QUICCID string `json:"quic_cid"`
		} `json:"generations"`
	}
	if err := json.Unmarshal(out, &st); err != nil || len(st.Generations) != 1 || !strings.HasPrefix(st.Generations[0].QUICCID, "01") || !strings.HasSuffix(st.Generations[0].QUICCID, "/12") {
		t.Errorf("status --json: generations %+v (%v), want generation 1 with quic_cid 01xxxxxx/12", st.Generations, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctltest.WaitServing(hs, 2, 30*time.Second)
	res := quicload.Start(t.Context(), quicload.Config{Addr: addr, New: 2, Duration: time.Second}).Wait()
	t.Logf("after the restart: %s", res)
	if res.Failed > 0 || res.OK == 0 {
		t.Errorf("new connections after the restart: %s", res)
	}
	for _, s := range res.Samples {
		if s.Gen != 2 {
			t.Fatalf("answered by generation %d, want the restart, 2", s.Gen)
		}
	}
	if n := udpSockets(t, port); n != 1 {
		t.Errorf("%d UDP sockets on port %s after the restart, want 1 (the crashed generation's, taken over)", n, port)
	}
	q.stop()
}

// TestQUICExecProbeReachesNewGeneration: an exec: readiness check that
// sends from $HOTSWAP_PROBE_SOURCE to the public UDP port reaches the
// generation being gated, not the one serving: quicapp --probe fails
// unless generation {gen} answers, so each reload succeeds only if its
// probes reach the new generation while clients stay on the old one.
func TestQUICExecProbeReachesNewGeneration(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	quicapp := proctest.Build(t, quicappPkg)
	dir := t.TempDir()
	addrFile, script := filepath.Join(dir, "addr"), filepath.Join(dir, "probe")
	body := fmt.Sprintf("#!/bin/sh\nexec %s --probe \"https://$(cat %s)/\" --want-gen \"$1\"\n", quicapp, addrFile)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	check := "exec:" + script + " {gen}"
	hs := proctest.Start(t, hotswap, "--log-format", "json", "-l", "quic=udp4://127.0.0.1:0",
		"--ready", check, "--ready-timeout", "15s", "--drain-conn-wait", "200ms", "--", quicapp, "--version", "v{gen}")
	addr := ctltest.Addr(hs, 10*time.Second)
	if err := os.WriteFile(addrFile, []byte(addr), 0o644); err != nil {
		t.Fatal(err)
	}
	ctltest.WaitServing(hs, 1, 20*time.Second)
	load := quicload.Start(t.Context(), quicload.Config{Addr: addr, Long: 5, New: 1, Duration: time.Minute})
	for n := 2; n <= 4; n++ {
		if st, ok := ctltest.Reload(hs, n, 30*time.Second, func() { hs.Signal(syscall.SIGHUP) }); !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
	}
	res := load.Stop()
	if res.Failed > 0 {
		t.Errorf("load during the gated reloads: %s", res)
	}
	hs.Signal(syscall.SIGTERM)
	hs.Wait(30 * time.Second)
}

// TestQUICSelfUpgradeRefused: a self-upgrade with a UDP listener in
// reuseport mode is refused, saying why, and the generation keeps serving.
func TestQUICSelfUpgradeRefused(t *testing.T) {
	q := startQUIC(t)
	hs, addr := q.hs, q.addr
	hs.Signal(upgradeSignal)
	// The refusal and its reason are the feature: the log event says them.
	e := hs.WaitEvent(10*time.Second, "self-upgrade failed, still serving", nil)
	if !strings.Contains(e.Str("error"), "UDP listeners in reuseport mode") {
		t.Errorf("got %q, want the UDP listeners named", e.Str("error"))
	}
	res := quicload.Start(t.Context(), quicload.Config{Addr: addr, New: 1, Duration: 500 * time.Millisecond}).Wait()
	if res.Failed > 0 || res.OK == 0 {
		t.Errorf("after the refused upgrade: %s", res)
	}
	q.stop()
}

// TestQUICCanary: a canary held beside the current generation gets no new
// QUIC connection at weight 50 (UDP has no split), all of them at 100.
func TestQUICCanary(t *testing.T) {
	q := startQUIC(t)
	hotswap, pidfile, addr := q.hotswap, q.pidfile, q.addr
	ctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(hotswap, append(args, "--pidfile", pidfile)...).CombinedOutput(); err != nil {
			t.Fatalf("hotswap %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	gens := func() map[int]int {
		t.Helper()
		res := quicload.Start(t.Context(), quicload.Config{Addr: addr, New: 2, Duration: 500 * time.Millisecond}).Wait()
		if res.Failed > 0 || res.OK == 0 {
			t.Fatalf("new connections: %s", res)
		}
		out := map[int]int{}
		for _, s := range res.Samples {
			out[s.Gen]++
		}
		return out
	}
	ctl("reload", "--hold")
	ctl("weight", "50")
	if g := gens(); len(g) != 1 || g[1] == 0 {
		t.Errorf("canary at weight 50: new connections answered by %v, want generation 1 only", g)
	}
	ctl("weight", "100")
	if g := gens(); len(g) != 1 || g[2] == 0 {
		t.Errorf("canary at weight 100: new connections answered by %v, want generation 2 only", g)
	}
	q.stop()
}

// quicHotswap is hotswap serving quicapp (--ready notify) on a UDP port of
// 127.0.0.1, with a pidfile for the client commands.
type quicHotswap struct {
	hs               *proctest.Proc
	hotswap, pidfile string
	addr             string
	pid1             int // generation 1's pid
}

func startQUIC(t *testing.T) quicHotswap {
	t.Helper()
	q := quicHotswap{hotswap: proctest.Build(t, hotswapPkg), pidfile: filepath.Join(t.TempDir(), "hotswap.pid")}
	q.hs = proctest.Start(t, q.hotswap, "--log-format", "json", "-l", "quic=udp4://127.0.0.1:0", "--ready", "notify",
		"--pidfile", q.pidfile, "--", proctest.Build(t, quicappPkg), "--version", "v{gen}", "--notify")
	st := ctltest.WaitServing(q.hs, 1, 10*time.Second)
	q.addr = st.Listeners[0].Address
	g, _ := ctltest.Gen(st, 1)
	q.pid1 = g.PID
	return q
}

func (q quicHotswap) stop() {
	q.hs.Signal(syscall.SIGTERM)
	q.hs.Wait(30 * time.Second)
}

// logFailures logs the first failed requests with the last stop signal
// before each, to tell a reload's effect from a starved machine.
func logFailures(t *testing.T, out quicOutcome) {
	t.Helper()
	n := 0
	for _, s := range out.res.Samples {
		if s.Err == "" {
			continue
		}
		if n++; n > 10 {
			return
		}
		last, gen := time.Time{}, 0
		for g, at := range out.stopped {
			if at.Before(s.Start) && at.After(last) {
				last, gen = at, g
			}
		}
		t.Logf("failed: connection %d, %s after generation %d was told to stop, %s: %s", s.Client, s.Start.Sub(last).Round(time.Millisecond), gen, s.Dur.Round(time.Millisecond), s.Err)
	}
}
