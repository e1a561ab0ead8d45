package reuse

import (
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// One census serves a pass over many groups with one dump, sees every
// close made before it, and never gives a group a view older than its
// model: a group that changed after the read dumps its own port.
func TestCensus(t *testing.T) {
	if !inNetns(t) {
		return
	}
	type fixture struct {
		g     *Group
		ms    []*Member
		sinks map[*Member]*sink
	}
	var fs []fixture
	var gs []*Group
	for range 3 {
		g, ms, sinks, _ := modelGroup(t, "tcp4", "127.0.0.1:0", 3)
		fs = append(fs, fixture{g, ms, sinks})
		gs = append(gs, g)
	}
	// A pass of removes, then the children's closes and the releases of
	// the copies the removes kept, then one census for the syncs: every
	// departure is seen, with one dump.
	c := NewCensus(gs)
	for _, f := range fs {
		if err := c.Remove(f.g, f.ms[0]); err != nil {
			t.Fatal(err)
		}
		f.sinks[f.ms[0]].close()
		if err := f.g.Release(f.ms[0]); err != nil {
			t.Fatal(err)
		}
	}
	before := listenerDumps.Load()
	for _, f := range fs {
		if err := c.Sync(f.g); err != nil {
			t.Fatal(err)
		}
		wantOrder(t, f.g, f.sinks, "CB") // A left: C moved into slot 0
	}
	if n := listenerDumps.Load() - before; n != 1 {
		t.Errorf("got %d dumps for 3 groups, want 1", n)
	}
	// An audit through a census read before a group changed: the group
	// dumps its own port and sees its new member, neither lost nor
	// foreign.
	c = NewCensus(gs)
	if _, err := c.Audit(fs[0].g); err != nil {
		t.Fatal(err)
	}
	d, err := fs[1].g.Add()
	if err != nil {
		t.Fatal(err)
	}
	if err := fs[1].g.Activate(d); err != nil {
		t.Fatal(err)
	}
	before = listenerDumps.Load()
	for _, f := range fs[1:] {
		a, err := c.Audit(f.g)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Lost) > 0 || len(a.Foreign) > 0 {
			t.Errorf("audit of %s: lost %v, foreign %v, want none", f.g.Addr(), a.Lost, a.Foreign)
		}
	}
	if n := listenerDumps.Load() - before; n != 1 {
		t.Errorf("got %d dumps, want 1: the changed group's own", n)
	}
	if n := fs[1].g.Len(); n != 3 {
		t.Errorf("changed group has %d members, want 3", n)
	}
	// Take listens a spare into the census it looked through: the census
	// still holds, and the audit after it reads nothing and sees every
	// spare.
	c = NewCensus(gs)
	for _, g := range gs {
		if _, err := c.Take(g); err != nil {
			t.Fatal(err)
		}
	}
	if !c.Fresh() {
		t.Fatal("census not fresh after a pass of Take through it")
	}
	before = listenerDumps.Load()
	for _, g := range gs {
		a, err := c.Audit(g)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Lost) > 0 || len(a.Foreign) > 0 || len(a.Kernel) != g.Len()+g.Spares() {
			t.Errorf("audit of %s after Take: lost %v, foreign %v, %d sockets listed for %d in the model", g.Addr(), a.Lost, a.Foreign, len(a.Kernel), g.Len()+g.Spares())
		}
	}
	if n := listenerDumps.Load() - before; n != 0 {
		t.Errorf("got %d dumps for the audit after Take, want 0", n)
	}
	// Through a fresh census of its own the kernel agrees.
	c = NewCensus(gs)
	for _, g := range gs {
		if a, err := c.Audit(g); err != nil || len(a.Lost) > 0 || len(a.Foreign) > 0 || len(a.Kernel) != g.Len()+g.Spares() {
			t.Errorf("audit of %s from the kernel: %v, lost %v, foreign %v, %d sockets", g.Addr(), err, a.Lost, a.Foreign, len(a.Kernel))
		}
	}
}

// The drain reads every queue of a generation with one poll(2): across a
// random sequence of connects and accepts over several groups, poll calls
// the members empty exactly when the kernel's TCP_INFO (tcpi_unacked) and
// sock_diag (idiag_rqueue) both list no queued connection. A member that
// was shut down is empty; a removed one is no answer.
func TestQueuesEmpty(t *testing.T) {
	const groups = 3
	var ms []*Member
	var gs []*Group
	for range groups {
		g, err := NewGroup("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		m, err := g.Take()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Steer(Policy{To: m}); err != nil {
			t.Fatal(err)
		}
		gs, ms = append(gs, g), append(ms, m)
	}
	lns := make([]*net.TCPListener, groups)
	for i, m := range ms {
		f, err := m.Dup()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln.(*net.TCPListener)
		t.Cleanup(func() { ln.Close() })
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	queued := make([]int, groups)
	for step := range 60 {
		i := rng.IntN(groups)
		if queued[i] > 0 && rng.IntN(2) == 0 {
			c, err := lns[i].Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			queued[i]--
		} else {
			c, err := net.Dial("tcp", gs[i].Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			queued[i]++
		}
		// The listener's side of the handshake may complete in a softirq
		// after connect returns: wait until the kernel lists it.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
			if q, err := ms[i].QueueLen(); err != nil || int(q) == queued[i] || time.Now().After(deadline) {
				break
			}
		}
		kernelEmpty := true
		for j, m := range ms {
			q, err := m.QueueLen()
			if err != nil {
				t.Fatal(err)
			}
			a, err := gs[j].Audit()
			if err != nil {
				t.Fatal(err)
			}
			dq, _ := a.Queue(m)
			if int(q) != queued[j] || int(dq) != queued[j] {
				t.Fatalf("step %d: group %d: TCP_INFO %d, sock_diag %d, want %d queued", step, j, q, dq, queued[j])
			}
			kernelEmpty = kernelEmpty && q == 0
		}
		got, err := QueuesEmpty(slices.Concat([]*Member{nil}, ms))
		if err != nil || got != kernelEmpty {
			t.Fatalf("step %d: QueuesEmpty %v, %v; the kernel lists queues %v", step, got, err, queued)
		}
	}
	for i := range lns { // empty every queue, then shut one member down
		for ; queued[i] > 0; queued[i]-- {
			c, err := lns[i].Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	if c, err := net.Dial("tcp", gs[0].Addr()); err != nil {
		t.Fatal(err)
	} else {
		t.Cleanup(func() { c.Close() })
	}
	if got, err := QueuesEmpty(ms); err != nil || got {
		t.Fatalf("one connection queued: QueuesEmpty %v, %v", got, err)
	}
	raw, err := lns[0].SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_RD) })
	if err != nil {
		t.Fatal(err)
	}
	if got, err := QueuesEmpty(ms); err != nil || !got {
		t.Errorf("after shutdown of the queued member: QueuesEmpty %v, %v; want true", got, err)
	}
	if err := gs[1].Remove(ms[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := QueuesEmpty(ms); !errors.Is(err, ErrRemoved) {
		t.Errorf("QueuesEmpty with a removed member: %v, want ErrRemoved", err)
	}
}

// A "tcp" group on an IPv4 address dumps only IPv4 sockets: an IPv6 one
// cannot take its connections.
func TestCensusIPv4Only(t *testing.T) {
	g, err := NewGroup("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Take(); err != nil {
		t.Fatal(err)
	}
	before := listenerDumps.Load()
	if _, err := NewCensus([]*Group{g}).Audit(g); err != nil {
		t.Fatal(err)
	}
	if n := listenerDumps.Load() - before; n != 1 {
		t.Errorf("got %d dumps for a group on 127.0.0.1, want 1 (IPv4 only)", n)
	}
}
