package reuse

import (
	"errors"
	"net"
	"testing"
)

func TestListenServesAndReportsQueue(t *testing.T) {
	f, err := Listen("tcp4", "127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr, err := Addr(f)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp4", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	q, backlog, err := QueueLen(f)
	if err != nil {
		t.Fatal(err)
	}
	if q != 3 || int(backlog) != Somaxconn() {
		t.Errorf("got queue %d backlog %d, want 3 and %d", q, backlog, Somaxconn())
	}
}

func TestListenInUse(t *testing.T) {
	f, err := Listen("tcp", "127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr, _ := Addr(f)
	_, err = Listen("tcp", addr.String(), Options{})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("got %v, want ErrInUse", err)
	}
}

func TestResolveFamilies(t *testing.T) {
	tests := []struct {
		network, address string
		wantFam          string
		wantErr          bool
	}{
		{"tcp", "127.0.0.1:0", "4", false},
		{"tcp4", ":0", "4", false},
		{"tcp6", "[::1]:0", "6", false},
		{"tcp", ":0", "6", false},
		{"tcp6", "127.0.0.1:0", "", true},
		{"tcp4", "[::1]:0", "", true},
		{"tcp", "127.0.0.1:99999", "", true},
		{"sctp", "127.0.0.1:0", "", true},
		{"unix", "relative.sock", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.network+" "+tc.address, func(t *testing.T) {
			fam, _, _, _, err := resolve(tc.network, tc.address)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && map[int]string{2: "4", 10: "6"}[fam] != tc.wantFam {
				t.Errorf("got family %d, want IPv%s", fam, tc.wantFam)
			}
		})
	}
}

// A name listens on the address it resolves to. The resolver gives an
// IPv4 address in its IPv4-mapped form, which an IPv6-only socket cannot
// bind: "localhost" failed with EINVAL, in both modes.
func TestListenOnAName(t *testing.T) {
	for _, network := range []string{"tcp", "tcp4"} {
		f, err := Listen(network, "localhost:0", Options{})
		if err != nil {
			t.Fatalf("listen %s localhost:0: %v", network, err)
		}
		addr, err := Addr(f)
		f.Close()
		if err != nil || !addr.(*net.TCPAddr).IP.IsLoopback() {
			t.Errorf("listen %s localhost:0: bound %v, %v; want a loopback address", network, addr, err)
		}
	}
}
