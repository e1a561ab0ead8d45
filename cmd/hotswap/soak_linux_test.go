package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// TestSoak reloads goapp 1,000 times (HOTSWAP_SOAK_RELOADS) under a light
// load and prints hotswap's descriptors, threads and RSS at the start and
// the end. It runs only with HOTSWAP_SOAK=1 (make soak), never in make test.
func TestSoak(t *testing.T) {
	if os.Getenv("HOTSWAP_SOAK") != "1" {
		t.Skip("soak test: set HOTSWAP_SOAK=1 (make soak)")
	}
	reloads := 1000
	if n, err := strconv.Atoi(os.Getenv("HOTSWAP_SOAK_RELOADS")); err == nil && n > 0 {
		reloads = n
	}
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	p := proctest.Start(t, hotswap, "--log-format", "json", "--ready", "notify", "--drain-timeout", "5s",
		"-l", "http=tcp://127.0.0.1:0", "--", goapp, "--notify", "--version", "soak")
	addr := ctltest.WaitServing(p, 1, 10*time.Second).Listeners[0].Address
	pid := p.Cmd.Process.Pid
	run := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 4, Duration: time.Hour, MaxRequests: 1 << 30})
	// Warm up: the first reloads grow pools and maps to their working size.
	soakReloads(t, p, 2, 11)
	start := usage(t, pid)
	t.Logf("after 10 reloads: %v", start)
	t0 := time.Now()
	for n := 12; n < 12+reloads; n += 100 {
		last := min(n+99, 11+reloads)
		soakReloads(t, p, n, last)
		t.Logf("%d reloads in %s: %v", last-11, time.Since(t0).Round(time.Second), usage(t, pid))
	}
	time.Sleep(time.Second) // the last old generation's drain
	end := usage(t, pid)
	res := run.Stop()
	fmt.Printf("soak: %d reloads in %s\n  start: %v\n  end:   %v\n  load:  %v\n", reloads, time.Since(t0).Round(time.Second), start, end, res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads: %v", res.Failed, reloads, res.Errors)
	}
	if end.fds > start.fds {
		t.Errorf("descriptors grew from %d to %d over %d reloads", start.fds, end.fds, reloads)
	}
	if end.rssKB > 2*start.rssKB+16<<10 {
		t.Errorf("RSS grew from %d kB to %d kB over %d reloads", start.rssKB, end.rssKB, reloads)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(15 * time.Second)
}

// soakReloads reloads to generations from..to, one after another.
func soakReloads(t *testing.T, p *proctest.Proc, from, to int) {
	t.Helper()
	for n := from; n <= to; n++ {
		if st, ok := ctltest.Reload(p, n, 30*time.Second, func() { p.Signal(syscall.SIGHUP) }); !ok {
			t.Fatalf("reload %d failed: %s", n, st.LastFailure)
		}
	}
}

// procUsage is what a soak watches of a process.
type procUsage struct {
	fds, threads int
	rssKB        int
}

func (u procUsage) String() string {
	return fmt.Sprintf("fds %d, threads %d, rss %d kB", u.fds, u.threads, u.rssKB)
}

func usage(t *testing.T, pid int) procUsage {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	st := procStatus(t, pid)
	u := procUsage{fds: len(ents)}
	u.threads, _ = strconv.Atoi(st["Threads"])
	fmt.Sscanf(st["VmRSS"], "%d", &u.rssKB)
	return u
}
