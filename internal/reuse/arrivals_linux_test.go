package reuse

import (
	"net"
	"testing"
	"time"
)

// TestConnCookies: the dump filtered by port in the kernel lists exactly
// the server side of the connections on the asked ports, a new one
// shows as a new cookie, and the same connection keeps its cookie.
func TestConnCookies(t *testing.T) {
	var lns []net.Listener
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	dial := func(ln net.Listener) {
		t.Helper()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	for range 3 {
		dial(lns[0])
	}
	dial(lns[1]) // another port: never listed
	start := time.Now()
	first, err := ConnCookies("tcp4", ports[:1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one filtered dump: %v", time.Since(start))
	if len(first) != 3 {
		t.Fatalf("%d cookies for 3 connections on port %d: %v", len(first), ports[0], first)
	}
	dial(lns[0])
	second, err := ConnCookies("tcp4", ports[:1])
	if err != nil {
		t.Fatal(err)
	}
	var added int
	for c := range second {
		if !first[c] {
			added++
		}
	}
	if len(second) != 4 || added != 1 {
		t.Errorf("after one more connection: %d cookies, %d new; want 4 and 1", len(second), added)
	}
	both, err := ConnCookies("tcp", ports)
	if err != nil {
		t.Fatal(err)
	}
	if len(both) != 5 {
		t.Errorf("both ports: %d cookies, want 5", len(both))
	}
}
