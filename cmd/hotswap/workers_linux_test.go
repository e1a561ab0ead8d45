package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// workerScript runs goapp with the version and flags files of its
// generation; a file FLAGS.wN, when present, replaces FLAGS for worker N
// (HOTSWAP_WORKER), so a test can break one worker of a generation.
const workerScript = `bin=$0 v=$1 f=$2; shift 2; w=$f.w$HOTSWAP_WORKER; [ -e "$w" ] && f=$w; exec "$bin" --version "$(cat "$v")" $(cat "$f") "$@"`

// startWorkers runs hotswap --workers 2 with hsFlags around goapp, each
// generation's workers reading a.verFile and a.flags (the first: "v1",
// flags), and waits until every worker of generation 1 serves.
func startWorkers(t *testing.T, flags string, hsFlags []string, goappFlags ...string) *app {
	t.Helper()
	dir := t.TempDir()
	a := &app{t: t, verFile: filepath.Join(dir, "version"), flags: filepath.Join(dir, "flags"), gen: 1, pool: true, workerFlags: flags}
	a.write("v1", flags)
	hsFlags = append([]string{"--workers", "2", "--pidfile", filepath.Join(dir, "hotswap.pid")}, hsFlags...)
	args := append([]string{"--log-format", "json", "-l", "http=tcp://127.0.0.1:0"}, hsFlags...)
	args = append(args, "--", "sh", "-c", workerScript, proctest.Build(t, goappPkg), a.verFile, a.flags)
	a.hs = proctest.Start(t, proctest.Build(t, hotswapPkg), append(args, goappFlags...)...)
	a.addr = a.waitWorkers(1, 10*time.Second).Listeners[0].Address
	return a
}

// waitWorkers waits until every worker slot is served by a ready worker of
// generation n and no other process is live.
func (a *app) waitWorkers(n int, d time.Duration) supervisor.Status {
	a.t.Helper()
	return ctltest.Wait(a.hs, d, fmt.Sprintf("every worker of generation %d serving", n), func(st supervisor.Status) bool {
		if len(st.Workers) == 0 || len(st.Generations) != len(st.Workers) {
			return false
		}
		for _, w := range st.Workers {
			if w.Gen != n || w.State != supervisor.StateReady {
				return false
			}
		}
		return true
	})
}

// reloadCmd runs `hotswap reload` against a after writing the version
// and flags files; it returns the exit code and the output.
func (a *app) reloadCmd(version, flags string) (int, string) {
	a.t.Helper()
	a.write(version, flags)
	code, out, errOut := ctl(a.t, "reload", "--control", ctltest.Path(a.hs))
	return code, out + errOut
}

var bodyWorker = regexp.MustCompile(`version=(\S+) gen=(\d+) worker=(\d+) pid=(\d+)`)

// askWorkers sends n requests, each on a new connection, and returns per
// answering pid the HOTSWAP_WORKER it reported (header and body agree).
func askWorkers(t *testing.T, addr string, n int) map[int]string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := map[int]string{}
	for range n {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := bodyWorker.FindStringSubmatch(string(b))
		if m == nil || resp.Header.Get("X-Worker") != m[3] {
			t.Fatalf("answer %q with X-Worker %q: want version=V gen=G worker=W pid=P", b, resp.Header.Get("X-Worker"))
		}
		pid, _ := strconv.Atoi(m[4])
		if w, ok := got[pid]; ok && w != m[3] {
			t.Fatalf("pid %d reported worker %s and %s", pid, w, m[3])
		}
		got[pid] = m[3]
	}
	return got
}

// listeners are the sockets listening on a's port (sock_diag).
func (a *app) listeners(t *testing.T) []reuse.Listener {
	t.Helper()
	_, p, _ := net.SplitHostPort(a.addr)
	port, _ := strconv.Atoi(p)
	ls, err := reuse.Listeners("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// checkWorkerSockets holds the pool to what the kernel says (checkPool:
// each worker its own listening socket, held by its process and by no
// other worker, and the spares) and checks that each worker reports its
// own HOTSWAP_WORKER.
func (a *app) checkWorkerSockets(t *testing.T, st supervisor.Status) {
	t.Helper()
	a.checkPool(t, st, "")
	want := map[int]string{}
	for _, w := range st.Workers {
		want[w.PID] = strconv.Itoa(w.Worker)
	}
	got := askWorkers(t, a.addr, 60)
	for pid, w := range got {
		if want[pid] != w {
			t.Errorf("pid %d answered as worker %s, status says worker %q", pid, w, want[pid])
		}
	}
	if len(got) != len(want) {
		t.Errorf("60 requests reached pids %v, want every worker of %v", got, want)
	}
}

// TestWorkersReloadUnderLoad: a pool of 2 workers, each with its own
// socket, reloaded rolling (30 times) and all at once (10 times) under
// load by a server that exits at once on SIGTERM: 0 failed requests, every
// worker seeing its own HOTSWAP_WORKER on its own socket before and after;
// the same pool without the drain loses requests.
func TestWorkersReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	proctest.SetSysctl(t, "net.ipv4.tcp_migrate_req", "0")
	// The control is the stalled pair: old workers that stop accepting
	// for a while before their stop signal hold a queue at every reload,
	// which only the drain saves. Without the stall, what a naive reload
	// loses depends on whether a worker's queue happens to be empty at
	// its exit: 0 to 22 per 10 reloads here, no control at all.
	for _, tc := range []struct {
		name     string
		flags    []string
		reloads  int
		wantZero bool
		stall    bool
	}{
		{"rolling", []string{"--rollout", "rolling"}, 30, true, false},
		{"all", []string{"--rollout", "all"}, 10, true, false},
		{"all, 4 workers", []string{"--rollout", "all", "--workers", "4"}, 10, true, false},
		{"all, old workers stall", []string{"--rollout", "all"}, 10, true, true},
		{"all, naive, old workers stall", []string{"--rollout", "all", "--unsafe-skip-drain"}, 10, false, true},
	} {
		a := startWorkers(t, "--notify --stall-on 200ms", append([]string{"--ready", "notify"}, tc.flags...), "--on-term", "exit")
		if tc.wantZero {
			a.checkWorkerSockets(t, a.waitWorkers(1, 10*time.Second))
		}
		res := a.loadReloads(t, tc.reloads, tc.stall)
		t.Logf("%s, %d reloads: %v; versions %v", tc.name, tc.reloads, res, res.Versions)
		checkLoss(t, tc.name, res, tc.wantZero)
		if tc.wantZero {
			a.checkWorkerSockets(t, a.waitWorkers(tc.reloads+1, 10*time.Second))
		}
		a.hs.Signal(syscall.SIGTERM)
		a.hs.Wait(30 * time.Second)
	}
}

// TestWorkersNeverReadyStopsRollout: in a rolling reload whose worker 1
// never becomes ready, worker 0 of the new generation serves, worker 1 of
// the old one still serves, `hotswap reload` fails saying so, and no
// request fails; the next good reload completes the pool.
func TestWorkersNeverReadyStopsRollout(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	a := startWorkers(t, "--notify", []string{"--ready", "notify", "--ready-timeout", "1s"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(a.flags+".w1", nil, 0o644); err != nil { // worker 1: no --notify
		t.Fatal(err)
	}
	code, out := a.reloadCmd("v2", "--notify")
	t.Logf("hotswap reload: exit %d: %s", code, strings.TrimSpace(out))
	if code != 1 || !strings.Contains(out, "worker 1") || !strings.Contains(out, "worker 0 generation 2, worker 1 generation 1") {
		t.Errorf("hotswap reload: exit %d: %q; want 1, naming worker 1 and saying worker 0 serves generation 2, worker 1 generation 1", code, out)
	}
	st := ctltest.Wait(a.hs, 10*time.Second, "worker 0 on generation 2, worker 1 on 1, the failed worker gone", func(st supervisor.Status) bool {
		return len(st.Workers) == 2 && st.Workers[0].Gen == 2 && st.Workers[1].Gen == 1 && st.Workers[1].Pending == 0 && len(st.Generations) == 2
	})
	a.checkWorkerSockets(t, st)
	_, text, _ := ctl(t, "status", "--control", ctltest.Path(a.hs))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^WORKER\s+GEN\s+PID\s+STATE\s+CPU\s+QUEUE\s+CONNS\s+RESTARTS$`),
		regexp.MustCompile(`(?m)^0\s+2\s+` + strconv.Itoa(st.Workers[0].PID) + `\s+ready\s`),
		regexp.MustCompile(`(?m)^1\s+1\s+` + strconv.Itoa(st.Workers[1].PID) + `\s+ready\s`),
	} {
		if !want.MatchString(text) {
			t.Errorf("hotswap status lacks a line matching %s:\n%s", want, text)
		}
	}
	if err := os.Remove(a.flags + ".w1"); err != nil {
		t.Fatal(err)
	}
	if code, out := a.reloadCmd("v3", "--notify"); code != 0 {
		t.Fatalf("good reload after the stopped one: exit %d: %s", code, out)
	}
	a.checkWorkerSockets(t, a.waitWorkers(3, 10*time.Second))
	res := run.Stop()
	t.Logf("load: %v; versions %v", res, res.Versions)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
}

// TestWorkersCrashedWorkerRestartedAlone: under load, worker 1 stops
// accepting (its queue fills) and is SIGKILLed; it is restarted alone, in
// its generation, on the same socket, and serves what had queued: no
// request fails, worker 0 is never touched.
func TestWorkersCrashedWorkerRestartedAlone(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	promtool := proctest.Command(t, "promtool", "prometheus")
	a := startWorkers(t, "--notify --stall-on 10s", []string{"--ready", "notify", "--metrics", "127.0.0.1:0"})
	metrics := a.hs.WaitEvent(10*time.Second, "metrics listening", nil).Str("address")
	st := a.waitWorkers(1, 10*time.Second)
	w0, w1 := st.Workers[0].PID, st.Workers[1].PID
	ino := st.Generations[1].Queues[0].Inode
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(w1, syscall.SIGUSR1); err != nil { // stop accepting
		t.Fatal(err)
	}
	queued := ctltest.Wait(a.hs, 10*time.Second, "connections queued on worker 1", func(st supervisor.Status) bool {
		return st.Workers[1].Queue >= 8
	}).Workers[1].Queue
	if err := syscall.Kill(w1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = ctltest.Wait(a.hs, 10*time.Second, "worker 1 restarted and ready", func(st supervisor.Status) bool {
		w := st.Workers[1]
		return w.PID != w1 && w.State == supervisor.StateReady && w.Restarts == 1
	})
	time.Sleep(200 * time.Millisecond)
	res := run.Stop()
	t.Logf("%d connections queued on worker 1 when it was killed; load: %v", queued, res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0 (the killed worker had accepted nothing unanswered): %v", res.Failed, res.Errors)
	}
	if w := st.Workers[0]; w.PID != w0 || w.Restarts != 0 {
		t.Errorf("worker 0: pid %d with %d restarts, want pid %d untouched", w.PID, w.Restarts, w0)
	}
	if w := st.Workers[1]; w.Gen != 1 {
		t.Errorf("restarted worker 1 runs generation %d, want 1", w.Gen)
	}
	if got := st.Generations[1].Queues[0].Inode; got != ino {
		t.Errorf("restarted worker 1 has socket inode %d, want the killed one's %d (queue kept)", got, ino)
	}
	a.checkWorkerSockets(t, st)
	body := scrape(t, metrics)
	promtoolCheck(t, promtool, "after a worker restart", body)
	for _, re := range []string{
		`(?m)^hotswap_worker_restarts_total\{worker="1"\} 1$`,
		`(?m)^hotswap_worker_restarts_total\{worker="0"\} 0$`,
		`(?m)^hotswap_worker_info\{cpu="",generation="1",pid="` + strconv.Itoa(st.Workers[1].PID) + `",state="ready",worker="1"\} 1$`,
		`(?m)^hotswap_worker_queue_length\{worker="0"\} \d+$`,
		`(?m)^hotswap_worker_open_connections\{worker="1"\} \d+$`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("metrics lack a line matching %s:\n%s", re, body)
		}
	}
}

// TestWorkersCPUAffinity: with --cpu-affinity, worker i and every thread
// it starts run on the i-th allowed CPU only, and every connection whose
// SYN that CPU handled reaches worker i, before and after a reload.
func TestWorkersCPUAffinity(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	cpus := allowedCPUs(t)
	if len(cpus) < 2 {
		t.Skipf("needs 2 CPUs, may run on %v", cpus)
	}
	a := startWorkers(t, "--notify", []string{"--ready", "notify", "--cpu-affinity"}, "--version", "w{worker}")
	for n := 1; n <= 2; n++ {
		st := a.waitWorkers(n, 10*time.Second)
		for i, w := range st.Workers {
			if w.CPU == nil || *w.CPU != cpus[i] {
				t.Errorf("generation %d worker %d: status CPU %v, want %d", n, i, w.CPU, cpus[i])
			}
			if got := threadCPUs(t, w.PID); len(got) != 1 || got[0] != strconv.Itoa(cpus[i]) {
				t.Errorf("generation %d worker %d (pid %d): its threads may run on %v, want only CPU %d", n, i, w.PID, got, cpus[i])
			}
			got, err := load.FromCPU(a.addr, cpus[i], 200)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("w%d", i); got[want] != 200 {
				t.Errorf("generation %d: 200 connections from CPU %d: %v, want all on %s", n, cpus[i], got, want)
			}
		}
		if n == 1 {
			if code, out := a.reloadCmd("v2", "--notify"); code != 0 {
				t.Fatalf("reload: exit %d: %s", code, out)
			}
		}
	}
}

func allowedCPUs(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Cpus_allowed_list:\s*(\S+)`).FindSubmatch(b)
	var cpus []int
	for _, r := range strings.Split(string(m[1]), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		if !ok {
			hi = lo
		}
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		for c := l; c <= h; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// threadCPUs returns the distinct Cpus_allowed_list values of pid's threads.
func threadCPUs(t *testing.T, pid int) []string {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of pid %d: %v", pid, err)
	}
	seen := map[string]bool{}
	var out []string
	re := regexp.MustCompile(`(?m)^Cpus_allowed_list:\s*(\S+)`)
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		if m := re.FindSubmatch(b); m != nil && !seen[string(m[1])] {
			seen[string(m[1])] = true
			out = append(out, string(m[1]))
		}
	}
	return out
}

// TestWorkersRandomized: a seeded sequence of rolling reloads, reloads
// whose worker k never becomes ready, SIGKILLs of a random worker, and
// SIGKILLs of a random process while a reload rolls, against a pool of 3
// under load. After each step settles, the kernel's listeners on the port
// (sock_diag) are exactly one per worker, each held by that worker's
// process, plus the group's spares with empty queues, and hotswap
// repaired nothing. No request fails but those a killed worker had
// accepted, counted apart. HOTSWAP_WORKERS_SEED replays a run.
func TestWorkersRandomized(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HOTSWAP_WORKERS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HOTSWAP_WORKERS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay: HOTSWAP_WORKERS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 16))
	const workers, steps = 3, 16
	a := startWorkers(t, "--notify", []string{"--workers", strconv.Itoa(workers), "--ready", "notify", "--ready-timeout", "1s", "--restart-backoff-max", "400ms"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: 2 * time.Minute, Timeout: 5 * time.Second})
	c := &chaos{t: t, a: a}
	counts := map[string]int{}
	for step := 1; step <= steps; step++ {
		st := a.settled(t, workers)
		a.checkPool(t, st, fmt.Sprintf("before step %d: ", step))
		if t.Failed() {
			run.Stop()
			t.Fatalf("seed %d: the invariant broke before step %d", seed, step)
		}
		k := rng.IntN(workers)
		switch what := rng.IntN(4); what {
		case 0:
			counts["good reload"]++
			if code, out := a.reloadCmd(fmt.Sprintf("s%d", step), "--notify"); code != 0 {
				t.Errorf("step %d: good reload: exit %d: %s", step, code, out)
			}
		case 1:
			counts["worker never ready"]++
			bad := fmt.Sprintf("%s.w%d", a.flags, k)
			if err := os.WriteFile(bad, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			code, out := a.reloadCmd(fmt.Sprintf("s%d", step), "--notify")
			os.Remove(bad)
			if code != 1 || !strings.Contains(out, fmt.Sprintf("worker %d: not ready", k)) {
				t.Errorf("step %d: reload whose worker %d is never ready: exit %d: %s", step, k, code, out)
			}
		case 2:
			counts["worker SIGKILLed"]++
			a.kill(t, st.Workers[k].PID)
		case 3:
			counts["SIGKILL during a rolling reload"]++
			a.write(fmt.Sprintf("s%d", step), "--notify")
			a.hs.Signal(syscall.SIGHUP)
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
			now, err := ctltest.Ask(ctltest.Path(a.hs))
			if err != nil {
				t.Fatal(err)
			}
			g := now.Generations[rng.IntN(len(now.Generations))]
			t.Logf("step %d: SIGKILL worker %d of generation %d (pid %d, %s)", step, g.Worker, g.ID, g.PID, g.State)
			a.kill(t, g.PID)
		}
	}
	st := a.settled(t, workers)
	a.checkPool(t, st, "at the end: ")
	time.Sleep(100 * time.Millisecond)
	res := run.Stop()
	lost, bad := splitFailures(res, c.deaths())
	t.Logf("steps %v; load %v; lost by a killed worker %d; reloads %+v, restarts %d", counts, res, lost, st.Reloads, st.Restarts)
	for _, s := range bad {
		t.Errorf("seed %d: failed request: %s at %s after %s, not explained by a killed worker", seed, s.Err, s.Start.Format("15:04:05.000"), s.Dur.Round(time.Millisecond))
	}
}

// kill SIGKILLs pid and waits until hotswap has reaped it.
func (a *app) kill(t *testing.T, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGKILL)
	ctltest.Wait(a.hs, 10*time.Second, fmt.Sprintf("pid %d reaped", pid), func(st supervisor.Status) bool {
		return !slices.ContainsFunc(st.Generations, func(g supervisor.GenerationStatus) bool { return g.PID == pid })
	})
}

// settled waits until no reload is in progress, every slot is served by a
// ready worker with no restart due, and no other process is live.
func (a *app) settled(t *testing.T, workers int) supervisor.Status {
	t.Helper()
	return ctltest.Wait(a.hs, 30*time.Second, "the pool settled", func(st supervisor.Status) bool {
		if st.Reloading || len(st.Workers) != workers || len(st.Generations) != workers {
			return false
		}
		for _, w := range st.Workers {
			if w.State != supervisor.StateReady || !w.NextRestart.IsZero() {
				return false
			}
		}
		return true
	})
}

// checkPool holds a settled pool to the kernel: one listening socket per
// worker, held by its process, plus the spares with empty queues; no
// steering repair. A socket whose queue hotswap is relaying (a worker
// killed while its slot's new worker was gating) listens for a moment
// more: it may take up to 2s to hold.
func (a *app) checkPool(t *testing.T, st supervisor.Status, when string) {
	t.Helper()
	var problems []string
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if problems = a.poolViolations(t, st); len(problems) == 0 || time.Now().After(end) {
			break
		}
		var err error
		if st, err = ctltest.Ask(ctltest.Path(a.hs)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range problems {
		t.Errorf("%s%s", when, p)
	}
}

func (a *app) poolViolations(t *testing.T, st supervisor.Status) []string {
	t.Helper()
	var out []string
	errorf := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	ls := a.listeners(t)
	mine := map[uint64]int{}
	for _, g := range st.Generations {
		if len(g.Queues) != 1 {
			errorf("worker %d of generation %d has %d sockets, want 1", g.Worker, g.ID, len(g.Queues))
			continue
		}
		ino := g.Queues[0].Inode
		if _, dup := mine[ino]; dup {
			errorf("two workers share socket inode %d", ino)
		}
		mine[ino] = g.PID
		if !holds(g.PID, ino) {
			errorf("worker %d (pid %d) does not hold its socket inode %d", g.Worker, g.PID, ino)
		}
		for _, o := range st.Generations {
			if o.PID != g.PID && holds(o.PID, ino) {
				errorf("worker %d (pid %d) also holds worker %d's socket inode %d", o.Worker, o.PID, g.Worker, ino)
			}
		}
	}
	others := 0
	for _, l := range ls {
		if _, ok := mine[l.Inode]; ok {
			delete(mine, l.Inode)
			continue
		}
		others++
		if l.Queue != 0 {
			errorf("socket inode %d of no worker has %d connections queued", l.Inode, l.Queue)
		}
	}
	if len(mine) != 0 || others != st.Listeners[0].Spares {
		errorf("workers' sockets not listening %v, %d other sockets for %d spares: %+v", mine, others, st.Listeners[0].Spares, ls)
	}
	if st.SteeringRepairs != 0 {
		for _, e := range a.hs.Events(proctest.RepairMessage) {
			errorf("steering repair after %s: %s; model %s; kernel %s; generations %s", e.Str("after"), e.Str("problems"), e.Str("model"), e.Str("kernel"), e.Str("generations"))
		}
	}
	return out
}

// TestWorkersOpenConns: each worker's open_conns in the status is the
// number of keep-alive connections it answered and still holds, and falls
// to 0 when the clients close them.
func TestWorkersOpenConns(t *testing.T) {
	if !proctest.InNetns(t) {
		return
	}
	a := startWorkers(t, "--notify", []string{"--ready", "notify"})
	a.waitWorkers(1, 10*time.Second)
	want := map[int]int{}
	var clients []*http.Transport
	for range 20 {
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		clients = append(clients, tr)
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + a.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // the connection stays open, idle
		w, _ := strconv.Atoi(resp.Header.Get("X-Worker"))
		want[w]++
	}
	t.Logf("20 keep-alive connections by worker: %v", want)
	counts := func(st supervisor.Status) map[int]int {
		got := map[int]int{}
		for _, w := range st.Workers {
			got[w.Worker] = w.Conns
		}
		return got
	}
	ctltest.Wait(a.hs, 5*time.Second, fmt.Sprintf("open_conns %v", want), func(st supervisor.Status) bool {
		got := counts(st)
		return got[0] == want[0] && got[1] == want[1]
	})
	for _, tr := range clients {
		tr.CloseIdleConnections()
	}
	ctltest.Wait(a.hs, 5*time.Second, "open_conns 0 after the clients closed", func(st supervisor.Status) bool {
		got := counts(st)
		return got[0] == 0 && got[1] == 0
	})
}
