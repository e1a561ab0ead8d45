package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// poolRun is one way of running N processes of a server on one port, a row
// of the worker-pool table.
type poolRun struct {
	Name    string
	Workers int
	Path    *pathResult // connections/s, p99, answers by worker (w0, w1, ...)
	// Local is, over connections dialled from a thread pinned to the i-th
	// allowed CPU for each worker i (load.FromCPU), the share answered by
	// worker i (the one --cpu-affinity pins to that CPU).
	Local float64
	Err   string
}

// share is the busiest worker's count of accepted connections over the
// idlest one's.
func (r poolRun) share() string {
	if r.Path == nil || len(r.Path.Versions) == 0 {
		return "-"
	}
	lo, hi := -1, 0
	for i := range r.Workers {
		n := r.Path.Versions["w"+strconv.Itoa(i)]
		hi = max(hi, n)
		if lo < 0 || n < lo {
			lo = n
		}
	}
	if lo <= 0 {
		return fmt.Sprintf("%d / 0", hi)
	}
	return fmt.Sprintf("%.2f", float64(hi)/float64(lo))
}

// poolTarget runs N workers and returns the address they serve.
type poolTarget interface {
	start() (string, error)
	close()
}

// measurePools measures, for each N, one shared queue (hotswap --mode
// shared --workers N: N goapps accepting from one socket), the kernel's
// SO_REUSEPORT hash (N servers binding the port themselves, no program),
// hotswap --workers N (a socket each, split evenly) and the same with
// --cpu-affinity.
func measurePools(ctx context.Context, cfg config, b *bins, logf func(string, ...any)) []poolRun {
	cpus, err := supervisor.AllowedCPUs()
	if err != nil {
		return []poolRun{{Name: "worker pools", Err: err.Error()}}
	}
	var out []poolRun
	for _, n := range cfg.poolN {
		ts := []struct {
			name string
			t    poolTarget
		}{
			{"one shared queue (hotswap --mode shared)", newPoolHotswap(b, n, "shared")},
			{"SO_REUSEPORT, kernel hash (no program)", &reuseHash{exe: cfg.exe, n: n}},
			{"hotswap --workers (even split)", newPoolHotswap(b, n, "")},
			{"hotswap --workers --cpu-affinity", newPoolHotswap(b, n, "", "--cpu-affinity")},
		}
		for _, x := range ts {
			r := poolRun{Name: x.name, Workers: n}
			r.Path, r.Local, err = runPool(ctx, cfg, x.t, n, cpus)
			if err != nil {
				r.Err = err.Error()
			}
			x.t.close()
			out = append(out, r)
			if r.Path != nil {
				logf("pool %-45s N=%d %.0f conn/s, p99 %v, max/min %s, CPU-local %.1f%% %s", r.Name, n, medianF(r.Path.RPS), median(r.Path.P99), r.share(), 100*r.Local, r.Err)
			} else {
				logf("pool %-45s N=%d %s", r.Name, n, r.Err)
			}
		}
	}
	return out
}

// runPool starts t, waits until each of its n workers answers, loads it
// and measures the CPU-local share.
func runPool(ctx context.Context, cfg config, t poolTarget, n int, cpus []int) (*pathResult, float64, error) {
	addr, err := t.start()
	if err != nil {
		return nil, 0, err
	}
	for i := range n {
		if _, err := waitVersion(addr, "w"+strconv.Itoa(i), 10*time.Second); err != nil {
			return nil, 0, err
		}
	}
	rs := runPaths(ctx, cfg, []path{{"pool", addr}})
	const perCPU = 200
	local, total := 0, 0
	for i := range min(n, len(cpus)) {
		got, err := load.FromCPU(addr, cpus[i], perCPU)
		if err != nil {
			return rs[0], 0, err
		}
		local += got["w"+strconv.Itoa(i)]
		total += perCPU
	}
	return rs[0], float64(local) / float64(max(total, 1)), nil
}

// newPoolHotswap is hotswap --workers n (mode "" for reuseport) around
// goapp answering with X-Version w{worker}.
func newPoolHotswap(b *bins, n int, mode string, extra ...string) *hotswapTarget {
	t := newHotswap(b, mode, "--version", "w{worker}")
	t.extra = append([]string{"--workers", strconv.Itoa(n)}, extra...)
	return t
}

// reuseHash is n copies of this program in serve mode, each binding the
// port with SO_REUSEPORT itself: the kernel's hash picks the socket.
type reuseHash struct {
	exe string
	n   int
	ps  []*proc
}

// errNoServe: the benchmark was not started as its own binary (go test).
var errNoServe = errors.New("no serve binary: run as go run ./bench")

func (r *reuseHash) start() (string, error) {
	if r.exe == "" {
		return "", errNoServe
	}
	s := &reuseSibling{exe: r.exe}
	addr := "127.0.0.1:0"
	for i := range r.n {
		p, a, err := s.spawn("w"+strconv.Itoa(i), addr)
		if err != nil {
			return "", err
		}
		r.ps, addr = append(r.ps, p), a
	}
	return addr, nil
}

func (r *reuseHash) close() {
	for _, p := range r.ps {
		p.stop(syscall.SIGTERM, 15*time.Second)
	}
}

// poolTable writes the worker-pool rows.
func (r *report) poolTable(w func(string, ...any)) {
	if len(r.Pool) == 0 {
		return
	}
	w("## Worker pools\n\n")
	w("N processes of one server on one port, %d clients, a new connection per request, %d rounds of %v. ", r.Cfg.conc, r.Cfg.rounds, r.Cfg.pathDur)
	w("*max/min*: accepted connections of the busiest worker over the idlest one's. ")
	w("*CPU-local*: of 200 connections per worker i dialled from a thread pinned to the i-th CPU (on loopback the SYN is handled on that CPU), the share answered by worker i, the one `--cpu-affinity` pins there. ")
	w("See [hotswap.md](hotswap.md#worker-pools) and, for what the figures mean on a bigger machine, the notes below the table.\n\n")
	w("| N | how | connections/s | p99 | max/min | CPU-local |\n|---|---|---|---|---|---|\n")
	for _, p := range r.Pool {
		if p.Path == nil {
			w("| %d | %s | %s | | | |\n", p.Workers, p.Name, p.Err)
			continue
		}
		w("| %d | %s | %.0f | %s | %s | %.1f %% |\n", p.Workers, p.Name, medianF(p.Path.RPS), ms(median(p.Path.P99)), p.share(), 100*p.Local)
	}
	w("\n"+poolNotes+"\n\n", r.Machine.CPUs)
}

// poolNotes says what the pool figures mean beyond this machine.
const poolNotes = `On this machine the load generator, the workers and the kernel share %d CPUs, so connections/s cannot grow with N here: the rows compare how each way splits the same work, not how far it scales. On a machine with more cores than clients need, run ` + "`go run ./bench -pool-workers 1,2,4,8,16`" + `: with one socket per worker the kernel keeps one accept queue per worker (no accept lock, no wake-up of a worker for a connection another takes), so connections/s should grow with N until the clients or the NIC are the limit, where one shared queue is bounded by the wake-ups on it and, with epoll's LIFO wake-ups, sends most connections to the few workers that are awake. The kernel's hash spreads by 4-tuple: even on average, uneven per burst, and it cannot follow a worker that is restarting. --cpu-affinity keeps a connection on the CPU that took its SYN (the receive queue's CPU with RSS or RPS on a real NIC), which saves the cross-CPU wake-up and cache traffic that grows with cores; CPU-local should stay at 100 %% at any N.`
