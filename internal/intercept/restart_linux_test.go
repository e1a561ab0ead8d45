package intercept

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRestartSharedSocket runs two successive busybox children on one
// supervisor socket under closed-loop load: B binds and listens, then A is
// stopped. Every answer after A's exit comes from B.
func TestRestartSharedSocket(t *testing.T) {
	requireTool(t, "/usr/bin/busybox")
	ln, addr := listenTCP(t)
	start := func(body string) *child {
		dir := webDir(t, body)
		c, _ := startChild(t, childOpts{args: []string{"/usr/bin/busybox", "httpd", "-f", "-p", addr.String(), "-h", dir}, serve: true}, ln, addr)
		c.waitListen(t)
		return c
	}
	a := start("gen-A")

	var (
		stop     atomic.Bool
		aExited  atomic.Bool
		mu       sync.Mutex
		counts   = map[string]int{}
		lateA    int // answers from A after A exited: impossible
		failures []error
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(20 * time.Second)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() && time.Now().Before(deadline) {
				exited := aExited.Load()
				body, err := get(addr)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					counts[body]++
					if exited && body == "gen-A" {
						lateA++
					}
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	b := start("gen-B")
	time.Sleep(200 * time.Millisecond)
	stA := a.stop(t, syscall.SIGTERM)
	aExited.Store(true)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	stB := b.stop(t, syscall.SIGTERM)

	t.Logf("answers %v, failures %d %v; stats A %+v B %+v", counts, len(failures), failures, stA, stB)
	if counts["gen-A"] == 0 || counts["gen-B"] == 0 {
		t.Errorf("answers: got %v, want some from each generation", counts)
	}
	if lateA != 0 {
		t.Errorf("%d answers from A after it exited", lateA)
	}
	// A shared socket loses only what the old child had accepted and not
	// answered when it was killed (docs/kernel.md: busybox 3-5 per 10 restarts).
	if len(failures) > 3 {
		t.Errorf("failed requests over one restart: got %d, want at most 3", len(failures))
	}
	if on, _ := unix.GetsockoptInt(fdOf(t, ln), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); on != 1 {
		t.Errorf("supervisor socket stopped listening after both children exited")
	}
}
