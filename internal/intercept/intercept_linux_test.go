package intercept

import (
	"fmt"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

const python = "/usr/bin/python3"

func TestSupported(t *testing.T) {
	if err := Supported(); err != nil {
		t.Fatalf("Supported on this kernel: %v", err)
	}
}

// serveHTTP checks that a target started under the shim answers through
// the supervisor's socket, and returns the child's listen() backlog.
func serveHTTP(t *testing.T, o childOpts, want string) (*child, *os.File) {
	ln, addr := listenTCP(t)
	for i, a := range o.args {
		o.args[i] = strings.ReplaceAll(strings.ReplaceAll(a, "PORT", fmt.Sprint(addr.Port())), "ADDR", addr.String())
	}
	o.serve = true
	c, _ := startChild(t, o, ln, addr)
	b := c.waitListen(t)
	body, err := getRetry(t, addr)
	if err != nil {
		t.Fatalf("GET through supervisor socket: %v", err)
	}
	if !strings.Contains(body, want) {
		t.Fatalf("body: got %q, want %q", body, want)
	}
	if !holdsSocket(t, c.cmd.Process.Pid, inode(t, ln)) {
		t.Errorf("child pid %d holds no descriptor of the supervisor socket", c.cmd.Process.Pid)
	}
	if got := backlog(t, ln); got != supBacklog {
		t.Errorf("backlog after the child's listen(%d): got %d, want %d", b, got, supBacklog)
	}
	t.Logf("child listen(%d) skipped; backlog stays %d", b, supBacklog)
	return c, ln
}

// getRetry tries a few times: listen() is answered before the child reaches
// accept, but a request queued meanwhile is answered once it does.
func getRetry(t *testing.T, addr interface{ String() string }) (string, error) {
	var err error
	for range 3 {
		var body string
		if body, err = get(mustAddrPort(addr.String())); err == nil {
			return body, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", err
}

func checkStats(t *testing.T, st Stats, swapped, listens int) {
	t.Helper()
	t.Logf("stats %+v", st)
	if st.Swapped != swapped || st.Listens != listens || st.Failed != 0 {
		t.Errorf("stats: got swapped %d listens %d failed %d (%v), want %d %d 0", st.Swapped, st.Listens, st.Failed, st.Errors, swapped, listens)
	}
}

func TestPythonHTTPServer(t *testing.T) {
	requireTool(t, python)
	c, _ := serveHTTP(t, childOpts{
		args: []string{python, "-m", "http.server", "PORT", "--bind", "127.0.0.1"},
		dir:  webDir(t, "python-ok"),
	}, "python-ok")
	checkStats(t, c.stop(t, syscall.SIGTERM), 1, 1)
}

func TestStaticGoServer(t *testing.T) {
	bin := staticGo(t)
	c, ln := serveHTTP(t, childOpts{args: []string{bin, "ADDR"}}, "staticgo-ok")
	if !nonblocking(t, ln) {
		t.Errorf("supervisor socket is blocking under a Go child, want O_NONBLOCK copied from its socket")
	}
	checkStats(t, c.stop(t, syscall.SIGTERM), 1, 1)
}

func TestBusyboxHTTPD(t *testing.T) {
	requireTool(t, "/usr/bin/busybox")
	dir := webDir(t, "busybox-ok")
	c, ln := serveHTTP(t, childOpts{args: []string{"/usr/bin/busybox", "httpd", "-f", "-p", "ADDR", "-h", dir}}, "busybox-ok")
	if nonblocking(t, ln) {
		t.Errorf("supervisor socket is non-blocking under busybox, want blocking copied from its socket")
	}
	checkStats(t, c.stop(t, syscall.SIGTERM), 1, 1)
}

func TestUnprivilegedChild(t *testing.T) {
	requireTool(t, python)
	c, _ := serveHTTP(t, childOpts{
		args: []string{python, "-m", "http.server", "PORT", "--bind", "127.0.0.1"},
		dir:  webDir(t, "nobody-ok"),
		cred: &syscall.Credential{Uid: 65534, Gid: 65534},
	}, "nobody-ok")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	must(t, err)
	for _, want := range []string{"Uid:\t65534", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(string(st), want) {
			t.Errorf("child status lacks %q", want)
		}
	}
	checkStats(t, c.stop(t, syscall.SIGTERM), 1, 1)
}

func nonblocking(t *testing.T, f *os.File) bool {
	var fl int
	must(t, sys.Control(f, func(fd int) error {
		var err error
		fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err
	}))
	return fl&unix.O_NONBLOCK != 0
}

// nestedErr is what the nested helper reports.
func TestNestedListenerIsRefused(t *testing.T) {
	exe, err := os.Executable()
	must(t, err)
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pr.Close()
	ln, addr := listenTCP(t)
	proctest.UseHelper("nested") // the shim execs it, through HOTSWAP_TEST_NEXT
	c, _ := startChild(t, childOpts{args: []string{exe}, extra: []*os.File{pw}, env: []string{"HOTSWAP_TEST_NEXT=nested"}, serve: true}, ln, addr)
	pw.Close()
	pr.SetReadDeadline(time.Now().Add(15 * time.Second))
	out, err := readAll(pr)
	must(t, err)
	c.stop(t, syscall.SIGKILL)
	if want := ErrNested.Error(); out != want {
		t.Fatalf("nested InstallAndSend: got %q, want %q", out, want)
	}
}
