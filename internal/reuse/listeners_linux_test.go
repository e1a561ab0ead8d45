package reuse

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestListenersFiltersByPort: the port-filtered dump lists exactly the
// group's sockets, by inode, with their accept queues, and nothing of
// another port.
func TestListenersFiltersByPort(t *testing.T) {
	g, err := NewGroup("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want := map[uint64]bool{}
	var first *Member
	for range 3 {
		m, err := g.Add()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Activate(m); err != nil {
			t.Fatal(err)
		}
		want[m.ino] = true
		if first == nil {
			first = m
		}
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// Nobody accepts: two connections wait in the first member's queue.
	if err := g.Steer(Policy{To: first}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := net.DialTimeout("tcp", g.Addr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	ls, err := Listeners("tcp", g.port)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 3 {
		t.Fatalf("got %d listeners on port %d, want 3: %+v", len(ls), g.port, ls)
	}
	for _, l := range ls {
		if !want[l.Inode] {
			t.Errorf("listener %+v is not a member", l)
		}
		wantQ := uint32(0)
		if l.Inode == first.ino {
			wantQ = 2
		}
		if l.Queue != wantQ {
			t.Errorf("listener inode %d: queue %d, want %d", l.Inode, l.Queue, wantQ)
		}
	}
}

// TestAuditForeignNeverSteeredTo: a SO_REUSEPORT listener of the same user
// that joins the group behind the model's back is found by Audit and kept
// at its index, so that when an earlier member leaves (and the kernel
// moves the foreign socket into its slot) the program still names the
// member it should: the foreign socket receives nothing.
func TestAuditForeignNeverSteeredTo(t *testing.T) {
	g, ms, sinks, seen := modelGroup(t, "tcp", "127.0.0.1:0", 2)
	defer func() {
		for _, s := range sinks {
			s.close()
		}
	}()
	foreign, err := Listen("tcp", g.Addr(), Options{ReusePort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	a, err := g.Audit()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Foreign) != 1 || len(a.Lost) != 0 {
		t.Fatalf("audit: %d foreign, %d lost; want 1 and 0 (kernel %+v, model %v)", len(a.Foreign), len(a.Lost), a.Kernel, a.Model)
	}
	if err := g.Steer(Policy{To: ms[1]}); err != nil {
		t.Fatal(err)
	}
	sinks[ms[0]].close()
	delete(sinks, ms[0])
	if err := g.Remove(ms[0]); err != nil { // the kernel moves the foreign socket to index 0
		t.Fatal(err)
	}
	got := landed(t, seen, 50, dialer("tcp", g.Addr()))
	if got["B"] != 50 {
		t.Errorf("connections landed %v, want all 50 on B", got)
	}
	q, _, err := QueueLen(foreign)
	if err != nil {
		t.Fatal(err)
	}
	if q != 0 {
		t.Errorf("the foreign socket has %d connections queued, want 0", q)
	}
	if a, err := g.Audit(); err != nil || len(a.Foreign) != 0 || len(a.Lost) != 0 {
		t.Errorf("second audit: %+v, %v; want nothing new", a, err)
	}
	foreign.Close()
	if a, err := g.Audit(); err != nil || len(a.Kernel) != 1 || g.Len() != 1 {
		t.Errorf("audit after the foreign socket closed: %d sockets, model %d, %v; want 1 and 1", len(a.Kernel), g.Len(), err)
	}
}

// TestTakeKeepsIndicesAcrossADeparture: members from Take have spare
// sockets after them, so when a removed member's last holder closes it
// and the kernel moves the last socket into its place, the program
// attached before still names the same member: no connection is hashed
// to another socket before the next Sync.
func TestTakeKeepsIndicesAcrossADeparture(t *testing.T) {
	g, err := NewGroup("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seen := &sync.Map{}
	var ms []*Member
	sinks := map[*Member]*sink{}
	for i := range 3 {
		m, err := g.Take()
		if err != nil {
			t.Fatal(err)
		}
		sinks[m] = newSink(t, m.File(), string(rune('A'+i)), seen)
		ms = append(ms, m)
	}
	defer func() {
		for _, s := range sinks {
			s.close()
		}
	}()
	if g.Len() != 3 || len(g.Members()) != 3 {
		t.Fatalf("Len %d, Members %d; want 3 and 3 (spares not counted)", g.Len(), len(g.Members()))
	}
	if err := g.Steer(Policy{To: ms[2]}); err != nil {
		t.Fatal(err)
	}
	if err := g.Remove(ms[0]); err != nil { // A's child still holds it
		t.Fatal(err)
	}
	sinks[ms[0]].close() // the child's final close: the kernel moves the last socket into A's place
	delete(sinks, ms[0])
	if got := landed(t, seen, 50, dialer("tcp", g.Addr())); got["C"] != 50 {
		t.Errorf("before Sync, connections landed %v, want all 50 on C", got)
	}
	a, err := g.Audit()
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Foreign)+len(a.Lost)+len(a.QueuedSpares) != 0 || len(a.Kernel) != 2+Spares {
		t.Errorf("audit: %+v; want %d sockets, nothing foreign, lost or queued", a, 2+Spares)
	}
}
