package intercept

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// bindsScript binds several sockets and reports their inodes as JSON on fd 4.
const bindsScript = `
import json, os, socket, sys, time
P = int(sys.argv[1])
r = {}
o = socket.socket(); o.bind(("127.0.0.1", 0))
r["other"] = os.fstat(o.fileno()).st_ino
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", P))
r["udp"] = os.fstat(u.fileno()).st_ino
t = socket.socket(); t.bind(("127.0.0.1", P)); t.listen(5)
r["tcp"] = os.fstat(t.fileno()).st_ino
r["name"] = "%s:%d" % t.getsockname()
w = socket.socket(); w.bind(("0.0.0.0", P))
r["wild"] = os.fstat(w.fileno()).st_ino
t.shutdown(socket.SHUT_RD)
r["cloexec"] = not os.get_inheritable(t.fileno())
with os.fdopen(4, "w") as out: json.dump(r, out)
`

func TestBindsNotSwapped(t *testing.T) {
	requireTool(t, python)
	ln, addr := listenTCP(t)
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pr.Close()
	c, _ := startChild(t, childOpts{args: []string{python, "-c", bindsScript, fmt.Sprint(addr.Port())}, extra: []*os.File{pw}, serve: true}, ln, addr)
	pw.Close()
	pr.SetReadDeadline(time.Now().Add(15 * time.Second))
	var r struct {
		Other, UDP, TCP, Wild uint64
		Name                  string
		Cloexec               bool
	}
	must(t, json.NewDecoder(pr).Decode(&r))
	st := c.stop(t, syscall.SIGKILL) // the script has exited: Serve ends on POLLHUP
	ours := inode(t, ln)
	t.Logf("supervisor inode %d, child %+v", ours, r)
	for _, tc := range []struct {
		name string
		ino  uint64
		want bool
	}{{"tcp bind to another port", r.Other, false}, {"udp bind to the address", r.UDP, false}, {"tcp bind to the address", r.TCP, true}, {"tcp bind to 0.0.0.0:port", r.Wild, true}} {
		if got := tc.ino == ours; got != tc.want {
			t.Errorf("%s: swapped %v, want %v", tc.name, got, tc.want)
		}
	}
	if r.Name != addr.String() || !r.Cloexec {
		t.Errorf("child view: getsockname %q cloexec %v, want %s true", r.Name, r.Cloexec, addr)
	}
	if st.Swapped != 2 || st.Listens != 1 || st.Shutdowns != 1 || st.Continued != 2 || st.Failed != 0 {
		t.Errorf("stats: got %+v, want swapped 2 listens 1 shutdowns 1 continued 2", st)
	}
	if got := backlog(t, ln); got != supBacklog {
		t.Errorf("backlog after listen(5): got %d, want %d", got, supBacklog)
	}
	acceptOne(t, ln, addr.String())
}

// acceptOne checks that the supervisor socket still accepts after the
// child's shutdown(SHUT_RD).
func acceptOne(t *testing.T, ln *os.File, addr string) {
	on, err := unix.GetsockoptInt(fdOf(t, ln), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	must(t, err)
	if on != 1 {
		t.Fatalf("SO_ACCEPTCONN after the child's shutdown(SHUT_RD): got %d, want 1", on)
	}
	conn, err := dialTCP(addr)
	must(t, err)
	defer conn.Close()
	pfd := []unix.PollFd{{Fd: int32(fdOf(t, ln)), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 {
		t.Fatalf("supervisor socket not readable after a connect: n=%d err=%v", n, err)
	}
	nfd, _, err := unix.Accept4(fdOf(t, ln), unix.SOCK_CLOEXEC)
	must(t, err)
	unix.Close(nfd)
}

// fdOf returns f's descriptor for getsockopt-style reads that keep f's
// blocking mode; f stays open for the test.
func fdOf(t *testing.T, f *os.File) int {
	var got int
	must(t, sys.Control(f, func(fd int) error { got = fd; return nil }))
	return got
}
