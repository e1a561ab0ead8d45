package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// The randomized fault test (make chaos). A seeded generator picks each
// step among the faults below and runs it against hotswap and goapp under
// continuous load, new-connection and keep-alive clients together. After
// every step the reuseport group is checked against the kernel
// (sock_diag) and hotswap must have made no steering repair; over the
// whole run no request may fail, timeouts included, except those a server
// that died (SIGKILL, a crash) had already accepted, which are counted and
// reported apart.
//
//	HOTSWAP_CHAOS_SEED     the seed (default: from the clock; printed first)
//	HOTSWAP_CHAOS_STEPS    steps in all, half per socket mode (default 150: make test)
//	HOTSWAP_CHAOS_CLIENTS  concurrent clients (default 16; a quarter keep-alive)

// chaosRegressions are seeds that failed once, replayed by every run.
var chaosRegressions = []struct {
	seed  uint64
	steps int
	why   string
}{
	{1, 12, "canary, current SIGKILLed: the socket whose queue hotswap relayed to the canary was flagged as held by a dead process"},
	{1796162725518568359, 10, "canary, current SIGKILLed: the relay kept the dead socket listening for as long as a relayed keep-alive connection"},
}

// chaosStep is one kind of step; shared says whether it runs in shared
// mode too (in shared mode every generation accepts from one queue, so a
// server without graceful shutdown and blue/green do not apply).
type chaosStep struct {
	name   string
	shared bool
	run    func(c *chaos)
}

var chaosSteps = []chaosStep{
	{"good reload", true, func(c *chaos) { c.reload("", true) }},
	{"exits at start", true, func(c *chaos) { c.reload("--exit-at-start 1", false) }},
	{"exits after 100ms", true, func(c *chaos) { c.reload("--sleep 100ms", false) }},
	{"never ready", true, func(c *chaos) { c.reload("--health-status 500", false) }},
	{"ready after a delay", true, func(c *chaos) { c.reload("--start-delay 400ms", true) }},
	{"crashes right after ready", true, (*chaos).crashAfterReady},
	{"current SIGKILLed", true, (*chaos).killCurrent},
	{"ignores its stop signal", true, func(c *chaos) { c.reload("--ignore-term", true) }},
	{"burst of 20 SIGHUPs", true, (*chaos).burst},
	{"canary promoted", false, func(c *chaos) { c.canary("promote") }},
	{"canary rolled back", false, func(c *chaos) { c.canary("rollback") }},
	{"canary, current SIGKILLed", false, func(c *chaos) { c.canary("kill") }},
	{"no graceful shutdown", false, func(c *chaos) { c.reload("--on-term exit", true) }},
	{"closes idle keep-alive connections", true, func(c *chaos) { c.reload("--idle-timeout 15ms", true) }},
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HOTSWAP_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HOTSWAP_CHAOS_SEED=%q: %v", s, err)
		}
	}
	steps := envInt(t, "HOTSWAP_CHAOS_STEPS", 150)
	clients := envInt(t, "HOTSWAP_CHAOS_CLIENTS", 16)
	fmt.Printf("chaos: seed %d, %d steps (half per socket mode), %d clients (replay: make chaos SEED=%d STEPS=%d)\n", seed, steps, clients, seed, steps)
	t.Logf("chaos: seed %d, %d steps, %d clients", seed, steps, clients)
	for _, mode := range []string{"reuseport", "shared"} {
		t.Run(mode, func(t *testing.T) { runChaos(t, mode, seed, (steps+1)/2, clients) })
	}
}

// TestChaosRegressions replays the seeds that once failed.
func TestChaosRegressions(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	for _, r := range chaosRegressions {
		for _, mode := range []string{"reuseport", "shared"} {
			t.Run(fmt.Sprintf("%d/%s", r.seed, mode), func(t *testing.T) {
				t.Logf("regression: %s", r.why)
				runChaos(t, mode, r.seed, r.steps, 16)
			})
		}
	}
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// chaos is one run: the app, its loads and what the steps did.
type chaos struct {
	t       *testing.T
	a       *app
	mode    string
	rng     *rand.Rand
	step    int
	pidfile string
	version int
}

func runChaos(t *testing.T, mode string, seed uint64, steps, clients int) {
	dir := t.TempDir()
	c := &chaos{t: t, mode: mode, rng: rand.New(rand.NewPCG(seed, uint64(len(mode)))), pidfile: filepath.Join(dir, "hotswap.pid")}
	c.a = startApp(t, []string{"--mode", mode, "--pidfile", c.pidfile,
		"--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "1s",
		"--drain-timeout", "1s", "--drain-conn-wait", "300ms",
		// Crash steps come often: a backoff doubling up to 30s would
		// outgrow the clients' patience.
		"--restart-backoff-max", "400ms"},
		"--health-listen", "127.0.0.1:{port}")
	keepAlive := max(1, clients/4)
	t0 := time.Now()
	fresh := load.Start(t.Context(), load.Config{Addr: c.a.addr, Concurrency: clients - keepAlive, Duration: 30 * time.Minute, Timeout: 5 * time.Second})
	kept := load.Start(t.Context(), load.Config{Addr: c.a.addr, Concurrency: keepAlive, KeepAlive: true, Pace: 20 * time.Millisecond, Duration: 30 * time.Minute, Timeout: 5 * time.Second})
	var pool []chaosStep
	for _, s := range chaosSteps {
		if mode == "reuseport" || s.shared {
			pool = append(pool, s)
		}
	}
	counts := map[string]int{}
	for c.step = 1; c.step <= steps; c.step++ {
		s := pool[c.rng.IntN(len(pool))]
		counts[s.name]++
		t.Logf("step %d: %s", c.step, s.name)
		c.quiesce() // each step starts from a settled supervisor
		s.run(c)
		if t.Failed() {
			c.dumpLog()
			t.Fatalf("seed %d, mode %s: failed at step %d (%s); replay: make chaos SEED=%d STEPS=%d", seed, mode, c.step, s.name, seed, 2*steps)
		}
		c.check()
		if t.Failed() {
			c.dumpLog()
			t.Fatalf("seed %d, mode %s: the invariant broke after step %d (%s); replay: make chaos SEED=%d STEPS=%d", seed, mode, c.step, s.name, seed, 2*steps)
		}
	}
	time.Sleep(200 * time.Millisecond)
	rf, rk := fresh.Stop(), kept.Stop()
	st := c.a.status(t)
	deaths := c.deaths()
	lostF, badF := splitFailures(rf, deaths)
	lostK, badK := splitFailures(rk, deaths)
	t.Logf("chaos %s: seed %d, %d steps in %s; steps %v", mode, seed, steps, time.Since(t0).Round(time.Millisecond), counts)
	t.Logf("new-connection clients: %v", rf)
	t.Logf("keep-alive clients: %v", rk)
	t.Logf("generations that died with accepted requests: %d; requests they had accepted, lost: %d; other failures: %d; steering repairs: %d; reloads %d ok, %d failed; restarts %d",
		len(deaths), lostF+lostK, len(badF)+len(badK), st.SteeringRepairs, st.Reloads.OK, st.Reloads.Failed, st.Restarts)
	fmt.Printf("chaos %s: seed %d steps %d clients %d: requests %d, failed %d (accepted by a dying server %d, other %d), timeouts %d, repairs %d, wall %s\n",
		mode, seed, steps, clients, rf.OK+rf.Failed+rk.OK+rk.Failed, rf.Failed+rk.Failed, lostF+lostK, len(badF)+len(badK),
		timeouts(rf)+timeouts(rk), st.SteeringRepairs, time.Since(t0).Round(time.Second))
	for _, s := range append(badF, badK...) {
		t.Errorf("failed request: %s at %s after %s, not explained by a dying server", s.Err, s.Start.Format("15:04:05.000"), s.Dur.Round(time.Millisecond))
	}
	if rf.OK < 100*steps/10 || rk.OK < 10 {
		t.Errorf("the load did not run: %v; %v", rf, rk)
	}
	checkNoRepairs(t, c.a, st)
}

func timeouts(r load.Result) int {
	n := 0
	for k, v := range r.Errors {
		if strings.HasSuffix(k, "timeout") {
			n += v
		}
	}
	return n
}

// splitFailures counts the failures that a dying server explains (a
// reset or EOF ending within 250ms of a death) and returns the others.
func splitFailures(r load.Result, deaths []time.Time) (int, []load.Sample) {
	lost := 0
	var bad []load.Sample
	for _, s := range r.Samples {
		if s.Err == "" {
			continue
		}
		kind := s.Err[strings.IndexByte(s.Err, '/')+1:]
		explained := kind == "ECONNRESET" || kind == "EOF" || kind == "EPIPE" || strings.Contains(kind, "connection reset") || strings.HasSuffix(kind, "EOF")
		if explained && near(s.Start.Add(s.Dur), deaths, 250*time.Millisecond) {
			lost++
			continue
		}
		bad = append(bad, s)
	}
	return lost, bad
}

// deaths lists when generations died with what they had accepted: killed
// (SIGKILL) or crashed (exited on their own while serving).
func (c *chaos) deaths() []time.Time {
	var out []time.Time
	for _, e := range c.a.hs.Events("generation exited") {
		if st := e.Str("status"); st == "signal SIGKILL" || st == "status 3" {
			out = append(out, eventTime(c.t, e))
		}
	}
	return out
}

// lastGen is the newest generation hotswap started.
func (c *chaos) lastGen() int {
	n := 0
	for _, e := range c.a.hs.Events("generation started") {
		n = max(n, e.Int("gen"))
	}
	return n
}

// reload reloads to a new version with flags and checks the outcome.
func (c *chaos) reload(flags string, wantOK bool) {
	c.t.Helper()
	c.version++
	n := c.lastGen() + 1
	e := c.a.reload(n, fmt.Sprintf("s%d", c.step), flags)
	c.a.write(fmt.Sprintf("s%d", c.step), "") // what a restart or the next reload runs
	if ok := e.Msg() == "reload succeeded"; ok != wantOK {
		// A reload may be refused while --max-draining old generations
		// still drain (a stubborn one takes --drain-timeout): that is
		// the documented outcome, and it says so.
		if !wantOK || !strings.Contains(e.Str("reason"), "still draining") {
			c.t.Errorf("step %d: reload to generation %d with %q: %v, want success %v", c.step, n, flags, e, wantOK)
		}
	}
}

// crashAfterReady reloads to a version that crashes 500ms after it
// becomes ready; the restart runs a good version.
func (c *chaos) crashAfterReady() {
	n := c.lastGen() + 1
	e := c.a.reload(n, fmt.Sprintf("s%d", c.step), "--crash-after 500ms")
	c.a.write(fmt.Sprintf("s%d", c.step), "")
	if e.Msg() != "reload succeeded" {
		c.t.Errorf("step %d: reload to the crashing version: %v", c.step, e)
		return
	}
	c.a.hs.WaitEvent(10*time.Second, "generation exited", proctest.Gen(n))
	c.a.hs.WaitEvent(20*time.Second, "generation ready", proctest.Gen(n+1))
}

// killCurrent SIGKILLs the current generation and waits for its restart.
func (c *chaos) killCurrent() {
	st := c.status()
	pid := c.pidOf(st, st.Current)
	if pid == 0 {
		c.t.Errorf("step %d: no current generation to kill: %+v", c.step, st.Generations)
		return
	}
	n := c.lastGen() + 1
	syscall.Kill(pid, syscall.SIGKILL)
	c.a.hs.WaitEvent(20*time.Second, "generation ready", proctest.Gen(n))
}

func (c *chaos) pidOf(st statusJSON, id int) int {
	for _, g := range st.Generations {
		if g.ID == id {
			return g.PID
		}
	}
	return 0
}

// burst sends 20 SIGHUPs 5ms apart; they coalesce, and the last reload
// started serves.
func (c *chaos) burst() {
	c.a.write(fmt.Sprintf("s%d", c.step), "")
	for range 20 {
		c.a.hs.Signal(syscall.SIGHUP)
		time.Sleep(5 * time.Millisecond)
	}
	c.quiesce()
}

// quiesce waits until no reload is in progress or queued.
func (c *chaos) quiesce() {
	c.t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !c.status().Reloading {
			return
		}
	}
	c.t.Errorf("step %d: reloads still in progress after 60s", c.step)
}

// canary holds a new version beside the current one, weights it, then
// promotes it, rolls it back or kills the current generation (the canary
// takes over).
func (c *chaos) canary(how string) {
	hotswap := proctest.Build(c.t, hotswapPkg)
	ctl := func(args ...string) {
		c.t.Helper()
		out, err := exec.Command(hotswap, append(args, "--pidfile", c.pidfile)...).CombinedOutput()
		if err != nil {
			c.t.Errorf("step %d: hotswap %s: %v: %s", c.step, strings.Join(args, " "), err, out)
		}
	}
	c.a.write(fmt.Sprintf("s%d", c.step), "")
	c.quiesce() // a held reload is refused while another is in progress
	ctl("reload", "--hold")
	if c.t.Failed() {
		return
	}
	ctl("weight", strconv.Itoa(10+c.rng.IntN(80)))
	time.Sleep(time.Duration(50+c.rng.IntN(200)) * time.Millisecond)
	switch how {
	case "kill":
		st := c.status()
		syscall.Kill(c.pidOf(st, st.Current), syscall.SIGKILL)
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if s := c.status(); s.Canary == 0 && s.Current == st.Canary {
				return
			}
		}
		c.t.Errorf("step %d: the canary did not take over from the killed current generation", c.step)
	default:
		ctl(how)
	}
}

// check waits up to 2s for the kernel's view of the port to meet the
// invariant (a socket whose queue hotswap is relaying, a generation
// exiting, are passing states) and fails the test with the last
// violation if it never does.
func (c *chaos) check() {
	c.t.Helper()
	var problems []string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if problems = c.violations(); len(problems) == 0 {
			return
		}
	}
	for _, p := range problems {
		c.t.Errorf("step %d: %s", c.step, p)
	}
}

// violations holds the kernel's view of the port to the invariant: every
// socket listening there is a live generation's, or (reuseport) one of the
// group's spares with an empty queue; the current generation's socket
// listens and its process holds it; hotswap repaired nothing.
func (c *chaos) violations() []string {
	c.t.Helper()
	var out []string
	errorf := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	before := c.status()
	_, p, _ := net.SplitHostPort(c.a.addr)
	port, _ := strconv.Atoi(p)
	ls, err := reuse.Listeners("tcp", port)
	if err != nil {
		c.t.Fatal(err)
	}
	after := c.status()
	if after.SteeringRepairs != 0 {
		errorf("%d steering repairs: %v", after.SteeringRepairs, c.a.hs.Events(proctest.RepairMessage))
		return out
	}
	if c.mode == "shared" {
		if len(ls) != 1 {
			errorf("%d sockets listen on the port in shared mode, want 1: %+v", len(ls), ls)
		}
		return out
	}
	gens := map[uint64]int{}
	for _, st := range []statusJSON{before, after} {
		for _, g := range st.Generations {
			for _, q := range g.Queues {
				gens[q.Inode] = g.ID
			}
		}
	}
	others := 0
	for _, l := range ls {
		if _, ok := gens[l.Inode]; ok {
			continue
		}
		others++
		if l.Queue != 0 {
			errorf("socket inode %d belongs to no live generation and has %d connections queued: %+v; generations %+v", l.Inode, l.Queue, ls, after.Generations)
		}
	}
	if others > after.Listeners[0].Spares {
		var who []string
		for _, l := range ls {
			if _, ok := gens[l.Inode]; !ok {
				who = append(who, fmt.Sprintf("inode %d held by pids %v", l.Inode, holders(l.Inode)))
			}
		}
		errorf("%d sockets belong to no live generation, the group has %d spares: %+v (%s); generations %+v", others, after.Listeners[0].Spares, ls, strings.Join(who, ", "), after.Generations)
	}
	for _, g := range after.Generations {
		if g.ID != after.Current || g.State != supervisor.StateReady {
			continue
		}
		ino := g.Queues[0].Inode
		in := slices.ContainsFunc(ls, func(l reuse.Listener) bool { return l.Inode == ino })
		if !in || !holds(g.PID, ino) {
			errorf("current generation %d (pid %d): socket inode %d listens %v, held by it %v", g.ID, g.PID, ino, in, holds(g.PID, ino))
		}
	}
	return out
}

// status is `hotswap status --json`, without logging it (a run asks
// thousands of times).
func (c *chaos) status() statusJSON {
	c.t.Helper()
	out, err := exec.Command(proctest.Build(c.t, hotswapPkg), "status", "--json", "--pidfile", c.pidfile).Output()
	st := statusJSON{Status: &supervisor.Status{}}
	if jerr := json.Unmarshal(out, &st); jerr != nil {
		c.t.Fatalf("step %d: status --json: %v, %v\n%s", c.step, err, jerr, out)
	}
	return st
}

// dumpLog logs hotswap's last 150 lines, for a failed step.
func (c *chaos) dumpLog() {
	lines := c.a.hs.Lines()
	c.t.Logf("hotswap's last lines:\n%s", strings.Join(lines[max(0, len(lines)-150):], "\n"))
}

// holders lists the processes that have socket inode ino open.
func holders(ino uint64) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil && holds(pid, ino) {
			out = append(out, pid)
		}
	}
	return out
}
