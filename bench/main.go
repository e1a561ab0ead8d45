// Command bench is `make bench`: in one run on one machine it measures, side
// by side, the requests lost per restart by naive restarts, the kernel's
// tcp_migrate_req fix, nginx's own reload and binary upgrade, and hotswap;
// how long a handover takes and what the supervisor adds to it; the data
// path under hotswap against the server alone and behind nginx's
// proxy_pass; and hotswap's own CPU, memory and descriptors. It prints a
// table and writes docs/benchmarks.md with plots.
//
// All traffic stays on 127.0.0.1, or inside a private network namespace
// the benchmark creates for the tcp_migrate_req row; every load is bounded
// in requests and time; every process is ended by its pid; no host sysctl
// is changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is one benchmark run's size.
type config struct {
	root     string        // module root
	out      string        // directory for benchmarks.md and the plots
	exe      string        // this program, for serve mode and the namespace
	methods  []string      // method keys to run; all when empty
	loads    []string      // loads to run each method under (loadKind.key); all when empty
	restarts int           // restarts per method and load
	conc     int           // concurrent clients
	gap      time.Duration // pause after each restart
	handover int           // reloads for the handover figures
	rounds   int           // data-path rounds
	pathDur  time.Duration // data-path load per round and path
	reloads  int           // reloads for the resource figures
	idle     time.Duration // idle time for the resource figures
	wide     int           // listeners of the many-listener row
	wideN    int           // reloads of the many-listener row
	soak     int           // reloads of -soak (make soak); 0: the benchmark
	noNginx  bool
	noPodman bool
	hotswap  string // a hotswap binary to use instead of building one
	// QUIC rows (quic.go): long-lived HTTP/3 connections, reloads.
	quicLong, quicReloads int
	// poolN are the worker counts of the worker-pool rows (pool.go).
	poolN []int
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cfg config
	var methods, serveAddr, serveVersion, poolN string
	var inner, keepAlive bool
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.root, "root", ".", "module root: where cmd/hotswap and examples/goapp are built from")
	fs.StringVar(&cfg.out, "out", "docs", "write benchmarks.md and the plots here (relative to -root)")
	fs.StringVar(&methods, "methods", "", "comma-separated methods to run (default all): "+strings.Join(methodKeys(), ","))
	var loads string
	fs.StringVar(&loads, "loads", "", "comma-separated loads to restart each method under (default all): "+strings.Join(loadKeys(), ","))
	fs.IntVar(&cfg.restarts, "restarts", 20, "restarts per method and load")
	fs.IntVar(&cfg.conc, "conc", 16, "concurrent clients of every load")
	fs.DurationVar(&cfg.gap, "gap", 150*time.Millisecond, "pause after each restart")
	fs.IntVar(&cfg.handover, "handover", 20, "reloads for the handover figures")
	fs.IntVar(&cfg.rounds, "rounds", 5, "data-path rounds")
	fs.DurationVar(&cfg.pathDur, "path-duration", 1500*time.Millisecond, "data-path load per round and path")
	fs.IntVar(&cfg.reloads, "reloads", 100, "reloads for the resource figures")
	fs.DurationVar(&cfg.idle, "idle", 5*time.Second, "idle time for the resource figures")
	fs.IntVar(&cfg.quicLong, "quic-long", 100, "long-lived HTTP/3 connections of the QUIC rows")
	fs.IntVar(&cfg.quicReloads, "quic-reloads", 10, "reloads per QUIC method (0 skips the QUIC rows)")
	fs.IntVar(&cfg.wide, "listeners", 1000, "listeners of the many-listener row (0: none)")
	fs.IntVar(&cfg.wideN, "listener-reloads", 20, "reloads of the many-listener row")
	fs.IntVar(&cfg.soak, "soak", 0, "instead of the benchmark: this many reloads in reuseport mode, printing hotswap's figures over the first and the last 100")
	fs.StringVar(&poolN, "pool-workers", "1,2", "comma-separated worker counts of the worker-pool rows (\"\" skips them)")
	fs.StringVar(&cfg.hotswap, "hotswap", "", "use this hotswap binary instead of building ./cmd/hotswap")
	fs.BoolVar(&cfg.noNginx, "no-nginx", false, "skip nginx even when it is installed")
	fs.BoolVar(&cfg.noPodman, "no-podman", false, "skip the container rows (podman)")
	fs.StringVar(&serveAddr, "serve", "", "internal: serve as the SO_REUSEPORT test server on this address")
	fs.StringVar(&serveVersion, "serve-version", "v1", "internal: the version serve mode reports")
	fs.BoolVar(&inner, "netns-inner", false, "internal: the run inside the private network namespace")
	fs.BoolVar(&keepAlive, "keepalive", false, "internal: keep-alive load for -netns-inner")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if serveAddr != "" {
		return serve(serveAddr, serveVersion)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	cfg.exe = exe
	if methods != "" {
		cfg.methods = strings.Split(methods, ",")
	}
	if loads != "" {
		cfg.loads = strings.Split(loads, ",")
		for _, l := range cfg.loads {
			if !slices.Contains(loadKeys(), l) {
				fmt.Fprintf(os.Stderr, "bench: -loads %q: want some of %s\n", loads, strings.Join(loadKeys(), ","))
				return 2
			}
		}
	}
	for f := range strings.SplitSeq(poolN, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -pool-workers %q: want worker counts such as 1,2,4\n", poolN)
			return 2
		}
		cfg.poolN = append(cfg.poolN, n)
	}
	if inner {
		if err := netnsInner(cfg, keepAlive); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	if cfg.soak > 0 {
		if err := soak(cfg); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := benchmark(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Print(rep.markdown(false))
	out := cfg.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(cfg.root, out)
	}
	if err := rep.write(out); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// bins are the programs under test.
type bins struct {
	dir, hotswap, goapp, nginx string
	quicapp                    string
	reuseportMode              bool // hotswap has --mode reuseport
	// podman makes and runs the containers of the container rows; nil
	// when they are skipped, with why in podmanErr.
	podman    *podmanBench
	podmanErr string
}

func build(cfg config) (_ *bins, retErr error) {
	dir, err := os.MkdirTemp("", "hotswap-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	b := &bins{dir: dir, hotswap: filepath.Join(dir, "hotswap"), goapp: filepath.Join(dir, "goapp"), quicapp: filepath.Join(dir, "quicapp")}
	pkgs := map[string]string{"./cmd/hotswap": b.hotswap, "./examples/goapp": b.goapp, "./examples/quicapp": b.quicapp}
	if cfg.hotswap != "" {
		if b.hotswap, err = filepath.Abs(cfg.hotswap); err != nil {
			return nil, err
		}
		delete(pkgs, "./cmd/hotswap")
	}
	for pkg, out := range pkgs {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = cfg.root
		if pkg == "./cmd/hotswap" || pkg == "./examples/goapp" {
			// hotswap as make build builds it; goapp as a Go server
			// ships: static, no dynamic loader and no cgo start, 1 ms of
			// CPU less per start here (goapp links libc only for net's
			// resolver), which every restart row pays.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w: %s", pkg, err, out)
		}
	}
	help, _ := exec.Command(b.hotswap, "--help").CombinedOutput()
	b.reuseportMode = strings.Contains(string(help), "--mode")
	if !cfg.noNginx {
		b.nginx = findNginx()
	}
	return b, nil
}

// benchmark runs every measurement once and returns the report.
func benchmark(ctx context.Context, cfg config, log *os.File) (*report, error) {
	start := time.Now()
	b, err := build(cfg)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.dir)
	b.podmanErr = "skipped (-no-podman)"
	if !cfg.noPodman {
		if b.podman, err = newPodmanBench(cfg, b); err != nil {
			b.podmanErr = err.Error()
		} else {
			defer b.podman.close()
		}
	}
	rep := &report{Date: start, Cfg: cfg, Machine: readMachine(cfg, b)}
	logf := func(format string, args ...any) {
		fmt.Fprintf(log, "bench %6.1fs: "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	for _, m := range methodsFor(cfg, b) {
		for _, l := range m.loadKinds(cfg) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r := m.run(ctx, cfg, l)
			r.Method = m.name
			rep.Runs = append(rep.Runs, r)
			logf("%-45s %-20s %s", m.name, l, r.summary())
		}
	}
	if cfg.quicReloads > 0 {
		rep.QUIC = measureQUIC(ctx, cfg, b, logf)
	}
	if cfg.handover > 0 {
		modes := []string{"shared"}
		if b.reuseportMode {
			modes = append(modes, "reuseport")
		}
		for _, mode := range modes {
			h := measureHandover(cfg, b, mode, cfg.handover)
			rep.Handover = append(rep.Handover, h)
			logf("handover %q: direct %v, reload %v, overhead %v %s", mode, median(h.Direct), median(h.Reload), h.overhead(), h.Err)
		}
	}
	if cfg.rounds > 0 {
		if rep.Path, err = measureDataPath(ctx, cfg, b); err != nil {
			rep.PathErr = err.Error()
		}
		for _, p := range rep.Path {
			logf("data path %-30s keep-alive=%-5v %.0f req/s, p99 %v, failed %d %v", p.Name, p.KeepAlive, medianF(p.RPS), median(p.P99), p.Failed, p.Errors)
		}
		logf("data path done %s", rep.PathErr)
		if rep.CPath, err = measureContainerPath(ctx, cfg, b); err != nil {
			rep.CPathErr = err.Error()
		}
		for _, p := range rep.CPath {
			logf("data path %-30s keep-alive=%-5v %.0f req/s, p99 %v, failed %d %v", p.Name, p.KeepAlive, medianF(p.RPS), median(p.P99), p.Failed, p.Errors)
		}
		logf("container data path done %s", rep.CPathErr)
	}
	if len(cfg.poolN) > 0 {
		rep.Pool = measurePools(ctx, cfg, b, logf)
	}
	if cfg.reloads > 0 {
		type run struct {
			mode               string
			listeners, reloads int
		}
		runs := []run{{"shared", 1, cfg.reloads}}
		if b.reuseportMode {
			runs = append(runs, run{"reuseport", 1, cfg.reloads})
		}
		if cfg.wide > 1 && cfg.wideN > 0 {
			for _, r := range runs { // range reads runs once: the appended runs are not visited
				runs = append(runs, run{r.mode, cfg.wide, cfg.wideN})
			}
		}
		for _, x := range runs {
			r := measureResources(b, x.mode, x.listeners, x.reloads, cfg.idle)
			rep.Res = append(rep.Res, r)
			logf("resources %s x%d: CPU per reload median %v, RSS max %d KiB, fds %d/%d, threads %d/%d, goroutines %d/%d %s",
				x.mode, x.listeners, median(r.PerReload), r.MaxRSSKB, r.FDsBefore, r.FDsAfter, r.ThreadsBefore, r.ThreadsAfter, r.GoroutinesBefore, r.GoroutinesAfter, r.Err)
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}
