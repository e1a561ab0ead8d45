package healthgate

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHealthSocketCannotBeSquatted: while the health socket is open, no
// other socket can bind its port on 127.0.0.1 or on the wildcard, with or
// without SO_REUSEADDR and SO_REUSEPORT (the attack of a local user who
// reads {port} from the generation's argv and answers the probe first).
func TestHealthSocketCannotBeSquatted(t *testing.T) {
	h, err := ListenHealth()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Addr().Addr() != netip.MustParseAddr("127.0.0.1") || h.Port() == 0 {
		t.Fatalf("health socket on %v, want 127.0.0.1 and a port", h.Addr())
	}
	for _, tc := range []struct {
		name      string
		fam       int
		sa        unix.Sockaddr
		reuseaddr bool
		reuseport bool
	}{
		{"127.0.0.1", unix.AF_INET, &unix.SockaddrInet4{Port: h.Port(), Addr: [4]byte{127, 0, 0, 1}}, false, false},
		{"127.0.0.1 SO_REUSEADDR", unix.AF_INET, &unix.SockaddrInet4{Port: h.Port(), Addr: [4]byte{127, 0, 0, 1}}, true, false},
		{"127.0.0.1 SO_REUSEPORT", unix.AF_INET, &unix.SockaddrInet4{Port: h.Port(), Addr: [4]byte{127, 0, 0, 1}}, true, true},
		{"0.0.0.0 SO_REUSEADDR", unix.AF_INET, &unix.SockaddrInet4{Port: h.Port()}, true, true},
		{"[::] dual-stack SO_REUSEPORT", unix.AF_INET6, &unix.SockaddrInet6{Port: h.Port()}, true, true},
	} {
		fd, err := unix.Socket(tc.fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if tc.reuseaddr {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
		if tc.reuseport {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
		if tc.fam == unix.AF_INET6 {
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		}
		err = unix.Bind(fd, tc.sa)
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("%s: bind of the health port: %v, want EADDRINUSE", tc.name, err)
		}
	}
}

// TestHealthSocketVerify: a probe connection is accepted only when it
// reached the health socket's own address.
func TestHealthSocketVerify(t *testing.T) {
	h, err := ListenHealth()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := h.Verify(c); err != nil {
		t.Errorf("a connection to the health socket: %v", err)
	}
	other, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(h.Port()))
	if err != nil {
		t.Fatalf("bind 127.0.0.2 on the health port: %v", err)
	}
	defer other.Close()
	c2, err := net.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := h.Verify(c2); err == nil || !strings.Contains(err.Error(), "not on the generation's health socket") {
		t.Errorf("a connection to %v: got %v, want refused", other.Addr(), err)
	}
}

// TestHealthSocketStaysNonBlocking: the child that receives the health
// socket through os/exec's ExtraFiles finds it non-blocking (os/exec calls
// Fd() on each, which makes a file Go's poller owns blocking), so none of
// its acceptors can block in accept() on a port nobody connects to after
// the gate.
func TestHealthSocketStaysNonBlocking(t *testing.T) {
	h, err := ListenHealth()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cmd := exec.Command("cat", "/proc/self/fdinfo/3")
	cmd.ExtraFiles = []*os.File{h.File()}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var flags int64 = -1
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
		}
	}
	if flags < 0 || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("the child's fd 3 has flags %o, want O_NONBLOCK (fdinfo: %q)", flags, out)
	}
}
