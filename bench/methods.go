package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// method is one way of restarting a server, a row of the table.
type method struct {
	key, name, short string
	target           func() target // nil: runs in a network namespace
	skip             string        // why it cannot run here
	loads            []loadKind    // default: new conn and keep-alive
	maxRestarts      int           // caps cfg.restarts when set (slow restarts)
}

func (m method) run(ctx context.Context, cfg config, l loadKind) restartRun {
	if m.maxRestarts > 0 {
		cfg.restarts = min(cfg.restarts, m.maxRestarts)
	}
	switch {
	case m.skip != "":
		return restartRun{Skipped: m.skip, KeepAlive: l.keepAlive, NoRetry: l.noRetry}
	case m.target == nil:
		return runInNetns(ctx, cfg, m.name, l.keepAlive)
	}
	return runRestarts(ctx, cfg, m.name, m.target(), l)
}

// loadKinds are the loads m runs under, those of cfg.loads when set.
func (m method) loadKinds(cfg config) []loadKind {
	ls := m.loads
	if ls == nil {
		ls = []loadKind{newConnLoad, keepAliveLoad}
	}
	if len(cfg.loads) == 0 {
		return ls
	}
	return slices.DeleteFunc(slices.Clone(ls), func(l loadKind) bool { return !slices.Contains(cfg.loads, l.key()) })
}

func allMethods(cfg config, b *bins) []method {
	ms := []method{
		{key: "stop-start", name: "naive stop-then-start (goapp)", short: "stop, start",
			target: func() target { return &naiveStop{b: b} }},
		{key: "reuseport-sibling", name: "naive SO_REUSEPORT sibling, then stop old", short: "reuseport sibling",
			target: func() target { return &reuseSibling{exe: cfg.exe} }},
		{key: "reuseport-migrate", name: "SO_REUSEPORT sibling, tcp_migrate_req=1 (netns)", short: "reuseport+migrate"},
		{key: "nginx-reload", name: "nginx -s reload", short: "nginx reload",
			target: func() target { return &nginxReload{b: b} }, loads: allLoads},
		{key: "nginx-upgrade", name: "nginx USR2 + QUIT (binary upgrade)", short: "nginx USR2+QUIT",
			target: func() target { return &nginxUpgrade{b: b} }, loads: allLoads},
		{key: "hotswap-shared", name: "hotswap, shared mode", short: "hotswap shared",
			target: func() target { return newHotswap(b, "shared") }, loads: allLoads},
		{key: "hotswap-reuseport", name: "hotswap, reuseport mode", short: "hotswap reuseport",
			target: func() target { return newHotswap(b, "reuseport") }, loads: allLoads},
		{key: "hotswap-plain", name: "hotswap, reuseport mode, goapp --plain-shutdown", short: "hotswap, plain Shutdown",
			target: func() target { return newHotswap(b, "reuseport", "--plain-shutdown") }, loads: []loadKind{noRetryLoad}},
		// A container start takes 0.2-1.5s here and a reuseport reload
		// waits for the old container to stop: 10 restarts.
		{key: "podman-stop-run", name: "naive podman stop, then podman run (containers)", short: "podman stop, run",
			target: func() target { return &naivePodman{pm: b.podman} }, maxRestarts: 10},
		{key: "hotswap-podman", name: "hotswap, each generation a podman container", short: "hotswap podman",
			target: func() target { return b.podman.hotswap(b) }, loads: allLoads, maxRestarts: 10},
	}
	for i := range ms {
		switch {
		case strings.HasPrefix(ms[i].key, "nginx") && b.nginx == "":
			ms[i].skip = "nginx not installed"
		case strings.HasPrefix(ms[i].key, "hotswap-") && ms[i].key != "hotswap-shared" && !b.reuseportMode:
			ms[i].skip = "not available in this build (no --mode flag)"
		case strings.Contains(ms[i].key, "podman") && b.podman == nil:
			ms[i].skip = "podman: " + b.podmanErr
		}
	}
	return ms
}

var allLoads = []loadKind{newConnLoad, keepAliveLoad, noRetryLoad}

func methodKeys() []string {
	var keys []string
	for _, m := range allMethods(config{}, &bins{}) {
		keys = append(keys, m.key)
	}
	return keys
}

func methodsFor(cfg config, b *bins) []method {
	var out []method
	for _, m := range allMethods(cfg, b) {
		if len(cfg.methods) == 0 || slices.Contains(cfg.methods, m.key) {
			out = append(out, m)
		}
	}
	return out
}

func (r restartRun) perRestart() float64 { return per(r.Failed, r.Restarts) }

func (r restartRun) kinds() string { return kindsOf(r.Errors) }

// per is failed per n, 0 for n 0.
func per(failed, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(failed) / float64(n)
}

// kindsOf lists failure kinds, the most frequent first, or "-".
func kindsOf(errs map[string]int) string {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return errs[keys[i]] > errs[keys[j]] })
	var b []string
	for _, k := range keys {
		b = append(b, fmt.Sprintf("%s %d", k, errs[k]))
	}
	if len(b) == 0 {
		return "-"
	}
	return strings.Join(b, ", ")
}

func (r restartRun) summary() string {
	switch {
	case r.Skipped != "":
		return "skipped: " + r.Skipped
	case r.Err != "":
		return fmt.Sprintf("%d restarts, %d failed of %d; error: %s", r.Restarts, r.Failed, r.OK+r.Failed, r.Err)
	}
	return fmt.Sprintf("%d restarts, %d failed of %d (%s), handover median %v",
		r.Restarts, r.Failed, r.OK+r.Failed, r.kinds(), median(r.Handover).Round(time.Millisecond/10))
}

// machine describes where the run happened.
type machine struct {
	CPUs                        int
	Kernel, Go, Nginx, Hotswap  string
	MigrateReq, PortRange, User string
}

func readMachine(cfg config, b *bins) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), User: fmt.Sprintf("uid %d", os.Geteuid())}
	m.Kernel = readTrim("/proc/sys/kernel/osrelease")
	m.MigrateReq = readTrim(migrateReq)
	m.PortRange = strings.Join(strings.Fields(readTrim("/proc/sys/net/ipv4/ip_local_port_range")), "-")
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	if b.nginx != "" {
		out, _ := exec.Command(b.nginx, "-v").CombinedOutput()
		m.Nginx = strings.TrimSpace(strings.TrimPrefix(string(out), "nginx version: "))
	}
	git := exec.Command("git", "describe", "--always", "--dirty")
	git.Dir = cfg.root
	if out, err := git.Output(); err == nil {
		m.Hotswap = strings.TrimSpace(string(out))
	}
	return m
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
