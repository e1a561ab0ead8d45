package main

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
)

// pathResult is the data-path figure of one way of serving goapp.
type pathResult struct {
	Name      string
	KeepAlive bool
	RPS       []float64       // per round
	P99       []time.Duration // per round
	Failed    int
	Errors    map[string]int
	Versions  map[string]int // answers by X-Version, over every round
}

// measureDataPath loads goapp directly, under hotswap and behind nginx's
// proxy_pass, in rounds that alternate between them, with new connections
// and with keep-alive.
func measureDataPath(ctx context.Context, cfg config, b *bins) ([]*pathResult, error) {
	direct, addr, err := startGoapp(b, "v1", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer direct.stop(syscall.SIGTERM, 10*time.Second)
	hs := newHotswap(b, "")
	defer hs.close()
	hsAddr, err := hs.start()
	if err != nil {
		return nil, err
	}
	addrs := []path{{"goapp directly", addr}, {"goapp under hotswap", hsAddr}}
	if b.nginx != "" {
		x, err := proxyTo(b, addr)
		if err != nil {
			return nil, err
		}
		defer x.stop(10 * time.Second)
		addrs = append(addrs, path{"goapp behind nginx proxy_pass", x.addr()})
	}
	return runPaths(ctx, cfg, addrs), nil
}

// path is one way of reaching goapp.
type path struct{ name, addr string }

// runPaths loads every path in rounds that alternate between them, with
// new connections and with keep-alive.
func runPaths(ctx context.Context, cfg config, addrs []path) []*pathResult {
	var out []*pathResult
	for _, ka := range []bool{false, true} {
		for _, a := range addrs {
			out = append(out, &pathResult{Name: a.name, KeepAlive: ka})
		}
	}
	for range cfg.rounds {
		for i, r := range out {
			a := addrs[i%len(addrs)]
			// Stop, not Duration, ends the round: a load that runs into its
			// own Duration records dial timeouts for a few microseconds
			// before its context reports done (internal/load).
			run := load.Start(ctx, load.Config{Addr: a.addr, Concurrency: cfg.conc, KeepAlive: r.KeepAlive, Duration: cfg.pathDur + 30*time.Second})
			time.Sleep(cfg.pathDur)
			res := run.Stop()
			r.RPS = append(r.RPS, float64(res.OK)/res.End.Sub(res.Start).Seconds())
			r.P99 = append(r.P99, p99(res.Samples))
			r.Failed += res.Failed
			if r.Errors == nil {
				r.Errors = map[string]int{}
			}
			for k, n := range res.Errors {
				r.Errors[k] += n
			}
			if r.Versions == nil {
				r.Versions = map[string]int{}
			}
			for k, n := range res.Versions {
				r.Versions[k] += n
			}
		}
	}
	return out
}

// measureContainerPath is measureDataPath for goapp in a podman container:
// the container alone (goapp binds the port itself, --network host), under
// hotswap (each generation `podman run`), and behind nginx's proxy_pass to
// the container alone.
func measureContainerPath(ctx context.Context, cfg config, b *bins) ([]*pathResult, error) {
	if b.podman == nil {
		return nil, errors.New(b.podmanErr)
	}
	direct, addr, err := b.podman.startDirect("v1", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer direct.stop(syscall.SIGTERM, 15*time.Second)
	hs := b.podman.hotswap(b)
	defer hs.close()
	hsAddr, err := hs.start()
	if err != nil {
		return nil, err
	}
	addrs := []path{{"goapp container alone", addr}, {"goapp containers under hotswap", hsAddr}}
	if b.nginx != "" {
		x, err := proxyTo(b, addr)
		if err != nil {
			return nil, err
		}
		defer x.stop(10 * time.Second)
		addrs = append(addrs, path{"goapp container behind nginx proxy_pass", x.addr()})
	}
	return runPaths(ctx, cfg, addrs), nil
}

// proxyTo starts nginx proxying to upstream.
func proxyTo(b *bins, upstream string) (*nginx, error) {
	x, err := newNginx(b, false)
	if err != nil {
		return nil, err
	}
	x.upstream = upstream
	if err := x.start("v1"); err != nil {
		return nil, err
	}
	if _, err := waitVersion(x.addr(), "v1", 10*time.Second); err != nil {
		x.stop(10 * time.Second)
		return nil, err
	}
	return x, nil
}

func p99(samples []load.Sample) time.Duration {
	var d []time.Duration
	for _, s := range samples {
		if s.Err == "" {
			d = append(d, s.Dur)
		}
	}
	return quantile(d, 0.99)
}

// quantile returns the q-quantile of d (nearest rank), 0 when empty.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

func medianF(f []float64) float64 {
	if len(f) == 0 {
		return 0
	}
	s := slices.Clone(f)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
