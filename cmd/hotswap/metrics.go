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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// statusTimeout bounds the Status call of one scrape.
const statusTimeout = 5 * time.Second

// metricsObserver records the supervisor's events that a status snapshot
// cannot show: how long reloads and drains took.
type metricsObserver struct {
	reloadDur *prometheus.HistogramVec
	drainDur  prometheus.Histogram
}

func newMetricsObserver() *metricsObserver {
	return &metricsObserver{
		reloadDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hotswap_reload_duration_seconds",
			Help:    "Time from the start of a reload until the new generation serves or was rolled back.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"outcome"}),
		drainDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hotswap_drain_duration_seconds",
			Help:    "Time from a generation's stop signal until it exited.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
}

func (m *metricsObserver) ReloadDone(_ int, d time.Duration, err error) {
	m.reloadDur.WithLabelValues(outcome(err)).Observe(d.Seconds())
}

func (m *metricsObserver) Stopped(_ int, d time.Duration) { m.drainDur.Observe(d.Seconds()) }

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
	up, reloads, restarts, gens, queue, backlog *prometheus.Desc
	repairs, foreign                            *prometheus.Desc
	genInfo, genStart                           *prometheus.Desc
	workerInfo, workerQueue, workerRestarts     *prometheus.Desc
	workerConns                                 *prometheus.Desc
	exes                                        exeVersions
}

func newStatusCollector(sup *supervisor.Supervisor) *statusCollector {
	return &statusCollector{
		sup:      sup,
		up:       prometheus.NewDesc("hotswap_up", "1 when the supervisor answered this scrape's status request.", nil, nil),
		reloads:  prometheus.NewDesc("hotswap_reloads_total", "Reloads by outcome: ok (the new generation serves) or failed (rolled back).", []string{"outcome"}, nil),
		restarts: prometheus.NewDesc("hotswap_child_restarts_total", "Generations started after the current one died on its own.", nil, nil),
		gens:     prometheus.NewDesc("hotswap_generations", "Live generations by state.", []string{"state"}, nil),
		queue:    prometheus.NewDesc("hotswap_listener_queue_length", "Connections waiting in a listener's accept queue.", []string{"listener", "address"}, nil),
		backlog:  prometheus.NewDesc("hotswap_listener_backlog", "A listener's accept queue capacity.", []string{"listener", "address"}, nil),
		repairs:  prometheus.NewDesc("hotswap_steering_repairs_total", "Mismatches between a reuseport group's model and the kernel's sockets that hotswap found and repaired (a leaked socket, a member shut down behind its back); 0 unless something is wrong.", nil, nil),
		foreign:  prometheus.NewDesc("hotswap_steering_foreign_sockets_total", "Sockets of other processes found listening in a reuseport group; never steered to.", nil, nil),
		genInfo: prometheus.NewDesc("hotswap_generation_info",
			"One series per live generation, always 1: its state, pid, the executable it runs and that executable's version (sha256: and the first 12 hex digits of its content's SHA-256).",
			[]string{"generation", "pid", "state", "executable", "version"}, nil),
		genStart: prometheus.NewDesc("hotswap_generation_start_time_seconds", "When a live generation was started, in seconds since the Unix epoch.", []string{"generation"}, nil),
		workerInfo: prometheus.NewDesc("hotswap_worker_info",
			"With --workers, one series per worker slot, always 1: the generation and pid serving it (0 while it restarts), its state and the CPU it is pinned to (\"\" without --cpu-affinity).",
			[]string{"worker", "generation", "pid", "state", "cpu"}, nil),
		workerQueue:    prometheus.NewDesc("hotswap_worker_queue_length", "With --workers, connections waiting in a worker slot's accept queues.", []string{"worker"}, nil),
		workerRestarts: prometheus.NewDesc("hotswap_worker_restarts_total", "With --workers, workers of a slot started again after the one serving it died on its own.", []string{"worker"}, nil),
		workerConns:    prometheus.NewDesc("hotswap_worker_open_connections", "With --workers, connections on the TCP listeners' ports that a slot's serving worker (and its children) holds open at the scrape, from sock_diag and /proc/PID/fd; the kernel counts no connections accepted per socket.", []string{"worker"}, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.reloads, c.restarts, c.gens, c.queue, c.backlog, c.repairs, c.foreign, c.genInfo, c.genStart, c.workerInfo, c.workerQueue, c.workerRestarts, c.workerConns} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := c.sup.Status(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Reloads.OK), "ok")
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Reloads.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(st.Restarts))
	ch <- prometheus.MustNewConstMetric(c.repairs, prometheus.CounterValue, float64(st.SteeringRepairs))
	ch <- prometheus.MustNewConstMetric(c.foreign, prometheus.CounterValue, float64(st.ForeignSockets))
	byState := map[supervisor.State]int{supervisor.StateStarting: 0, supervisor.StateReady: 0, supervisor.StateDraining: 0}
	for _, g := range st.Generations {
		byState[g.State]++
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.gens, prometheus.GaugeValue, float64(n), string(state))
	}
	c.exes.prune(st.Generations)
	started := map[int]time.Time{} // a pool's generation: its first worker's start
	for _, g := range st.Generations {
		id := strconv.Itoa(g.ID)
		exe, ver := c.exes.of(g)
		ch <- prometheus.MustNewConstMetric(c.genInfo, prometheus.GaugeValue, 1, id, strconv.Itoa(g.PID), string(g.State), exe, ver)
		if t, ok := started[g.ID]; !ok || g.Started.Before(t) {
			started[g.ID] = g.Started
		}
	}
	for id, t := range started {
		ch <- prometheus.MustNewConstMetric(c.genStart, prometheus.GaugeValue, float64(t.UnixNano())/1e9, strconv.Itoa(id))
	}
	for _, w := range st.Workers {
		slot, cpu := strconv.Itoa(w.Worker), ""
		if w.CPU != nil {
			cpu = strconv.Itoa(*w.CPU)
		}
		ch <- prometheus.MustNewConstMetric(c.workerInfo, prometheus.GaugeValue, 1, slot, strconv.Itoa(w.Gen), strconv.Itoa(w.PID), string(w.State), cpu)
		ch <- prometheus.MustNewConstMetric(c.workerQueue, prometheus.GaugeValue, float64(w.Queue), slot)
		ch <- prometheus.MustNewConstMetric(c.workerRestarts, prometheus.CounterValue, float64(w.Restarts), slot)
		ch <- prometheus.MustNewConstMetric(c.workerConns, prometheus.GaugeValue, float64(w.Conns), slot)
	}
	for i, l := range st.Listeners {
		name := l.Name
		if name == "" {
			name = strconv.Itoa(i)
		}
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(l.Queue), name, l.Address)
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(l.Backlog), name, l.Address)
	}
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
// runtime's and the process's, from a registry of its own.
func newMetricsHandler(sup *supervisor.Supervisor, obs *metricsObserver) http.Handler {
	reg := prometheus.NewRegistry()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hotswap_build_info",
		Help:        "Always 1: the version of this hotswap binary and the Go release that built it.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(newStatusCollector(sup), obs.reloadDur, obs.drainDur, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
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
