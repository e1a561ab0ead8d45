package reuse

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestSteerWeightedSplit(t *testing.T) {
	if !inNetns(t) {
		return
	}
	g, ms, _, seen := modelGroup(t, "tcp4", "127.0.0.1:0", 2)
	if err := g.Steer(Policy{To: ms[0], Other: ms[1], Percent: 20}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	got := landed(t, seen, n, dialer("tcp", g.Addr()))
	share := 100 * float64(got["A"]) / n
	t.Logf("weight 20: %d of %d to A (%.1f%%), %v", got["A"], n, share, got)
	if share < 16 || share > 24 || got["A"]+got["B"] != n {
		t.Errorf("got %.1f%% (%v), want 20 ±4 and all landed", share, got)
	}
}

// gen is a fake generation: it accepts on its own dup of a member and
// answers one line per connection. pause stops accepting (a busy process).
type gen struct {
	ln     *net.TCPListener
	name   string
	paused atomic.Bool
	closed atomic.Bool
	active atomic.Int64
	wg     sync.WaitGroup
}

func startGen(t *testing.T, f *os.File, name string) *gen {
	t.Helper()
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	gn := &gen{ln: ln.(*net.TCPListener), name: name}
	gn.wg.Go(gn.acceptLoop)
	return gn
}

func (gn *gen) acceptLoop() {
	for {
		if gn.closed.Load() {
			return
		}
		if gn.paused.Load() {
			time.Sleep(time.Millisecond)
			continue
		}
		gn.ln.SetDeadline(time.Now().Add(5 * time.Millisecond))
		c, err := gn.ln.Accept()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return
		}
		gn.active.Add(1)
		gn.wg.Go(func() {
			defer gn.active.Add(-1)
			serveLine(c, gn.name)
		})
	}
}

// stop is the generation's final close of its copy, then it finishes the
// connections it accepted.
func (gn *gen) stop() {
	gn.closed.Store(true)
	gn.ln.Close()
	gn.wg.Wait()
}

// drain keeps gn accepting until its member's queue is empty and it holds
// no connection, twice 2 ms apart, within 2 s; it returns the time taken.
func drain(t *testing.T, m *Member, gn *gen) time.Duration {
	t.Helper()
	start, quiet := time.Now(), 0
	for quiet < 2 && time.Since(start) < 2*time.Second {
		q, err := m.QueueLen()
		if err != nil {
			t.Fatal(err)
		}
		if q == 0 && gn.active.Load() == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(2 * time.Millisecond)
	}
	if quiet < 2 {
		t.Errorf("drain of %s did not finish in 2s", gn.name)
	}
	return time.Since(start)
}

// loadResult counts a closed-loop load's outcomes.
type loadResult struct {
	mu    sync.Mutex
	ok    int
	fails map[string]int
}

func (r *loadResult) failed() int {
	n := 0
	for _, v := range r.fails {
		n += v
	}
	return n
}

// runLoad runs conc workers, each doing one request per new connection,
// until stop is closed, maxReq requests are done, or a minute passes.
func runLoad(addr string, conc, maxReq int, stop <-chan struct{}) *loadResult {
	r := &loadResult{fails: map[string]int{}}
	var wg sync.WaitGroup
	var count atomic.Int64
	deadline := time.Now().Add(time.Minute)
	for range conc {
		wg.Go(func() {
			for count.Add(1) <= int64(maxReq) && time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				kind := request(addr)
				r.mu.Lock()
				if kind == "" {
					r.ok++
				} else {
					r.fails[kind]++
				}
				r.mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r
}

// request does one request and returns "" or "phase/kind".
func request(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "dial/" + errKind(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("GET\n")); err != nil {
		return "write/" + errKind(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "read/" + errKind(err)
	}
	if !strings.HasPrefix(line, "OK ") {
		return "read/garbage"
	}
	return ""
}

func errKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, syscall.EPIPE):
		return "EPIPE"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}

const (
	replacements = 30
	loadConc     = 16
	stall        = 20 * time.Millisecond
)

// TestSteerDrainLosesNothing is docs/kernel.md's "Steer, drain, then
// close" with a Group: under a closed-loop load, each replacement adds and
// activates a sibling, steers to it, drains the old member until its queue
// is empty and its generation holds no connection, removes the
// supervisor's copy, and lets the old generation close last. The old generation stalls for 20 ms
// around the cutover, so its queue is never trivially empty.
func TestSteerDrainLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	if !inNetns(t) {
		return
	}
	g, err := NewGroup("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	old, err := g.Add()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Activate(old); err != nil {
		t.Fatal(err)
	}
	oldGen := startGen(t, old.File(), "0")
	stop := make(chan struct{})
	resc := make(chan *loadResult, 1)
	go func() { resc <- runLoad(g.Addr(), loadConc, 2_000_000, stop) }()
	var maxDrain time.Duration
	for i := range replacements {
		time.Sleep(30 * time.Millisecond)
		oldGen.paused.Store(true)
		m, err := g.Add()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Activate(m); err != nil {
			t.Fatal(err)
		}
		newGen := startGen(t, m.File(), string(rune('a'+i%26)))
		if err := g.Steer(Policy{To: m}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(stall)
		oldGen.paused.Store(false)
		maxDrain = max(maxDrain, drain(t, old, oldGen))
		if err := g.Remove(old); err != nil { // supervisor's copy first
			t.Fatal(err)
		}
		oldGen.stop() // the generation's close is the last
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		if n := g.Len(); n != 1 {
			t.Fatalf("replacement %d: got %d members, want 1", i, n)
		}
		old, oldGen = m, newGen
	}
	close(stop)
	r := <-resc
	oldGen.stop()
	t.Logf("steer+drain: %d replacements, %d ok, %d failed %v, max drain %v",
		replacements, r.ok, r.failed(), r.fails, maxDrain)
	if r.failed() != 0 || r.ok == 0 {
		t.Errorf("got %d failures %v (%d ok), want 0", r.failed(), r.fails, r.ok)
	}
}

// TestSteerNaiveLoses is the control: a new sibling joins (hash, no
// program), and the old socket is closed at once. With the same 20 ms stall
// and tcp_migrate_req=0, its queue is reset.
func TestSteerNaiveLoses(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	if !inNetns(t) {
		return
	}
	for _, st := range []time.Duration{0, stall} {
		old, err := Listen("tcp4", "127.0.0.1:0", Options{ReusePort: true})
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := Addr(old)
		oldGen := startGen(t, old, "0")
		stop := make(chan struct{})
		resc := make(chan *loadResult, 1)
		go func() { resc <- runLoad(addr.String(), loadConc, 2_000_000, stop) }()
		for i := range replacements {
			time.Sleep(30 * time.Millisecond)
			oldGen.paused.Store(st > 0)
			f, err := Listen("tcp4", addr.String(), Options{ReusePort: true})
			if err != nil {
				t.Fatal(err)
			}
			newGen := startGen(t, f, string(rune('a'+i%26)))
			time.Sleep(st)
			old.Close()
			oldGen.stop()
			old, oldGen = f, newGen
		}
		close(stop)
		r := <-resc
		oldGen.stop()
		old.Close()
		t.Logf("naive, stall %v: %d replacements, %d ok, %d failed %v", st, replacements, r.ok, r.failed(), r.fails)
		if st > 0 && r.failed() == 0 {
			t.Errorf("stall %v: got 0 failures, want the old queues reset", st)
		}
	}
}
