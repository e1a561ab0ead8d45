package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// statusTimeout bounds the Status call of one scrape.
const statusTimeout = 5 * time.Second

// metricsObserver records the supervisor's events that a status snapshot
// cannot show: how long reloads and drains took.
type metricsObserver struct {
	reloadDur *histogram
	drainDur  *histogram
}

func newMetricsObserver() *metricsObserver {
	return &metricsObserver{
		reloadDur: newHistogram("hotswap_reload_duration_seconds",
			"Time from the start of a reload until the new generation serves or was rolled back.",
			"outcome", []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}),
		drainDur: newHistogram("hotswap_drain_duration_seconds",
			"Time from a generation's stop signal until it exited.",
			"", []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}),
	}
}

func (m *metricsObserver) ReloadDone(_ int, d time.Duration, err error) {
	m.reloadDur.observe(outcome(err), d.Seconds())
}

func (m *metricsObserver) Stopped(_ int, d time.Duration) { m.drainDur.observe("", d.Seconds()) }

func (m *metricsObserver) Restarted(int) {} // counted from the status

func outcome(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}

// statusCollector reads a status snapshot at each scrape, so the counts
// are those `hotswap status` shows.
type statusCollector struct {
	sup interface {
		Status(ctx context.Context) (supervisor.Status, error)
	}
	exes exeVersions
}

// families returns the families of one status snapshot.
func (c *statusCollector) families() []family {
	up := family{name: "hotswap_up", help: "1 when the supervisor answered this scrape's status request.", typ: "gauge"}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := c.sup.Status(ctx)
	if err != nil {
		up.add(0)
		return []family{up}
	}
	up.add(1)
	reloads := family{name: "hotswap_reloads_total", help: "Reloads by outcome: ok (the new generation serves) or failed (rolled back).", typ: "counter"}
	reloads.add(float64(st.Reloads.OK), "outcome", "ok")
	reloads.add(float64(st.Reloads.Failed), "outcome", "failed")
	restarts := family{name: "hotswap_child_restarts_total", help: "Generations started after the current one died on its own.", typ: "counter"}
	restarts.add(float64(st.Restarts))
	repairs := family{name: "hotswap_steering_repairs_total", help: "Mismatches between a reuseport group's model and the kernel's sockets that hotswap found and repaired (a leaked socket, a member shut down behind its back); 0 unless something is wrong.", typ: "counter"}
	repairs.add(float64(st.SteeringRepairs))
	foreign := family{name: "hotswap_steering_foreign_sockets_total", help: "Sockets of other processes found listening in a reuseport group; never steered to.", typ: "counter"}
	foreign.add(float64(st.ForeignSockets))
	gens := family{name: "hotswap_generations", help: "Live generations by state.", typ: "gauge"}
	byState := map[supervisor.State]int{supervisor.StateStarting: 0, supervisor.StateReady: 0, supervisor.StateDraining: 0}
	for _, g := range st.Generations {
		byState[g.State]++
	}
	for _, state := range []supervisor.State{supervisor.StateStarting, supervisor.StateReady, supervisor.StateDraining} {
		gens.add(float64(byState[state]), "state", string(state))
	}
	info := family{name: "hotswap_generation_info", typ: "gauge",
		help: "One series per live generation, always 1: its state, pid, the executable it runs and that executable's version (sha256: and the first 12 hex digits of its content's SHA-256)."}
	start := family{name: "hotswap_generation_start_time_seconds", help: "When a live generation was started, in seconds since the Unix epoch.", typ: "gauge"}
	c.exes.prune(st.Generations)
	started := map[int]time.Time{} // a pool's generation: its first worker's start
	var ids []int
	for _, g := range st.Generations {
		exe, ver := c.exes.of(g)
		info.add(1, "generation", strconv.Itoa(g.ID), "pid", strconv.Itoa(g.PID), "state", string(g.State), "executable", exe, "version", ver)
		if t, ok := started[g.ID]; !ok || g.Started.Before(t) {
			if !ok {
				ids = append(ids, g.ID)
			}
			started[g.ID] = g.Started
		}
	}
	for _, id := range ids {
		start.add(float64(started[id].UnixNano())/1e9, "generation", strconv.Itoa(id))
	}
	workerInfo := family{name: "hotswap_worker_info", typ: "gauge",
		help: "With --workers, one series per worker slot, always 1: the generation and pid serving it (0 while it restarts), its state and the CPU it is pinned to (\"\" without --cpu-affinity)."}
	workerQueue := family{name: "hotswap_worker_queue_length", help: "With --workers, connections waiting in a worker slot's accept queues.", typ: "gauge"}
	workerRestarts := family{name: "hotswap_worker_restarts_total", help: "With --workers, workers of a slot started again after the one serving it died on its own.", typ: "counter"}
	workerConns := family{name: "hotswap_worker_open_connections", help: "With --workers, connections on the TCP listeners' ports that a slot's serving worker (and its children) holds open at the scrape, from sock_diag and /proc/PID/fd; the kernel counts no connections accepted per socket.", typ: "gauge"}
	for _, w := range st.Workers {
		slot, cpu := strconv.Itoa(w.Worker), ""
		if w.CPU != nil {
			cpu = strconv.Itoa(*w.CPU)
		}
		workerInfo.add(1, "worker", slot, "generation", strconv.Itoa(w.Gen), "pid", strconv.Itoa(w.PID), "state", string(w.State), "cpu", cpu)
		workerQueue.add(float64(w.Queue), "worker", slot)
		workerRestarts.add(float64(w.Restarts), "worker", slot)
		workerConns.add(float64(w.Conns), "worker", slot)
	}
	queue := family{name: "hotswap_listener_queue_length", help: "Connections waiting in a listener's accept queue.", typ: "gauge"}
	backlog := family{name: "hotswap_listener_backlog", help: "A listener's accept queue capacity.", typ: "gauge"}
	for i, l := range st.Listeners {
		name := l.Name
		if name == "" {
			name = strconv.Itoa(i)
		}
		queue.add(float64(l.Queue), "listener", name, "address", l.Address)
		backlog.add(float64(l.Backlog), "listener", name, "address", l.Address)
	}
	return []family{up, reloads, restarts, repairs, foreign, gens, info, start, workerInfo, workerQueue, workerRestarts, workerConns, queue, backlog}
}

// exeVersions remembers the executable and version of each generation's
// process (each worker's, in a pool), read from /proc/PID/exe: the file
// that process runs even after it was replaced on disk (install, mv). Two
// scrapes may collect at once, hence the lock.
type exeVersions struct {
	mu    sync.Mutex
	byPID map[int]exeVersion
}

type exeVersion struct {
	gen       int // a pid reused by a later generation is read again
	exe, vers string
}

// of returns the executable and version of g. Only a generation that
// passed its gate is remembered: before that its process may still be a
// wrapper (sh -c 'exec ...') that has not executed the server yet.
func (e *exeVersions) of(g supervisor.GenerationStatus) (string, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.byPID[g.PID]; ok && v.gen == g.ID {
		return v.exe, v.vers
	}
	v := exeVersion{gen: g.ID, exe: "unknown", vers: "unknown"}
	proc := "/proc/" + strconv.Itoa(g.PID) + "/exe"
	if path, err := os.Readlink(proc); err == nil {
		v.exe = strings.TrimSuffix(path, " (deleted)")
	}
	if f, err := os.Open(proc); err == nil {
		h := sha256.New()
		if _, err := io.Copy(h, f); err == nil {
			v.vers = "sha256:" + hex.EncodeToString(h.Sum(nil)[:6])
		}
		f.Close()
	}
	if g.State != supervisor.StateStarting && v.vers != "unknown" {
		if e.byPID == nil {
			e.byPID = map[int]exeVersion{}
		}
		e.byPID[g.PID] = v
	}
	return v.exe, v.vers
}

// prune forgets processes that are gone.
func (e *exeVersions) prune(live []supervisor.GenerationStatus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for pid := range e.byPID {
		if !slices.ContainsFunc(live, func(g supervisor.GenerationStatus) bool { return g.PID == pid }) {
			delete(e.byPID, pid)
		}
	}
}

// newMetricsHandler serves hotswap's metrics, its build's, the Go
// runtime's and the process's.
func newMetricsHandler(sup *supervisor.Supervisor, obs *metricsObserver) http.Handler {
	c := &statusCollector{sup: sup}
	build := family{name: "hotswap_build_info", help: "Always 1: the version of this hotswap binary and the Go release that built it.", typ: "gauge"}
	build.add(1, "version", version, "goversion", runtime.Version())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs := append(c.families(), obs.reloadDur.family(), obs.drainDur.family(), build)
		fs = append(fs, goFamilies()...)
		fs = append(fs, processFamilies()...)
		slices.SortFunc(fs, func(a, b family) int { return strings.Compare(a.name, b.name) })
		w.Header().Set("Content-Type", metricsContentType)
		writeFamilies(w, fs)
	})
}

// Limits of the metrics server: a network client of the metrics port can
// hold at most metricsMaxConns of hotswap's descriptors, each for at most
// the time it takes to send one request (metricsReadTimeout) or to sit idle
// between two (metricsIdleTimeout).
const (
	metricsMaxConns     = 64
	metricsReadTimeout  = 5 * time.Second  // headers and body of a request
	metricsWriteTimeout = 15 * time.Second // a scrape waits statusTimeout at most
	metricsIdleTimeout  = 30 * time.Second // keep-alive between scrapes
)

// newMetricsServer returns the metrics HTTP server with every timeout set.
func newMetricsServer(h http.Handler, log hclog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
}

// capListener closes every connection accepted beyond max open ones at
// once, so the kernel's accept queue never fills with clients waiting for
// a slot and hotswap's descriptors stay bounded.
type capListener struct {
	net.Listener
	slots   chan struct{}
	refused atomic.Uint64
	log     hclog.Logger
}

func newCapListener(ln net.Listener, max int, log hclog.Logger) *capListener {
	return &capListener{Listener: ln, slots: make(chan struct{}, max), log: log}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
		}
		c.Close()
		if n := l.refused.Add(1); n&(n-1) == 0 { // the 1st, 2nd, 4th, 8th, ...
			l.log.Warn("metrics connection refused: too many open", "max", cap(l.slots), "refused", n)
		}
	}
}

// slotConn gives its slot back when closed, once.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
