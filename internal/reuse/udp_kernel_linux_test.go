package reuse

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/net/bpf"
)

// TestUDPKernelFacts measures what docs/kernel.md says about SO_REUSEPORT
// UDP groups and their SO_ATTACH_REUSEPORT_CBPF program on this kernel:
//
//   - the index of a UDP member is its bind() order (there is no listen());
//   - the program sees the UDP payload at offset 0, and its length as len;
//   - an absolute load past the payload aborts the program with index 0;
//   - an index out of range falls back to the hash, nothing is dropped;
//   - closing a member moves the last member into its slot.
func TestUDPKernelFacts(t *testing.T) {
	socks := udpMembers(t, 4) // bound in the order A, B, C, D
	addr := socks[0].LocalAddr().String()
	attach := func(prog ...bpf.Instruction) {
		t.Helper()
		raw, err := bpf.Assemble(prog)
		if err != nil {
			t.Fatal(err)
		}
		// Through the last member: any member can attach for the group.
		udpAttach(t, socks[len(socks)-1], raw)
	}
	ret := func(k uint32) { attach(bpf.RetConstant{Val: k}) }

	t.Run("index is bind order", func(t *testing.T) {
		for k := range 4 {
			ret(uint32(k))
			if got := udpWho(t, socks, addr, []byte("x")); got != k {
				t.Errorf("ret %d reached member %c, want %c", k, 'A'+got, 'A'+k)
			}
		}
	})
	t.Run("payload at offset 0", func(t *testing.T) {
		attach(bpf.LoadAbsolute{Off: 0, Size: 1}, bpf.RetA{})
		for k := range 4 {
			if got := udpWho(t, socks, addr, []byte{byte(k), 0x55}); got != k {
				t.Errorf("first payload byte %d reached member %c", k, 'A'+got)
			}
		}
		attach(bpf.LoadExtension{Num: bpf.ExtLen}, bpf.RetA{})
		for n := 1; n < 4; n++ {
			if got := udpWho(t, socks, addr, make([]byte, n)); got != n {
				t.Errorf("payload of %d bytes: len gave member %c", n, 'A'+got)
			}
		}
	})
	t.Run("load past the payload aborts to index 0", func(t *testing.T) {
		attach(bpf.LoadAbsolute{Off: 8, Size: 4}, bpf.RetConstant{Val: 3})
		if got := udpWho(t, socks, addr, []byte("abc")); got != 0 {
			t.Errorf("out-of-bounds load reached member %c, want A", 'A'+got)
		}
	})
	t.Run("out of range falls back to the hash", func(t *testing.T) {
		ret(7)
		seen := map[int]int{}
		for range 40 {
			seen[udpWho(t, socks, addr, []byte("x"))]++ // each from a new source port
		}
		if len(seen) < 2 {
			t.Errorf("ret 7 with 4 members: all 40 datagrams reached one member %v, want a hash spread", seen)
		}
		t.Logf("ret 7 spread: %v", seen)
	})
	t.Run("close moves the last into the slot", func(t *testing.T) {
		ret(0) // attach through D, then close B (index 1)
		socks[1].Close()
		left := []*net.UDPConn{socks[0], socks[3], socks[2]} // A, D, C
		for k, want := range []int{0, 1, 2} {
			ret(uint32(k))
			if got := udpWho(t, left, addr, []byte("x")); got != want {
				t.Errorf("after closing B, ret %d reached %s, want %s", k, name(left, got), name(left, want))
			}
		}
		// The program stays in force after the socket it was attached
		// through closes: attach "ret 0" through C, close C.
		raw, _ := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
		udpAttach(t, socks[2], raw)
		socks[2].Close()
		left = left[:2]
		for range 10 {
			if got := udpWho(t, left, addr, []byte("x")); got != 0 {
				t.Fatalf("program attached through a closed member: datagram reached %s, want A", name(left, got))
			}
		}
	})
}

func name(socks []*net.UDPConn, i int) string {
	if i < 0 || i >= len(socks) {
		return "nobody"
	}
	_, p, _ := net.SplitHostPort(socks[i].LocalAddr().String())
	return fmt.Sprintf("member %d (port %s)", i, p)
}

// udpMembers binds n SO_REUSEPORT UDP sockets on one loopback port.
func udpMembers(t *testing.T, n int) []*net.UDPConn {
	t.Helper()
	var out []*net.UDPConn
	addr := "127.0.0.1:0"
	for range n {
		f, err := Bind("udp4", addr, Options{ReusePort: true})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		c := pc.(*net.UDPConn)
		t.Cleanup(func() { c.Close() })
		addr = c.LocalAddr().String()
		out = append(out, c)
	}
	return out
}

// udpAttach attaches raw through c, closing the duplicate it needs at once
// so that closing c takes the socket out of the group.
func udpAttach(t *testing.T, c *net.UDPConn, raw []bpf.RawInstruction) {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := attachProgram(f, raw); err != nil {
		t.Fatal(err)
	}
}

// udpWho sends msg from a new socket and returns the index in socks of the
// member that received it, or -1.
func udpWho(t *testing.T, socks []*net.UDPConn, addr string, msg []byte) int {
	t.Helper()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return udpRead(t, socks, c, msg)
}

// udpRead sends msg on c and returns the index in socks of the member that
// received it, or -1.
func udpRead(t *testing.T, socks []*net.UDPConn, c net.Conn, msg []byte) int {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		for i, s := range socks {
			s.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			if _, from, err := s.ReadFrom(buf); err == nil && from.String() == c.LocalAddr().String() {
				return i
			}
		}
	}
	return -1
}
