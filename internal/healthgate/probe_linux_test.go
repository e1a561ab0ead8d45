package healthgate

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdPort returns a connection whose local 127.0.0.1 port has
// SO_REUSEADDR, so a probe with the same option can bind it too. Holding
// the connection keeps the kernel from handing the port to anyone else.
func holdPort(t *testing.T) int {
	// A bound socket that neither listens nor connects reserves the port,
	// as reuse.Group does for its probes: connect() elsewhere on the
	// machine will not share it, and SO_REUSEADDR lets probes bind it.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port
}

func TestLocalAddrPort(t *testing.T) {
	port := holdPort(t)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	t.Run("tcp", func(t *testing.T) {
		ln, peers := acceptor(t)
		for range 2 { // twice: the port is free again after the first
			if err := waitFor(t, "tcp://"+ln.Addr().String(), Options{LocalAddr: local}); err != nil {
				t.Fatal(err)
			}
			if p := <-peers; p.Port != port {
				t.Errorf("server saw source port %d, want %d", p.Port, port)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		seen := make(chan string, 10)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- r.RemoteAddr
		}))
		defer srv.Close()
		if err := waitFor(t, srv.URL, Options{LocalAddr: local}); err != nil {
			t.Fatal(err)
		}
		if got, want := <-seen, fmt.Sprintf("127.0.0.1:%d", port); got != want {
			t.Errorf("server saw %s, want %s", got, want)
		}
	})
}

func TestExecCancelKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := mustParse("exec:sh -c sleep 30 & echo $! > " + pidFile + "; wait")
	late, err := waitCancelled(t, c, Target{}, errors.New("superseded"))
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("got %v", err)
	}
	if late > 100*time.Millisecond+execWaitDelay {
		t.Errorf("Wait returned %v after cancel", late)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if alive(strings.TrimSpace(string(b))) {
		t.Errorf("the probe's grandchild %s outlived the cancel", b)
	}
}

// alive reports whether pid (a decimal string) names a running process a
// second from now: SIGKILL is delivered at once, but exiting takes a
// moment.
func alive(pid string) bool {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !aliveNow(pid) {
			return false
		}
	}
	return true
}

func aliveNow(pid string) bool {
	var n int
	if _, err := fmt.Sscan(pid, &n); err != nil || n <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
	if err != nil {
		return false
	}
	// A killed but unreaped process is a zombie: state Z.
	return !containsState(string(b), 'Z')
}

func containsState(stat string, state byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' && i+2 < len(stat) {
			return stat[i+2] == state
		}
	}
	return false
}
