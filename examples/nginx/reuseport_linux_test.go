package nginx_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// TestNginxReusePortReloads is the second scenario of the steering issue:
// Debian nginx (master and 2 workers, the socket handed over with NGINX=)
// in the default reuseport mode, stopped with QUIT, gated by --ready
// 500ms, 20 SIGHUP reloads 1 s apart under load (16 clients, a new
// connection per request). No request fails or times out; afterwards the
// port has one listener per live generation, held by its nginx, besides
// the group's spares; every nginx process of the run is gone within 2 s
// of hotswap's SIGTERM.
func TestNginxReusePortReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	s := startSiteReady(t, "reuseport", "QUIT", "500ms", "--pidfile", pidfile)
	run := load.Start(t.Context(), load.Config{Addr: s.addr, Concurrency: 16, Duration: 2 * time.Minute})
	const reloads = 20
	for n := 2; n <= reloads+1; n++ {
		s.family(s.master(n - 1))
		time.Sleep(time.Second)
		s.writeVersion("v" + strconv.Itoa(n))
		if st, ok, _ := s.reload(n); !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
	}
	s.family(s.master(reloads + 1))
	ctltest.WaitGone(s.hs, reloads, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	res := run.Stop()
	t.Logf("load: %v; versions seen: %d", res, len(res.Versions))
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
	}
	if res.OK < 1000 {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	s.checkListeners(reloads + 1)

	s.hs.Signal(syscall.SIGTERM)
	t0 := time.Now()
	if code := s.hs.Wait(10 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d after SIGTERM, want 0", code)
	}
	for time.Since(t0) < 2*time.Second && anyAlive(s.pids) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, pid := range s.pids {
		if proctest.Alive(pid) {
			t.Errorf("nginx process %d still running 2s after hotswap's SIGTERM", pid)
		}
	}
	t.Logf("SIGTERM to every nginx process gone: %s", time.Since(t0).Round(time.Millisecond))
}

// checkListeners: the port's listeners are generation current's socket,
// held by its nginx processes, and the group's spares, all with empty
// queues.
func (s *site) checkListeners(current int) {
	s.t.Helper()
	_, p, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(p)
	// A connection the load opened as it stopped may still be on its way
	// to a worker: give the queues a moment, a stranded one never empties.
	var ls []reuse.Listener
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if ls, err = reuse.Listeners("tcp", port); err != nil {
			s.t.Fatal(err)
		}
		if !slices.ContainsFunc(ls, func(l reuse.Listener) bool { return l.Queue != 0 }) || time.Now().After(end) {
			break
		}
	}
	// The spares hotswap reports: the tail's, and the exited generations'
	// sockets it kept for the next ones.
	spares := ctltest.Status(s.hs).Listeners[0].Spares
	if len(ls) != 1+spares || spares < reuse.Spares {
		s.t.Errorf("%d sockets listen on port %d, want 1 (generation %d) and %d spares (at least %d): %+v", len(ls), port, current, spares, reuse.Spares, ls)
	}
	fam := s.family(s.master(current))
	held := 0
	for _, l := range ls {
		if l.Queue != 0 {
			s.t.Errorf("listener inode %d has %d connections queued 2s after the load stopped", l.Inode, l.Queue)
		}
		for _, pid := range fam {
			if holdsInode(pid, l.Inode) {
				held++
				break
			}
		}
	}
	if held != 1 {
		s.t.Errorf("%d of the port's listeners are held by generation %d's nginx, want 1", held, current)
	}
}

func holdsInode(pid int, ino uint64) bool {
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

func anyAlive(pids []int) bool {
	for _, p := range pids {
		if proctest.Alive(p) {
			return true
		}
	}
	return false
}
