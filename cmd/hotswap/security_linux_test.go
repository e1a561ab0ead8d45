package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"golang.org/x/sys/unix"
)

// securityHelperEnv selects a helper main of this file: the attackers of
// docs/hardening.md's threat model, run by the test binary as another uid.
const securityHelperEnv = "TEST_SECURITY_HELPER"

func init() {
	switch os.Getenv(securityHelperEnv) {
	case "":
	case "squat":
		os.Exit(squatHelper(os.Args[len(os.Args)-1]))
	default:
		fmt.Fprintf(os.Stderr, "unknown security helper %q\n", os.Getenv(securityHelperEnv))
		os.Exit(2)
	}
}

// nobody is uid 65534, the local user of the threat model.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// asNobody returns a command that runs helper in a copy of the test binary
// that uid 65534 may execute, with its credentials.
func asNobody(t *testing.T, helper string, args ...string) *exec.Cmd {
	t.Helper()
	proctest.RequireCI(t, proctest.IsRoot(), "root (to run an attacker as uid 65534)")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := copyExecutable(t, exe, publicDir(t))
	cmd := exec.Command(bin, append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), securityHelperEnv+"="+helper)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	return cmd
}

// squatHelper is a local user who read a {port} from a generation's argv:
// it binds the port every way the kernel might allow (SO_REUSEADDR,
// SO_REUSEPORT, the wildcard) and, if one works, answers every request 200
// for 10 s. It prints "bound HOW" or "refused: ERRORS" on stdout.
func squatHelper(port string) int {
	var errs []string
	for _, tc := range []struct {
		how       string
		addr      [4]byte
		reuseport bool
	}{
		{"127.0.0.1 SO_REUSEADDR", [4]byte{127, 0, 0, 1}, false},
		{"127.0.0.1 SO_REUSEPORT", [4]byte{127, 0, 0, 1}, true},
		{"0.0.0.0 SO_REUSEPORT", [4]byte{}, true},
	} {
		f, err := squatBind(tc.addr, port, tc.reuseport)
		if err != nil {
			errs = append(errs, tc.how+": "+err.Error())
			continue
		}
		ln, err := net.FileListener(f)
		if err != nil {
			errs = append(errs, tc.how+": "+err.Error())
			continue
		}
		fmt.Println("bound", tc.how)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "squatter") })}
		time.AfterFunc(10*time.Second, func() { srv.Close() })
		srv.Serve(ln)
		return 0
	}
	fmt.Println("refused:", strings.Join(errs, "; "))
	return 0
}

func squatBind(addr [4]byte, port string, reuseport bool) (*os.File, error) {
	p, _ := strconv.Atoi(port)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "squat")
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reuseport {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: p, Addr: addr}); err != nil {
		f.Close()
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		f.Close()
		return nil, os.NewSyscallError("listen", err)
	}
	return f, nil
}

// healthPortRE finds the {port} a generation was given in its argv.
var healthPortRE = regexp.MustCompile(`--health-listen\x00127\.0\.0\.1:(\d+)`)

// TestHealthPortSquatter (issue 15, item 3): a local user reads the {port}
// of a starting generation from /proc/PID/cmdline (world-readable) and
// binds it first, to answer the probe with 200. Before, the port was chosen,
// released and bound again by the generation seconds later (here: a 2 s
// start delay), so the squatter won: hotswap cut over to a generation that
// was not serving its health port and stopped the good one. Now hotswap
// binds the port itself and hands it to the generation as the fd named
// "health"; the squatter's every bind fails with EADDRINUSE, and the gate
// passes on the generation's own answer.
func TestHealthPortSquatter(t *testing.T) {
	squat := asNobody(t, "squat", "PORT")
	a := startApp(t, []string{"--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "10s"},
		"--health-listen", "127.0.0.1:{port}")
	a.write("v2", "--start-delay 2s")
	a.hs.Signal(syscall.SIGHUP)
	pid := a.hs.WaitEvent(10*time.Second, "generation started", proctest.Gen(2)).Int("pid")
	port := argvPort(t, pid)
	squat.Args[len(squat.Args)-1] = port
	out, err := squat.Output()
	if err != nil {
		t.Fatalf("squatter: %v", err)
	}
	t.Logf("squatter on port %s: %s", port, out)
	if !strings.HasPrefix(string(out), "refused:") || strings.Count(string(out), "address already in use") != 3 {
		t.Errorf("squatter as uid 65534: %q, want every bind refused with EADDRINUSE", out)
	}
	if e := a.hs.ReloadOutcome(2, 30*time.Second, func() {}); e.Msg() != "reload succeeded" {
		t.Fatalf("reload: %v", e)
	}
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after the reload answered by %q, want v2", got)
	}
}

// argvPort waits for the generation pid's command line to name its {port}.
func argvPort(t *testing.T, pid int) string {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if m := healthPortRE.FindSubmatch(b); m != nil {
			return string(m[1])
		}
	}
	t.Fatalf("no --health-listen 127.0.0.1:PORT in generation pid %d's argv", pid)
	return ""
}

// TestClosedLogPipe (item 4): `hotswap ... 2>&1 | logger`, and the logger
// goes away. Before, hotswap's next log line ended it with SIGPIPE (exit
// 141), leaving the generation unsupervised and the control socket behind.
// Now the line is lost and nothing else: a reload over the control socket
// succeeds, the generation (whose --output-prefix output hotswap copies to
// the same dead pipe) keeps serving, and SIGTERM ends hotswap normally.
func TestClosedLogPipe(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hotswap, "--control", sock, "--output-prefix", "[gen {gen}] ", "--ready", "100ms",
		"-l", "http=tcp://127.0.0.1:0", "--", goapp, "--version", "v1")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(r)
	for sc.Scan() && !strings.Contains(sc.Text(), "generation ready") {
	}
	r.Close() // the logger is gone
	st := statusOf(t, sock)
	addr := st.Listeners[0].Address
	for n := 2; n <= 3; n++ {
		if code, out, _ := ctl(t, "reload", "--control", sock); code != 0 {
			t.Fatalf("reload %d with the log pipe closed: exit %d %q", n, code, out)
		}
		if got := get(t, addr); got != "v1" {
			t.Fatalf("generation %d answered %q, want v1", n, got)
		}
	}
	if st := statusOf(t, sock); st.Current != 3 {
		t.Errorf("current generation %d, want 3", st.Current)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != 0 {
		t.Errorf("hotswap ended with %v, want exit 0 after SIGTERM", err)
	}
}

// TestOutputPrefixLongLine (item 13): a generation writes 200 MB without
// a newline through --output-prefix. Before, hotswap held the whole line
// (RSS 194 MB, kept); now it writes it in 64 KiB pieces, each prefixed, and
// its peak RSS stays small.
func TestOutputPrefixLongLine(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	const size = 200 << 20
	done := filepath.Join(t.TempDir(), "done")
	cmd := exec.Command(hotswap, "--output-prefix", "[gen {gen}] ", "--ready", "100ms", "-l", "tcp://127.0.0.1:0",
		"--", "sh", "-c", `head -c $1 /dev/zero | tr '\0' a; touch $2; exec sleep 60`, "sh", strconv.Itoa(size), done)
	out := &lineCounter{prefix: []byte("[gen 1] ")}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the generation did not write 200 MB in 60s")
		}
	}
	hwm := procStatus(t, cmd.Process.Pid)["VmHWM"]
	kb, _ := strconv.Atoi(strings.Fields(hwm)[0])
	t.Logf("hotswap's peak RSS after a 200 MB line: %d kB", kb)
	if kb > 64<<10 {
		t.Errorf("hotswap's peak RSS %d kB after a 200 MB line without newline, want under 64 MB", kb)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if out.bytes != size || out.bad != 0 {
		t.Errorf("got %d bytes in %d lines (%d without the prefix), want %d bytes", out.bytes, out.lines, out.bad, size)
	}
}

// lineCounter counts the bytes after the prefix of every line written to
// it, and the lines that lack the prefix.
type lineCounter struct {
	prefix            []byte
	partial           []byte
	bytes, lines, bad int
}

func (c *lineCounter) Write(b []byte) (int, error) {
	c.partial = append(c.partial, b...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := c.partial[:i]
		c.lines++
		if l, ok := bytes.CutPrefix(line, c.prefix); ok {
			c.bytes += len(l)
		} else {
			c.bad++
		}
		c.partial = c.partial[i+1:]
	}
}

// TestMetricsIdleClients (item 5): 2,000 network clients connect to the
// metrics port and send nothing, while hotswap runs with 512 descriptors
// (prlimit). Before, the server kept every one (ReadHeaderTimeout only
// bounds a request once it has begun... and nothing capped them): hotswap
// ran out of descriptors, and reloads and the control socket failed. Now at
// most 64 are kept, each for 5 s: hotswap's descriptors stay bounded, a
// reload and status succeed with the 2,000 still connected, and a scrape
// is answered within the read timeout.
func TestMetricsIdleClients(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	p := proctest.Start(t, "prlimit", "--nofile=512", hotswap, "--log-format", "json", "--control", sock,
		"--metrics", "127.0.0.1:0", "--ready", "100ms", "-l", "http=tcp://127.0.0.1:0", "--", goapp)
	maddr := p.WaitEvent(10*time.Second, "metrics listening", nil).Str("address")
	p.WaitEvent(10*time.Second, "generation ready", proctest.Gen(1))
	pid := p.Cmd.Process.Pid
	base := fdCount(t, pid)
	const idle = 2000
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.DialTimeout("tcp", maddr, 5*time.Second)
		if err != nil {
			t.Fatalf("idle client %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // let hotswap accept what it will
	during := fdCount(t, pid)
	t.Logf("hotswap's descriptors: %d before, %d with %d idle metrics clients", base, during, idle)
	if during > base+metricsMaxConns+8 {
		t.Errorf("hotswap holds %d descriptors with %d idle clients (%d before), want at most %d more", during, idle, base, metricsMaxConns+8)
	}
	if code, out, _ := ctl(t, "reload", "--control", sock); code != 0 {
		t.Errorf("reload with %d idle metrics clients: exit %d %q", idle, code, out)
	}
	if st := statusOf(t, sock); st.Current != 2 {
		t.Errorf("current generation %d, want 2", st.Current)
	}
	var scraped bool
	for end := time.Now().Add(2 * metricsReadTimeout); time.Now().Before(end) && !scraped; time.Sleep(100 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + maddr + "/metrics")
		if err == nil {
			scraped = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	if !scraped {
		t.Errorf("no scrape answered within %s while %d idle clients stay connected", 2*metricsReadTimeout, idle)
	}
	p.WaitEvent(time.Second, "metrics connection refused: too many open", nil)
}

// fdCount counts the open descriptors of pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestGroupWithoutUser (item 16): as root, --group alone started every
// generation as uid 0 with every capability and a new primary group, which
// looks like a privilege drop and is none. Now it is refused with one line
// before anything is bound or started.
func TestGroupWithoutUser(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	marker := filepath.Join(t.TempDir(), "started")
	cmd := exec.Command(hotswap, "--group", "65534", "-l", "tcp://127.0.0.1:0", "--", "touch", marker)
	out, _ := cmd.CombinedOutput()
	want := "hotswap: --group 65534 without --user: the generation would still run as uid " + strconv.Itoa(os.Geteuid()) + " with every capability (add --user NAME|UID; --group then replaces its primary group)\n"
	if code := cmd.ProcessState.ExitCode(); code != exitUsage || string(out) != want {
		t.Errorf("--group without --user: exit %d %q, want %d %q", code, out, exitUsage, want)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a generation was started")
	}
}
