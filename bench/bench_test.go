package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchmarkTiny runs the benchmark's machinery in a tiny configuration:
// two methods, two restarts each, every other measurement cut short.
func TestBenchmarkTiny(t *testing.T) {
	out := t.TempDir()
	cfg := config{
		root: "..", out: out, methods: []string{"stop-start", "hotswap-shared"},
		restarts: 2, conc: 4, gap: 50 * time.Millisecond, handover: 2,
		rounds: 1, pathDur: 200 * time.Millisecond, reloads: 3, idle: 200 * time.Millisecond,
		wide: 5, wideN: 3,
		noNginx: true, noPodman: true, quicLong: 5, quicReloads: 2, poolN: []int{2},
	}
	rep, err := benchmark(t.Context(), cfg, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rep.Runs); got != 5 {
		t.Fatalf("got %d runs, want 5 (stop-start new conn and keep-alive, hotswap-shared also keep-alive without retries)", got)
	}
	for _, r := range rep.Runs {
		t.Logf("%s keep-alive=%v: %s", r.Method, r.KeepAlive, r.summary())
		if r.Err != "" || r.Restarts != 2 {
			t.Errorf("%s: %d restarts, error %q; want 2 and none", r.Method, r.Restarts, r.Err)
		}
		if r.Method == "hotswap, shared mode" && r.Failed != 0 {
			t.Errorf("%s: %d failed requests, want 0: %v", r.Method, r.Failed, r.Errors)
		}
	}
	if len(rep.QUIC) != 4 {
		t.Errorf("got %d QUIC rows, want 4", len(rep.QUIC))
	}
	for _, q := range rep.QUIC {
		t.Logf("quic %s: %d reloads, %d ok, %d failed %s", q.Method, q.Reloads, q.OK, q.Failed, q.kinds())
		if q.Err != "" || q.Reloads != 2 {
			t.Errorf("quic %s: %d reloads, error %q; want 2 and none", q.Method, q.Reloads, q.Err)
		}
	}
	if rep.PathErr != "" || len(rep.Handover) == 0 || rep.Handover[0].Err != "" {
		t.Errorf("data path %q, handover %+v", rep.PathErr, rep.Handover)
	}
	for _, r := range rep.Res {
		if r.Err != "" || len(r.PerReload) != 3 || r.GoroutinesBefore <= 0 {
			t.Errorf("resources %s x%d: %d reloads measured, goroutines %d, error %q", r.Mode, r.Listeners, len(r.PerReload), r.GoroutinesBefore, r.Err)
		}
	}
	if len(rep.Pool) != 4 {
		t.Errorf("got %d worker-pool rows, want 4", len(rep.Pool))
	}
	for _, p := range rep.Pool {
		t.Logf("pool %s N=%d: %v, max/min %s, CPU-local %.2f %s", p.Name, p.Workers, p.Path, p.share(), p.Local, p.Err)
		// The kernel-hash row runs this program in serve mode, which the
		// test binary is not.
		if p.Err != "" && p.Err != errNoServe.Error() {
			t.Errorf("pool %s: %s", p.Name, p.Err)
		}
	}
	if err := rep.write(out); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| hotswap, shared mode | new conn | 2 |", failuresPNG, timelinePNG, "## Data path", "## Worker pools", "open fds", "## QUIC (HTTP/3) failures per reload"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q:\n%s", want, md)
		}
	}
	for _, p := range []string{failuresPNG, timelinePNG} {
		if fi, err := os.Stat(filepath.Join(out, p)); err != nil || fi.Size() == 0 {
			t.Errorf("plot %s: %v", p, err)
		}
	}
}
