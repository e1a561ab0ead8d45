package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// handoverStats compares hotswap's reload with the child's own start.
type handoverStats struct {
	Mode string
	// Direct is goapp started directly, its version read from a file
	// as hotswap's {file:PATH} does: fork/exec to its first response.
	Direct []time.Duration
	// Reload is SIGHUP to hotswap's "reload succeeded" (new generation
	// ready, old one told to stop).
	Reload []time.Duration
	// Ready is hotswap's own "after": generation started to ready.
	Ready []time.Duration
	// FirstNew is SIGHUP to the first response of the new version on a
	// new connection, with no other load.
	FirstNew []time.Duration
	Err      string
}

// overhead is the supervisor's own share of a reload: the median reload
// minus the median time the child needs to answer when started directly.
func (h handoverStats) overhead() time.Duration { return median(h.Reload) - median(h.Direct) }

// measureHandover interleaves n direct starts of goapp with n reloads of
// hotswap (in mode), with no load, so both see the same machine.
func measureHandover(cfg config, b *bins, mode string, n int) handoverStats {
	h := handoverStats{Mode: mode}
	hs := newHotswap(b, mode)
	defer hs.close()
	addr, err := hs.start()
	if err != nil {
		h.Err = err.Error()
		return h
	}
	verFile := filepath.Join(b.dir, "direct-version")
	if err := os.WriteFile(verFile, []byte("direct"), 0o644); err != nil {
		h.Err = err.Error()
		return h
	}
	for i := range n {
		d, err := directStart(b, verFile)
		if err != nil {
			h.Err = err.Error()
			return h
		}
		h.Direct = append(h.Direct, d)
		g := i + 2
		t0, t1, after, err := hs.reload(g)
		if err != nil {
			h.Err = err.Error()
			return h
		}
		h.Reload = append(h.Reload, t1.Sub(t0))
		h.Ready = append(h.Ready, after)
		seen, err := waitVersion(addr, version(g), 10*time.Second)
		if err != nil {
			h.Err = err.Error()
			return h
		}
		h.FirstNew = append(h.FirstNew, seen.Sub(t0))
		time.Sleep(cfg.gap)
	}
	return h
}

// directStart starts goapp on a port of its own, with the version in
// verFile as hotswap's {file:PATH} reads it, and returns the time from the
// read to its first response: what hotswap adds (its exec shim included)
// is the rest of a reload.
func directStart(b *bins, verFile string) (time.Duration, error) {
	t0 := time.Now()
	v, err := os.ReadFile(verFile)
	if err != nil {
		return 0, err
	}
	p, err := startProc(exec.Command(b.goapp, "--version", strings.TrimSpace(string(v)), "--listen", "127.0.0.1:0"))
	if err != nil {
		return 0, err
	}
	defer p.stop(syscall.SIGTERM, 10*time.Second)
	l, err := p.waitLine(10*time.Second, 0, func(l line) bool { return servingRE.MatchString(l.text) })
	if err != nil {
		return 0, fmt.Errorf("goapp started directly: %w", err)
	}
	if _, err := waitVersion(servingRE.FindStringSubmatch(l.text)[1], "direct", 5*time.Second); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}
