package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
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
			if r := a.reload(n, fmt.Sprintf("bad%d", n), bad); r.OK {
				t.Fatalf("round %d: reload to %s: %v, want reload failed", round, bad, r)
			}
		}
		n++
		if r := a.reload(n, fmt.Sprintf("v%d", n), ""); !r.OK {
			t.Fatalf("round %d: good reload: %v", round, r)
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
	checkNoRepairs(t, a, st)
}

// checkNoRepairs fails the test for any steering repair: each is a bug
// that the invariant check papered over.
func checkNoRepairs(t *testing.T, a *app, st statusJSON) {
	t.Helper()
	if st.SteeringRepairs != 0 {
		t.Errorf("%d steering repairs, want 0: %v", st.SteeringRepairs, a.hs.Events("reuseport group does not match the kernel: repaired"))
	}
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
	st := ctltest.Wait(a.hs, d, "settled on one ready generation", ctltest.Settled)
	return statusJSON{Status: &st}
}

// checkOneListenerPerGeneration asks the kernel (sock_diag) for the
// listeners on the app's port: one per live generation, held by that
// generation's process, plus the group's spares, each with an empty queue.
func (a *app) checkOneListenerPerGeneration(t *testing.T, st statusJSON) {
	t.Helper()
	_, p, _ := net.SplitHostPort(a.addr)
	port, _ := strconv.Atoi(p)
	ls, err := reuse.Listeners("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	spares := st.Listeners[0].Spares
	if len(ls) != len(st.Generations)+spares {
		t.Errorf("%d sockets listen on port %d, want %d (one per live generation and %d spares): %+v", len(ls), port, len(st.Generations)+spares, spares, ls)
	}
	inKernel := map[uint64]bool{}
	for _, l := range ls {
		inKernel[l.Inode] = true
		if l.Queue != 0 {
			t.Errorf("listener inode %d has %d connections queued after the load stopped", l.Inode, l.Queue)
		}
	}
	for _, g := range st.Generations {
		if len(g.Queues) != 1 {
			t.Errorf("generation %d has %d sockets, want 1", g.ID, len(g.Queues))
			continue
		}
		ino := g.Queues[0].Inode
		if !inKernel[ino] || !holds(g.PID, ino) {
			t.Errorf("generation %d (pid %d): its socket inode %d listens %v, held by it %v; want both", g.ID, g.PID, ino, inKernel[ino], holds(g.PID, ino))
		}
	}
}

// holds reports whether process pid has socket inode ino open.
func holds(pid int, ino uint64) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	want := fmt.Sprintf("socket:[%d]", ino)
	for _, fd := range fds {
		if l, err := os.Readlink(dir + "/" + fd.Name()); err == nil && l == want {
			return true
		}
	}
	return false
}

// TestReusePortForeignListenerNeverSteeredTo: a SO_REUSEPORT listener of
// the same user that joins the group after start-up (it never accepts) is
// found at the next reload, warned about and counted, and never gets a
// connection over the reloads that follow, while the kernel moves it
// around the group's indices.
func TestReusePortForeignListenerNeverSteeredTo(t *testing.T) {
	a := startApp(t, []string{"--mode", "reuseport", "--ready", "100ms", "--pidfile", filepath.Join(t.TempDir(), "hotswap.pid")})
	foreign, err := reuse.Listen("tcp", a.addr, reuse.Options{ReusePort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	for n := 2; n <= 6; n++ {
		if r := a.reload(n, fmt.Sprintf("v%d", n), ""); !r.OK {
			t.Fatalf("reload %d: %v", n, r)
		}
		a.waitGone(n-1, 10*time.Second)
	}
	res := run.Stop()
	t.Logf("load: %v", res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	if q, _, err := reuse.QueueLen(foreign); err != nil || q != 0 {
		t.Errorf("the foreign listener has %d connections queued (%v), want 0", q, err)
	}
	st := a.status(t)
	if st.ForeignSockets != 1 {
		t.Errorf("status: %d foreign sockets, want 1", st.ForeignSockets)
	}
	if w := a.hs.Events("a socket hotswap does not own joined the reuseport group: it is never steered to; another process of this user listens on the address with SO_REUSEPORT"); len(w) != 1 {
		t.Errorf("%d warnings about the foreign socket, want 1", len(w))
	}
	checkNoRepairs(t, a, st)
}

// TestReusePortRecyclesDrainedSockets: once a generation has exited and
// nothing of its holds its socket, the socket is the next generation's
// (a spare again, not closed): after the first reloads no reload binds a
// socket, the kernel lists the same sockets reload after reload, one per
// live generation plus the spares, and each generation serves its own
// version from its own socket. A generation whose grandchild outlives it
// (goapp --spawn-grandchild: a sleeping process that inherited the
// listener) keeps its socket out of the next generations: a process that
// may still accept from a socket never shares it with a later version.
func TestReusePortRecyclesDrainedSockets(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		a := startApp(t, []string{"--mode", "reuseport", "--ready", "100ms", "--pidfile", filepath.Join(t.TempDir(), "hotswap.pid")})
		var sets []map[uint64]bool
		for n := 2; n <= 7; n++ {
			if r := a.reload(n, fmt.Sprintf("v%d", n), ""); !r.OK {
				t.Fatalf("reload %d: %v", n, r)
			}
			a.waitGone(n-1, 15*time.Second)
			if v := get(t, a.addr); v != fmt.Sprintf("v%d", n) {
				t.Fatalf("after reload %d: version %q answers", n, v)
			}
			st := a.waitSettled(t, 10*time.Second)
			a.checkOneListenerPerGeneration(t, st)
			set := map[uint64]bool{}
			for _, l := range a.listeners(t) {
				set[l.Inode] = true
			}
			sets = append(sets, set)
		}
		for i := 2; i < len(sets); i++ {
			if !maps.Equal(sets[i], sets[1]) {
				t.Errorf("reload %d: the kernel lists sockets %v, after reload 3 %v: a reload bound or closed a socket", i+2, slices.Sorted(maps.Keys(sets[i])), slices.Sorted(maps.Keys(sets[1])))
			}
		}
	})
	t.Run("grandchild", func(t *testing.T) {
		a := startApp(t, []string{"--mode", "reuseport", "--ready", "100ms", "--pidfile", filepath.Join(t.TempDir(), "hotswap.pid")}, "--spawn-grandchild")
		t.Cleanup(func() { killGrandchildren(a.hs) })
		held := map[uint64]string{} // socket inode -> the grandchild holding it
		for n := 2; n <= 5; n++ {
			old := a.status(t).Generations[0].Queues[0].Inode
			if r := a.reload(n, fmt.Sprintf("v%d", n), ""); !r.OK {
				t.Fatalf("reload %d: %v", n, r)
			}
			a.waitGone(n-1, 15*time.Second)
			gcs := grandchildPids(a.hs)
			if len(gcs) < n-1 || !holds(gcs[n-2], old) {
				t.Fatalf("generation %d's grandchild (of %v) does not hold its socket %d: the test cannot tell", n-1, gcs, old)
			}
			held[old] = fmt.Sprintf("generation %d's grandchild %d", n-1, gcs[n-2])
			st := a.waitSettled(t, 10*time.Second)
			cur := st.Generations[0].Queues[0].Inode
			if who, ok := held[cur]; ok {
				t.Errorf("generation %d got socket %d, which %s still holds", n, cur, who)
			}
			if v := get(t, a.addr); v != fmt.Sprintf("v%d", n) {
				t.Fatalf("after reload %d: version %q answers", n, v)
			}
		}
	})
}
