package reuse

import (
	"errors"
	"net"
	"testing"
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
	// A pass of removes, then the children's closes, then one census for
	// the syncs: every departure is seen, with one dump.
	c := NewCensus(gs)
	for _, f := range fs {
		if err := c.Remove(f.g, f.ms[0]); err != nil {
			t.Fatal(err)
		}
		f.sinks[f.ms[0]].close()
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

// The drain reads the queues of many members through one census: the
// queue lengths it lists are the kernel's, as TCP_INFO gives them socket
// by socket; a member the group removed is no answer. A "tcp" group on an
// IPv4 address dumps only IPv4 sockets: an IPv6 one cannot take its
// connections.
func TestCensusQueueLen(t *testing.T) {
	g, err := NewGroup("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	m, err := g.Add()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Activate(m); err != nil {
		t.Fatal(err)
	}
	if err := g.Steer(Policy{To: m}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // queued, never accepted
		c, err := net.Dial("tcp", g.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	want, err := m.QueueLen()
	if err != nil || want != 3 {
		t.Fatalf("TCP_INFO queue: %d, %v; want 3", want, err)
	}
	before := listenerDumps.Load()
	c := NewCensus([]*Group{g})
	got, err := c.QueueLen(m)
	if err != nil || got != want {
		t.Errorf("census queue: %d, %v; want %d", got, err, want)
	}
	if n := listenerDumps.Load() - before; n != 1 {
		t.Errorf("got %d dumps for a group on 127.0.0.1, want 1 (IPv4 only)", n)
	}
	if err := g.Remove(m); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCensus([]*Group{g}).QueueLen(m); !errors.Is(err, ErrRemoved) {
		t.Errorf("census queue of a removed member: %v, want ErrRemoved", err)
	}
}
