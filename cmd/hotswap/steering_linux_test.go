package main

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// TestReusePortFailedReloadsLeakNothing is the first scenario of the
// steering issue: under load (16 clients, a new connection per request),
// reloads to a version that exits 100 ms after start and to one whose
// health check answers 500 are rolled back, then a good reload serves.
// Afterwards the kernel has exactly one listener on the port, the current
// generation's, with an empty queue, and no request failed or timed out:
// a generation that leaves before it is ready takes its socket with it.
func TestReusePortFailedReloadsLeakNothing(t *testing.T) {
	a := startApp(t, []string{"--mode", "reuseport", "--pidfile", filepath.Join(t.TempDir(), "hotswap.pid"),
		"--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "4s"},
		"--health-listen", "127.0.0.1:{port}")
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: 2 * time.Minute})
	n := 1
	for round := range 2 {
		for _, bad := range []string{"--sleep 100ms", "--health-status 500"} {
			n++
			if e := a.reload(n, fmt.Sprintf("bad%d", n), bad); e.Msg() != "reload failed" {
				t.Fatalf("round %d: reload to %s: %v, want reload failed", round, bad, e)
			}
		}
		n++
		if e := a.reload(n, fmt.Sprintf("v%d", n), ""); e.Msg() != "reload succeeded" {
			t.Fatalf("round %d: good reload: %v", round, e)
		}
	}
	time.Sleep(300 * time.Millisecond)
	res := run.Stop()
	t.Logf("load: %v", res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	st := a.waitSettled(t, 10*time.Second)
	a.checkOneListenerPerGeneration(t, st)
}

// statusJSON of the pidfile's hotswap.
func (a *app) status(t *testing.T) statusJSON {
	t.Helper()
	code, out, _ := ctl(t, "status", "--json", "--pidfile", flagValue(a.hs.Cmd.Args, "--pidfile"))
	st := statusJSON{Status: &supervisor.Status{}}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	return st
}

// waitSettled waits until only the current generation is live and
// returns the status.
func (a *app) waitSettled(t *testing.T, d time.Duration) statusJSON {
	t.Helper()
	var st statusJSON
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		st = a.status(t)
		if len(st.Generations) == 1 && st.Generations[0].ID == st.Current && st.Generations[0].State == supervisor.StateReady {
			return st
		}
	}
	t.Fatalf("hotswap did not settle on one ready generation in %v: %+v", d, st.Generations)
	return st
}

// checkOneListenerPerGeneration asks the kernel (sock_diag) for the
// listeners on the app's port: exactly one per live generation, each with
// an empty queue.
func (a *app) checkOneListenerPerGeneration(t *testing.T, st statusJSON) {
	t.Helper()
	_, p, _ := net.SplitHostPort(a.addr)
	port, _ := strconv.Atoi(p)
	ls, err := reuse.Listeners("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != len(st.Generations) {
		t.Errorf("%d sockets listen on port %d, want %d (one per live generation): %+v", len(ls), port, len(st.Generations), ls)
	}
	for _, l := range ls {
		if l.Queue != 0 {
			t.Errorf("listener inode %d has %d connections queued after the load stopped", l.Inode, l.Queue)
		}
	}
}
