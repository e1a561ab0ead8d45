package main

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// soak is `make soak`: cfg.soak reloads of one hotswap in reuseport mode,
// one at a time, then hotswap's figures over the first and the last
// soakWindow reloads side by side; they should be flat.
func soak(cfg config) error {
	b, err := build(cfg)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	if cfg.soak < 2*soakWindow {
		return fmt.Errorf("-soak %d: want at least %d reloads", cfg.soak, 2*soakWindow)
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "soak: %d reloads in reuseport mode...\n", cfg.soak)
	r := measureResources(b, "reuseport", 1, cfg.soak, time.Second)
	if r.Err != "" {
		return fmt.Errorf("soak after %d reloads: %s", len(r.PerReload), r.Err)
	}
	first, last := window(r, 0), window(r, len(r.PerReload)-soakWindow)
	fmt.Printf("soak: %d reloads in %v, reuseport mode, goapp --notify, --ready notify\n\n", cfg.soak, time.Since(start).Round(time.Second))
	fmt.Printf("| figure | reloads 1-%d | reloads %d-%d |\n|---|---:|---:|\n", soakWindow, cfg.soak-soakWindow+1, cfg.soak)
	fmt.Printf("| hotswap CPU per reload, median | %s | %s |\n", ms(median(first.cpu)), ms(median(last.cpu)))
	fmt.Printf("| SIGHUP → reload succeeded, median | %s | %s |\n", ms(median(first.handover)), ms(median(last.handover)))
	fmt.Printf("| RSS max | %d KiB | %d KiB |\n", first.rss, last.rss)
	fmt.Printf("| open fds at the window's end | %d | %d |\n", first.fds, last.fds)
	fmt.Printf("| threads at the window's end | %d | %d |\n", first.threads, last.threads)
	fmt.Printf("| goroutines (before the reloads; after %d; at the end) | %d; %d | %d |\n", soakWindow, r.GoroutinesBefore, r.GoroutinesEarly, r.GoroutinesAfter)
	return nil
}

type soakFigures struct {
	cpu, handover     []time.Duration
	rss, fds, threads int
}

func window(r resourceStats, from int) soakFigures {
	to := from + soakWindow
	w := soakFigures{cpu: r.PerReload[from:to], handover: r.Handover[from:to]}
	if len(r.RSS) >= to {
		w.rss = slices.Max(r.RSS[from:to])
		w.fds, w.threads = r.FDs[to-1], r.Threads[to-1]
	}
	return w
}
