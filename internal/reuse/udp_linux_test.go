package reuse

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// udpServer is what a generation does with its member: reads datagrams.
func udpServer(t *testing.T, m *UDPMember) *net.UDPConn {
	t.Helper()
	pc, err := net.FilePacketConn(m.File())
	if err != nil {
		t.Fatal(err)
	}
	return pc.(*net.UDPConn)
}

// cidOf returns a connection ID a server with m's slot would issue.
func cidOf(t *testing.T, g *UDPGroup, slot int) []byte {
	t.Helper()
	prefix, _, _ := strings.Cut(g.CID(slot), "/")
	b, err := hex.DecodeString(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, 1, 2, 3, 4, 5, 6, 7, 8)
}

func shortHeader(cid []byte) []byte { return append(append([]byte{0x40 | 0x03}, cid...), 0xaa, 0xbb) }

func longHeader(cid []byte) []byte {
	b := []byte{0xc0, 0, 0, 0, 1, byte(len(cid))}
	b = append(b, cid...)
	return append(b, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0)
}

// twoMembers makes a group on network and address with members for slots 1
// and 2; the group is closed when the test ends.
func twoMembers(t *testing.T, network, address string, key [3]byte) (*UDPGroup, *UDPMember, *UDPMember) {
	t.Helper()
	g, err := NewUDPGroup(network, address, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	a, err := g.Add(1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	return g, a, b
}

func TestUDPGroupSteersByCID(t *testing.T) {
	g, a, b := twoMembers(t, "udp4", "127.0.0.1:0", [3]byte{0xa1, 0xb2, 0xc3})
	if _, err := g.Add(2); err == nil {
		t.Fatal("Add with slot 2 in use succeeded")
	}
	if err := g.Steer(b, nil, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	ca, cb := udpServer(t, a), udpServer(t, b)
	socks := []*net.UDPConn{ca, cb}
	random := []byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2}
	short := append([]byte(nil), cidOf(t, g, 1)...)
	short[1] ^= 0xff // slot 1, wrong key
	for _, tc := range []struct {
		name string
		msg  []byte
		want int
	}{
		{"short header, slot 1", shortHeader(cidOf(t, g, 1)), 0},
		{"short header, slot 2", shortHeader(cidOf(t, g, 2)), 1},
		{"long header, slot 1", longHeader(cidOf(t, g, 1)), 0},
		{"long header, random 12-byte DCID", longHeader(random), 1},
		{"long header, 8-byte DCID", longHeader(random[:8]), 1},
		{"short header, slot 1 with another key", shortHeader(short), 1},
		{"short header cut short", shortHeader(cidOf(t, g, 1))[:6], 1},
		{"no fixed bit", append([]byte{0x03}, cidOf(t, g, 1)...), 1},
		{"not QUIC", []byte("hello"), 1},
		{"empty", []byte{}, 1},
	} {
		if got := udpWho(t, socks, g.Addr(), tc.msg); got != tc.want {
			t.Errorf("%s: reached %s, want %s", tc.name, name(socks, got), name(socks, tc.want))
		}
	}

	// A readiness probe from the probe source reaches a, not current b.
	probeConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	src := probeConn.LocalAddr().(*net.UDPAddr).AddrPort()
	probeConn.Close() // the probe binds it, as dig -b does
	if err := g.Steer(nil, a, src); err != nil {
		t.Fatal(err)
	}
	if got := udpWhoFrom(t, socks, g.Addr(), src, []byte("probe")); got != 0 {
		t.Errorf("probe from %s reached %s, want a", src, name(socks, got))
	}
	if got := udpWho(t, socks, g.Addr(), []byte("x")); got != 1 {
		t.Errorf("with a probe steered to a, a client reached %s, want b", name(socks, got))
	}
	if err := g.Steer(b, nil, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	if got := udpWhoFrom(t, socks, g.Addr(), src, []byte("probe")); got != 1 {
		t.Errorf("probe after the gate reached %s, want b", name(socks, got))
	}

	// a's server exits; the group binds a spare that takes a's index, so
	// b keeps its index 1.
	ca.Close()
	if err := g.Remove(a); err != nil {
		t.Fatal(err)
	}
	if i := g.order[1]; i != b || g.Len() != 2 {
		t.Fatalf("after Remove(a): b not at index 1 of %d", g.Len())
	}
	socks = []*net.UDPConn{cb}
	if got := udpWho(t, socks, g.Addr(), shortHeader(cidOf(t, g, 1))); got != 0 {
		t.Errorf("slot 1 after its member left: reached %s, want the current member", name(socks, got))
	}
	c, err := g.Add(1) // the freed slot, on the spare
	if err != nil {
		t.Fatal(err)
	}
	if g.Len() != 2 || g.order[0] != c {
		t.Fatalf("Add after Remove did not take the spare: %d members", g.Len())
	}
	if err := g.Steer(c, nil, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	cc := udpServer(t, c)
	defer cc.Close()
	defer cb.Close()
	socks = []*net.UDPConn{cb, cc}
	for _, tc := range []struct {
		name string
		msg  []byte
		want int
	}{
		{"slot 2 (draining b)", shortHeader(cidOf(t, g, 2)), 0},
		{"slot 1 (c)", shortHeader(cidOf(t, g, 1)), 1},
		{"new connection", longHeader(random), 1},
	} {
		if got := udpWho(t, socks, g.Addr(), tc.msg); got != tc.want {
			t.Errorf("%s: reached %s, want %s", tc.name, name(socks, got), name(socks, tc.want))
		}
	}

	// A member another process still holds stays in the group.
	if err := g.Remove(b); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 2 {
		t.Fatalf("b is held by its server: want it still counted, have %d members", g.Len())
	}
	if got := udpWho(t, socks, g.Addr(), shortHeader(cidOf(t, g, 2))); got != 1 {
		t.Errorf("slot 2 after Remove(b): reached %s, want c", name(socks, got))
	}
	cb.Close()
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 1 || g.order[0] != c {
		t.Fatalf("after b's last close: %d members, want c alone", g.Len())
	}
	if got := udpWho(t, []*net.UDPConn{cc}, g.Addr(), []byte("x")); got != 0 {
		t.Errorf("after sync: datagram reached %d, want c", got)
	}
}

// TestUDPGroupSpares removes members of a group whose generations overlap:
// no live member's index moves, and spares do not pile up.
func TestUDPGroupSpares(t *testing.T) {
	g, err := NewUDPGroup("udp4", "127.0.0.1:0", [3]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Reserve(); err != nil {
		t.Fatal(err)
	}
	var ms []*UDPMember
	var conns []*net.UDPConn
	for slot := 1; slot <= 3; slot++ {
		m, err := g.Add(slot)
		if err != nil {
			t.Fatal(err)
		}
		ms, conns = append(ms, m), append(conns, udpServer(t, m))
	}
	if err := g.Steer(ms[2], nil, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	check := func(live ...int) {
		t.Helper()
		for _, i := range live {
			if got := udpWho(t, conns, g.Addr(), shortHeader(cidOf(t, g, i+1))); got != i {
				t.Errorf("slot %d reached %s, want member %d", i+1, name(conns, got), i)
			}
		}
	}
	check(0, 1, 2)
	for i, wantLen := range []int{3, 3, 1} {
		conns[i].Close()
		if err := g.Remove(ms[i]); err != nil {
			t.Fatal(err)
		}
		if g.Len() != wantLen {
			t.Errorf("after removing member %d: %d sockets, want %d", i, g.Len(), wantLen)
		}
		in, err := udpInodes(portOfUDP(g))
		if err != nil {
			t.Fatal(err)
		}
		if len(in) != g.Len() {
			t.Errorf("after removing member %d: the kernel has %d sockets on the port, the model %d", i, len(in), g.Len())
		}
		if i == 0 {
			check(1, 2)
		}
	}
	// The last socket stays, as a spare for the next generation.
	last := g.order[0]
	if err := g.Remove(last); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 1 || last.File() == nil {
		t.Fatalf("removing the group's only socket: %d sockets left, its file %v", g.Len(), last.File())
	}
	if m, err := g.Add(9); err != nil || m != last {
		t.Fatalf("Add after removing the only socket: %v %v, want the kept spare", m, err)
	}
}

func portOfUDP(g *UDPGroup) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.port
}

// udpWhoFrom is udpWho from the source address src.
func udpWhoFrom(t *testing.T, socks []*net.UDPConn, addr string, src netip.AddrPort, msg []byte) int {
	t.Helper()
	c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return udpRead(t, socks, c, msg)
}

// TestUDPGroupIPv6 steers by connection ID and by probe source in a udp6
// group, where the probe rule reads the IPv6 header.
func TestUDPGroupIPv6(t *testing.T) {
	g, a, b := twoMembers(t, "udp6", "[::1]:0", [3]byte{4, 5, 6})
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	src := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	if err := g.Steer(b, a, src); err != nil {
		t.Fatal(err)
	}
	socks := []*net.UDPConn{udpServer(t, a), udpServer(t, b)}
	defer socks[0].Close()
	defer socks[1].Close()
	send := func(from netip.AddrPort, msg []byte) int {
		t.Helper()
		var local *net.UDPAddr
		if from.IsValid() {
			local = net.UDPAddrFromAddrPort(from)
		}
		c, err := net.DialUDP("udp6", local, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(g.Addr())))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return udpRead(t, socks, c, msg)
	}
	for _, tc := range []struct {
		name string
		from netip.AddrPort
		msg  []byte
		want int
	}{
		{"short header, slot 1", netip.AddrPort{}, shortHeader(cidOf(t, g, 1)), 0},
		{"long header, random DCID", netip.AddrPort{}, longHeader([]byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}), 1},
		{"probe", src, []byte("probe"), 0},
	} {
		if got := send(tc.from, tc.msg); got != tc.want {
			t.Errorf("%s: reached %s, want %s", tc.name, name(socks, got), name(socks, tc.want))
		}
	}
}
