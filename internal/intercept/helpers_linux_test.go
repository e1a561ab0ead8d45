package intercept

import (
	"context"
	"fmt"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Test helpers run in a re-executed test binary, chosen by HOTSWAP_TEST_HELPER.
var helpers = proctest.Helpers{
	"shim":       shimMain,
	"nested":     nestedMain,
	"supervisor": supervisorMain,
}

// tmpRoot is a 0755 directory for files an unprivileged child must reach.
var tmpRoot string

func TestMain(m *testing.M) {
	proctest.HelperMain(m, helpers, func() {
		if tmpRoot != "" {
			os.RemoveAll(tmpRoot)
		}
	})
}

// shimMain is a miniature of the product's exec shim: the socketpair is
// fd 3, the target is argv[1:].
func shimMain() int {
	runtime.LockOSThread()
	if err := InstallAndSend(3); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 126
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 127
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, proctest.HelperEnv+"=") })
	if next := os.Getenv("HOTSWAP_TEST_NEXT"); next != "" {
		env = append(env, proctest.HelperEnv+"="+next)
	}
	err = unix.Exec(path, os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "shim: exec:", err)
	return 127
}

// nestedMain tries to install a second listener under the shim's filter and
// reports the outcome on fd 4.
func nestedMain() int {
	runtime.LockOSThread()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	err = InstallAndSend(fds[0])
	out := os.NewFile(4, "report")
	fmt.Fprintf(out, "%v", err)
	out.Close()
	return 0
}

// supBacklog is the supervisor's backlog, distinct from every child's own.
const supBacklog = 1000

// listenTCP creates a supervisor socket the way the product does: raw,
// close-on-exec, outside the netpoller.
func listenTCP(t *testing.T) (*os.File, netip.AddrPort) {
	t.Helper()
	f, addr, err := rawListen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, addr
}

func rawListen() (*os.File, netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	f := os.NewFile(uintptr(fd), "supervisor-listener")
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Listen(fd, supBacklog)
	}
	var sa unix.Sockaddr
	if err == nil {
		sa, err = unix.Getsockname(fd)
	}
	if err != nil {
		f.Close()
		return nil, netip.AddrPort{}, err
	}
	return f, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port)), nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// child is one target started under the shim and served by Serve.
type child struct {
	cmd      *exec.Cmd
	listened chan int // backlogs of the child's listen() on the supervisor socket
	done     chan struct{}
	stats    Stats
	err      error
}

type childOpts struct {
	args  []string
	dir   string
	cred  *syscall.Credential
	extra []*os.File // fds 4, 5, ...
	env   []string
	serve bool // run Serve; false leaves the notification fd to the test
}

// startChild starts a target under the shim and returns it with the
// notification fd; with o.serve it also runs Serve on a table holding ln.
func startChild(t *testing.T, o childOpts, ln *os.File, addr netip.AddrPort) (*child, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "shim-sock"), os.NewFile(uintptr(fds[1]), "shim-sock-child")
	defer ours.Close()
	exe := o.args[0]
	cmd := exec.Command(exe, o.args[1:]...)
	cmd.Path = helperExe(t, o.cred != nil)
	cmd.Args = append([]string{cmd.Path}, o.args...)
	cmd.Dir = o.dir
	cmd.Env = append(append(os.Environ(), proctest.UseHelper("shim")), o.env...)
	cmd.ExtraFiles = append([]*os.File{theirs}, o.extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: o.cred}
	cmd.Stdout = logWriter(t)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		theirs.Close()
		t.Fatal(err)
	}
	theirs.Close()
	c := &child{cmd: cmd, listened: make(chan int, 8), done: make(chan struct{})}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-c.done
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	notify, err := Receive(ctx, ours)
	if err != nil {
		close(c.done)
		t.Fatalf("receive from pid %d: %v", cmd.Process.Pid, err)
	}
	if !o.serve {
		close(c.done)
		return c, notify
	}
	t.Cleanup(func() { notify.Close() })
	table := Listeners{{Network: "tcp", Addr: addr, File: ln, OnListen: func(b int) error {
		select {
		case c.listened <- b:
		default:
		}
		return nil
	}}}
	go func() {
		defer close(c.done)
		c.stats, c.err = Serve(t.Context(), notify, cmd.Process.Pid, table)
	}()
	return c, notify
}

// waitListen waits for the child's listen() on the supervisor socket.
func (c *child) waitListen(t *testing.T) int {
	t.Helper()
	select {
	case b := <-c.listened:
		return b
	case <-c.done:
		t.Fatalf("child pid %d: serve ended before listen: %v (stats %+v)", c.cmd.Process.Pid, c.err, c.stats)
	case <-time.After(15 * time.Second):
		t.Fatalf("child pid %d: no listen() within 15s", c.cmd.Process.Pid)
	}
	return 0
}

// stop sends sig, waits for the child and for Serve's POLLHUP exit.
func (c *child) stop(t *testing.T, sig os.Signal) Stats {
	t.Helper()
	c.cmd.Process.Signal(sig)
	c.cmd.Wait()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("serve for pid %d did not end after the child exited", c.cmd.Process.Pid)
	}
	if c.err != nil {
		t.Errorf("serve: %v", c.err)
	}
	return c.stats
}

var (
	exeOnce   sync.Once
	sharedExe string
)

// helperExe returns the test binary, or a world-executable copy of it for
// children running as another user.
func helperExe(t *testing.T, shared bool) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !shared {
		return exe
	}
	exeOnce.Do(func() {
		dst := filepath.Join(publicDir(t), "intercept.test")
		b, err := os.ReadFile(exe)
		if err == nil {
			err = os.WriteFile(dst, b, 0o755)
		}
		if err == nil {
			sharedExe = dst
		}
	})
	if sharedExe == "" {
		t.Fatal("copy test binary for an unprivileged child failed")
	}
	return sharedExe
}

var publicOnce sync.Once

// publicDir is a 0755 temporary directory, removed by TestMain.
func publicDir(t *testing.T) string {
	publicOnce.Do(func() {
		d, err := os.MkdirTemp("", "intercept-test-")
		if err == nil && os.Chmod(d, 0o755) == nil {
			tmpRoot = d
		}
	})
	if tmpRoot == "" {
		t.Fatal("create public temp dir failed")
	}
	return tmpRoot
}

var (
	staticOnce sync.Once
	staticBin  string
	staticErr  error
)

// staticGo builds testdata/staticgo once per test binary with CGO_ENABLED=0.
func staticGo(t *testing.T) string {
	staticOnce.Do(func() {
		staticBin = filepath.Join(publicDir(t), "staticgo")
		cmd := exec.Command("go", "build", "-o", staticBin, "./testdata/staticgo")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("build staticgo: %v: %s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticBin
}

// webDir returns a world-readable directory holding index.html with body.
func webDir(t *testing.T, body string) string {
	d, err := os.MkdirTemp(publicDir(t), "www-")
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.Chmod(d, 0o755))
	must(t, os.WriteFile(filepath.Join(d, "index.html"), []byte(body), 0o644))
	return d
}

var client = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// get fetches / from addr and returns the body of a 200 answer.
func get(addr netip.AddrPort) (string, error) {
	resp, err := client.Get("http://" + addr.String() + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

// inode returns the socket inode of a supervisor socket.
func inode(t *testing.T, f *os.File) uint64 {
	var st unix.Stat_t
	must(t, sys.Control(f, func(fd int) error { return unix.Fstat(fd, &st) }))
	return st.Ino
}

// holdsSocket reports whether process pid has a descriptor for inode ino.
func holdsSocket(t *testing.T, pid int, ino uint64) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("socket:[%d]", ino)
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == want {
			return true
		}
	}
	return false
}

// backlog returns the supervisor socket's maximum backlog (tcpi_sacked on a
// listening socket).
func backlog(t *testing.T, f *os.File) uint32 {
	var ti *unix.TCPInfo
	must(t, sys.Control(f, func(fd int) error {
		var err error
		ti, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	}))
	return ti.Sacked
}

// logWriter sends a child's output to the test log. exec's copying
// goroutine calls it and finishes before Wait returns.
func logWriter(t *testing.T) io.Writer { return tlog{t} }

type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.t.Log("child: " + l)
	}
	return len(b), nil
}

// requireTool fails under CI=true and skips otherwise when path is missing.
func requireTool(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required (install the Debian package)", path)
	}
	t.Skipf("%s not installed", path)
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func readAll(f *os.File) (string, error) {
	b, err := io.ReadAll(f)
	return string(b), err
}

func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }
