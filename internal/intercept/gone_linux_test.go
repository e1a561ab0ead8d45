package intercept

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// goneScript reports, on fd 4, what trapped calls return: one bind pending
// while the listener closes, then a bind and a listen afterwards.
const goneScript = `
import errno, os, socket, sys
P = int(sys.argv[1])
res = []
def attempt(name, fn):
    try:
        fn(); res.append(name + "=ok")
    except OSError as e:
        res.append(name + "=" + errno.errorcode[e.errno])
s = socket.socket(); attempt("pending_bind", lambda: s.bind(("127.0.0.1", P)))
s2 = socket.socket(); attempt("later_bind", lambda: s2.bind(("127.0.0.1", 0)))
s3 = socket.socket(); attempt("later_listen", lambda: s3.listen(5))
s4 = socket.socket(); attempt("later_shutdown_wr", lambda: s4.shutdown(socket.SHUT_WR))
with os.fdopen(4, "w") as out: out.write(" ".join(res))
`

// TestListenerHolderGone documents what a child sees once nobody holds the
// notification fd (the supervisor died or closed it): every trapped call,
// pending or later, fails with ENOSYS; untrapped calls are unaffected.
func TestListenerHolderGone(t *testing.T) {
	requireTool(t, python)
	ln, addr := listenTCP(t)
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pr.Close()
	c, notify := startChild(t, childOpts{args: []string{python, "-c", goneScript, fmt.Sprint(addr.Port())}, extra: []*os.File{pw}}, ln, addr)
	pw.Close()
	pfd := []unix.PollFd{{Fd: int32(fdOf(t, notify)), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 15000); err != nil || n != 1 {
		t.Fatalf("no pending bind notification: n=%d err=%v", n, err)
	}
	notify.Close()
	pr.SetReadDeadline(time.Now().Add(15 * time.Second))
	out, err := readAll(pr)
	must(t, err)
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	t.Logf("child saw: %s", out)
	want := "pending_bind=ENOSYS later_bind=ENOSYS later_listen=ENOSYS later_shutdown_wr="
	if !strings.HasPrefix(out, want) {
		t.Fatalf("got %q, want prefix %q", out, want)
	}
}
