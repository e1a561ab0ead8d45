package reuse

import (
	"net"
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
