package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
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
	case "fakectl":
		os.Exit(fakeControlHelper(os.Args[len(os.Args)-1]))
	case "notifysend":
		_, err := net.Dial("unixgram", os.Args[len(os.Args)-1])
		fmt.Println("connect:", err)
		os.Exit(0)
	case "swap":
		n := len(os.Args)
		os.Exit(swapHelper(os.Args[n-3], os.Args[n-2], os.Args[n-1]))
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
	return asUser(t, nobody, helper, args...)
}

// asUser is asNobody for any credentials.
func asUser(t *testing.T, cred *syscall.Credential, helper string, args ...string) *exec.Cmd {
	t.Helper()
	proctest.RequireCI(t, proctest.IsRoot(), "root (to run an attacker as uid 65534)")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := copyExecutable(t, exe, publicDir(t))
	cmd := exec.Command(bin, append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), securityHelperEnv+"="+helper)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
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
	pid := ctltest.WaitStarted(a.hs, 2, 10*time.Second).PID
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
	if st, ok := ctltest.Reload(a.hs, 2, 30*time.Second, func() {}); !ok { // the SIGHUP above
		t.Fatalf("reload: %s", st.LastFailure)
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
	goapp := proctest.Build(t, goappPkg)
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	cmd := startClosedLogPipe(t, sock, "--output-prefix", "[gen {gen}] ", "--ready", "100ms",
		"-l", "http=tcp://127.0.0.1:0", "--", goapp, "--version", "v1")
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
	err := cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != 0 {
		t.Errorf("hotswap ended with %v, want exit 0 after SIGTERM", err)
	}
}

// startClosedLogPipe starts hotswap --control sock with args, its stdout
// and stderr a pipe, and closes the pipe's read end (the logger is gone)
// once `hotswap status --json` shows generation 1 ready.
func startClosedLogPipe(t *testing.T, sock string, args ...string) *exec.Cmd {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(proctest.Build(t, hotswapPkg), append([]string{"--control", sock}, args...)...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go io.Copy(io.Discard, r) // until the close below
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, out, _ := ctl(t, "status", "--json", "--control", sock); code == 0 {
			st := statusJSON{Status: &supervisor.Status{}}
			if json.Unmarshal([]byte(out), &st) == nil && len(st.Generations) == 1 && st.Generations[0].State == supervisor.StateReady {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatal("generation 1 not ready within 15s")
		}
	}
	r.Close() // the logger is gone
	return cmd
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
// (prlimit). Before, nothing capped the connections kept: measured with
// the old server, hotswap reached its 512 descriptors (22 before), accept
// failed with EMFILE and no scrape was answered in 10 s; whatever else
// needs a descriptor then (a reload's sockets and pipes, a control
// connection) fails too. Now at most 64 are kept, each for 5 s: hotswap's
// descriptors stay bounded, a reload and status succeed with the 2,000
// still connected, and a scrape is answered within the read timeout.
func TestMetricsIdleClients(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	p := proctest.Start(t, "prlimit", "--nofile=512", hotswap, "--log-format", "json", "--control", sock,
		"--metrics", "127.0.0.1:0", "--ready", "100ms", "-l", "http=tcp://127.0.0.1:0", "--", goapp)
	// The log, not the status: the status does not list --metrics (its
	// port 0 is resolved only in the log), and a status poll would leave
	// control connections open while hotswap's descriptors are counted.
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
	p.WaitEvent(time.Second, "metrics connection refused: too many open", nil) // the warning is the feature
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

// swapHelper is a local user who may write dir: for dur it renames a
// symlink to target over every file in dir whose name starts with prefix,
// the instant it appears (the race against a chmod or rename by name).
// It prints how many swaps it made.
func swapHelper(dir, prefix, target string) int {
	swaps := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), prefix) || e.Type()&os.ModeSymlink != 0 {
				continue
			}
			link := filepath.Join(dir, ".swap-"+strconv.Itoa(swaps))
			if os.Symlink(target, link) == nil && os.Rename(link, filepath.Join(dir, e.Name())) == nil {
				swaps++
			}
			os.Remove(link)
		}
	}
	fmt.Println("swaps", swaps)
	return 0
}

// attackDir makes a root-owned directory with mode perm (chmod is for the
// test's own fresh directory) and, in another, a root-only secret file.
func attackDir(t *testing.T, perm os.FileMode) (dir, secret string) {
	t.Helper()
	dir = publicDir(t)
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	secret = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

func checkSecret(t *testing.T, secret string) {
	t.Helper()
	fi, err := os.Stat(secret)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the root-only file: %v, mode %v; want it untouched at 0600", err, fi.Mode().Perm())
	}
}

// TestPidfileSymlinkSwapper (item 2): as root with --pidfile in a directory
// another user can write, that user (uid 65534) renames a symlink to a
// root-only file over hotswap's temporary pidfile between its creation and
// its chmod by name: before, the file became 0644 within 3 tries, and the
// rename then installed the attacker's link as the pidfile. Now a
// directory writable by others without the sticky bit is refused with one
// line and nothing written; in a sticky directory such as /tmp (where the
// swapper cannot replace root's files) the pidfile is written through the
// directory's and the file's own descriptors while the swapper runs.
func TestPidfileSymlinkSwapper(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	t.Run("writable by others", func(t *testing.T) {
		dir, secret := attackDir(t, 0o777)
		swapper := asNobody(t, "swap", dir, ".hotswap-pid-", secret)
		if err := swapper.Start(); err != nil {
			t.Fatal(err)
		}
		defer swapper.Wait()
		pidfile := filepath.Join(dir, "hotswap.pid")
		cmd := exec.Command(hotswap, "--pidfile", pidfile, "-l", "http=tcp://127.0.0.1:0", "--", goapp)
		out, _ := cmd.CombinedOutput()
		want := "hotswap: --pidfile " + pidfile + ": directory " + dir + " is writable by other users (mode 0777, no sticky bit): one of them could replace the file (use a directory only its owner can write, such as /run); this hotswap changed nothing\n"
		if code := cmd.ProcessState.ExitCode(); code != exitFailure || string(out) != want {
			t.Errorf("pidfile in a 0777 directory: exit %d %q, want %d %q", code, out, exitFailure, want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("hotswap left %d files in the directory", len(ents))
		}
		checkSecret(t, secret)
	})
	t.Run("sticky", func(t *testing.T) {
		dir, secret := attackDir(t, os.ModeSticky|0o777)
		swapper := asNobody(t, "swap", dir, ".hotswap-pid-", secret)
		swapper.Stdout = &bytes.Buffer{}
		if err := swapper.Start(); err != nil {
			t.Fatal(err)
		}
		pidfile := filepath.Join(dir, "hotswap.pid")
		p := proctest.Start(t, hotswap, "--log-format", "json", "--pidfile", pidfile, "--ready", "100ms",
			"-l", "http=tcp://127.0.0.1:0", "--", goapp)
		ctltest.WaitServing(p, 1, 10*time.Second)
		swapper.Wait()
		t.Logf("swapper as uid 65534: %s", swapper.Stdout)
		fi, err := os.Lstat(pidfile)
		if err != nil || !fi.Mode().IsRegular() || readPid(pidfile) != p.Cmd.Process.Pid {
			t.Errorf("pidfile: %v, mode %v, pid %d; want a regular file naming %d", err, fi.Mode(), readPid(pidfile), p.Cmd.Process.Pid)
		}
		checkSecret(t, secret)
	})
}

// TestSecondInstance (item 10 and the lock): a second hotswap given the
// same --pidfile, or the same --control socket, while the first serves.
// Before, it wrote its pid over the first one's pidfile, failed to bind
// the address in use and removed the pidfile on its way out; through the
// control path it unlinked the live socket on a dial error and took the
// path over. Now each refuses at once with one line, exit 1, and the first
// hotswap's pidfile, control socket and generation are as they were.
func TestSecondInstance(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	dir := t.TempDir()
	pidfile, sock := filepath.Join(dir, "hotswap.pid"), filepath.Join(dir, "hotswap.sock")
	a := startApp(t, []string{"--ready", "100ms", "--pidfile", pidfile, "--control", sock})
	first := a.hs.Cmd.Process.Pid
	for _, tc := range []struct{ flag, path string }{{"--pidfile", pidfile}, {"--control", sock}} {
		t0 := time.Now()
		cmd := exec.Command(hotswap, tc.flag, tc.path, "-l", "tcp://"+a.addr, "--", "true")
		out, _ := cmd.CombinedOutput()
		want := fmt.Sprintf("hotswap: %s %s: another hotswap holds it (pid %d, lock %s.lock); this hotswap changed nothing\n", tc.flag, tc.path, first, tc.path)
		if code := cmd.ProcessState.ExitCode(); code != exitFailure || string(out) != want {
			t.Errorf("second hotswap on %s: exit %d %q, want %d %q", tc.flag, code, out, exitFailure, want)
		}
		t.Logf("second hotswap on %s refused after %s", tc.flag, time.Since(t0).Round(time.Millisecond))
	}
	if got := readPid(pidfile); got != first {
		t.Errorf("pidfile names %d, want the first hotswap %d", got, first)
	}
	if st := statusOf(t, sock); st.PID != first || st.Current != 1 {
		t.Errorf("control socket answered by pid %d (current %d), want %d serving 1", st.PID, st.Current, first)
	}
	if got := get(t, a.addr); got != "v1" {
		t.Errorf("first hotswap's generation answered %q, want v1", got)
	}
}

// TestFailedUpgradeSettlesAtOnce (item 11): a self-upgrade whose new
// hotswap's first generation exits at start. Before, the new hotswap then
// waited for its upgrade goroutines before cancelling the context they
// wait on, until the old one's upgrade timeout (--ready-timeout + 10 s)
// killed it, and its control socket stayed behind. Now it exits as soon as
// its generation has failed, removes its socket, and the old hotswap says
// "self-upgrade failed, still serving" and serves on.
func TestFailedUpgradeSettlesAtOnce(t *testing.T) {
	a := startAppCmd(t, []string{"--ready", "200ms", "--ready-timeout", "5s"})
	a.write("v2", "--no-such-flag")
	t0 := time.Now()
	a.hs.Signal(upgradeSignal)
	// The refusal and its reason are the feature: the log event says them.
	e := a.hs.WaitEvent(20*time.Second, "self-upgrade failed, still serving", nil)
	took := time.Since(t0)
	t.Logf("failed self-upgrade settled after %s: %s", took.Round(time.Millisecond), e.Str("error"))
	if took > 4*time.Second {
		t.Errorf("the failed self-upgrade took %s to settle, want well under --ready-timeout 5s + 10s", took)
	}
	socks := a.hs.Events("control socket")
	if len(socks) != 2 {
		t.Fatalf("%d control sockets logged, want the old and the new hotswap's", len(socks))
	}
	if _, err := os.Lstat(socks[1].Str("path")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed new hotswap's control socket %s: %v, want removed", socks[1].Str("path"), err)
	}
	if got := get(t, a.addr); got != "v1" {
		t.Errorf("after the failed upgrade answered by %q, want v1", got)
	}
}

// TestUnixSocketSymlinkSwapper (items 1 and 6): as root, a unix listener
// with ?mode= and the --control socket in a directory another user can
// write. Before, the mode was set by chmod on the path after bind(): a
// swapper (uid 65534) that renamed a symlink to a root-only file over the
// new socket had that file made 0666 on the 11th try. Now the mode comes
// from the umask at bind() and the owner through an O_PATH descriptor
// checked to be the socket just bound; as root, a directory writable by
// others without the sticky bit is refused with one line; in a sticky
// directory the swapper cannot touch root's socket and the file is right.
func TestUnixSocketSymlinkSwapper(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	for _, tc := range []struct {
		name  string
		flags func(sock string) []string
		want  string // the refusal in a 0777 directory, after the path
	}{
		{"listener", func(sock string) []string { return []string{"-l", "unix://" + sock + "?mode=0666"} },
			": directory %s is writable by other users (mode 0777, no sticky bit): one of them could replace the file (use a directory only its owner can write, such as /run); this hotswap started nothing"},
		{"control", func(sock string) []string { return []string{"--control", sock, "-l", "tcp://127.0.0.1:0"} },
			""},
	} {
		t.Run(tc.name+" writable by others", func(t *testing.T) {
			dir, secret := attackDir(t, 0o777)
			sock := filepath.Join(dir, "api.sock")
			swapper := asNobody(t, "swap", dir, "api.sock", secret)
			if err := swapper.Start(); err != nil {
				t.Fatal(err)
			}
			defer swapper.Wait()
			cmd := exec.Command(hotswap, append(tc.flags(sock), "--", "sleep", "5")...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != exitFailure || strings.Count(string(out), "\n") != 1 ||
				!strings.Contains(string(out), "directory "+dir+" is writable by other users (mode 0777, no sticky bit)") {
				t.Errorf("%s in a 0777 directory: exit %d %q, want %d and one line refusing the directory", tc.name, code, out, exitFailure)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket file left: %v", err)
			}
			checkSecret(t, secret)
		})
		t.Run(tc.name+" sticky", func(t *testing.T) {
			dir, secret := attackDir(t, os.ModeSticky|0o777)
			sock := filepath.Join(dir, "api.sock")
			swapper := asNobody(t, "swap", dir, "api.sock", secret)
			swapper.Stdout = &bytes.Buffer{}
			if err := swapper.Start(); err != nil {
				t.Fatal(err)
			}
			p := proctest.Start(t, hotswap, append(append([]string{"--log-format", "json", "--ready", "100ms"}, tc.flags(sock)...), "--", "sleep", "30")...)
			// The log, not the status: the control socket may be the file
			// under attack, not to be talked to before it is checked.
			p.WaitEvent(10*time.Second, "generation ready", proctest.Gen(1))
			swapper.Wait()
			t.Logf("swapper as uid 65534: %s", swapper.Stdout)
			fi, err := os.Lstat(sock)
			want := os.FileMode(0o666)
			if tc.name == "control" {
				want = 0o600
			}
			if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != want {
				t.Errorf("%s socket: %v, mode %v; want a socket with mode %v", tc.name, err, fi.Mode(), want)
			}
			checkSecret(t, secret)
		})
	}
}

// TestControlSocketNotStolen (item 7): the control path is held by a live
// server that a dial cannot reach: its accept queue is full (EAGAIN), or,
// for another user's hotswap, the socket is root's 0600 (EACCES). Before,
// any dial error counted as stale: the socket was unlinked and the path
// taken over; another user's hotswap deleted root's live socket. Now only
// ECONNREFUSED is stale, and only for a socket of this uid: hotswap refuses
// with one line and the live socket stays.
func TestControlSocketNotStolen(t *testing.T) {
	proctest.RequireCI(t, proctest.IsRoot(), "root (to run a hotswap as uid 65534)")
	hotswap := proctest.Build(t, hotswapPkg)
	sticky, _ := attackDir(t, os.ModeSticky|0o777)
	sock, ino := liveSocket(t, sticky)
	cmd := exec.Command(hotswap, "--control", sock, "-l", "tcp://127.0.0.1:0", "--", "sleep", "5")
	out, _ := cmd.CombinedOutput()
	want := "hotswap: listen control: " + sock + ": address already in use: another process listens on it (its accept queue is full); left alone: control: control socket in use; nothing is serving"
	if code := cmd.ProcessState.ExitCode(); code != exitFailure || lastOutputLine(out) != want {
		t.Errorf("full accept queue: exit %d %q, want %d %q", code, out, exitFailure, want)
	}
	if ino() == 0 {
		t.Error("the live socket was replaced")
	}

	open, _ := attackDir(t, 0o777)
	sock, ino = liveSocket(t, open)
	bin := copyExecutable(t, hotswap, publicDir(t))
	cmd = exec.Command(bin, "--control", sock, "-l", "tcp://127.0.0.1:0", "--", "sleep", "5")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	out, _ = cmd.CombinedOutput()
	want = "hotswap: listen control: " + sock + ": address already in use: cannot tell whether another process listens on it (connect: permission denied); left alone: control: control socket in use; nothing is serving"
	if code := cmd.ProcessState.ExitCode(); code != exitFailure || lastOutputLine(out) != want {
		t.Errorf("uid 65534 on root's 0600 socket: exit %d %q, want %d %q", code, out, exitFailure, want)
	}
	if ino() == 0 {
		t.Error("the live socket was replaced")
	}
}

// liveSocket is a root-owned 0600 unix socket in dir that listens and
// never accepts, its accept queue full. ino returns the inode at its path
// now, 0 when it is not the same socket.
func liveSocket(t *testing.T, dir string) (path string, ino func() uint64) {
	t.Helper()
	path = filepath.Join(dir, "live.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	old := unix.Umask(0o177)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	unix.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			break // EAGAIN: full
		}
		t.Cleanup(func() { c.Close() })
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return path, func() uint64 {
		var now unix.Stat_t
		if err := unix.Lstat(path, &now); err != nil || now.Ino != st.Ino {
			return 0
		}
		return now.Ino
	}
}

func lastOutputLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TestUpgradeExplicitControl (items 9 and 18): a self-upgrade of a hotswap
// with --control PATH, --metrics on a fixed port and --pidfile. Before,
// the new hotswap found the control path (and the metrics port) in use and
// the upgrade always failed; and a successful upgrade logged "self-upgrade
// failed ... context canceled". Now both sockets pass to the new hotswap,
// which answers on them while the old one drains; the locks pass too, so a
// third hotswap on the same pidfile is still refused; and nothing says
// the upgrade failed.
func TestUpgradeExplicitControl(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	dir := t.TempDir()
	pidfile, sock := filepath.Join(dir, "hotswap.pid"), filepath.Join(dir, "hotswap.sock")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := ln.Addr().String()
	ln.Close()
	a := startAppCmd(t, []string{"--ready", "200ms", "--pidfile", pidfile, "--control", sock, "--metrics", maddr})
	oldPid := a.hs.Cmd.Process.Pid
	// A failed upgrade first: the new hotswap served the same socket
	// file, and must leave it to the old one.
	a.write("v2", "--no-such-flag")
	a.hs.Signal(upgradeSignal)
	a.hs.WaitEvent(20*time.Second, "self-upgrade failed, still serving", nil) // no state tells a failed upgrade is over
	if st := statusOf(t, sock); st.PID != oldPid {
		t.Fatalf("after a failed upgrade the control socket answered by pid %d, want %d", st.PID, oldPid)
	}
	a.write("v2", "")
	a.hs.Signal(upgradeSignal)
	newPid := waitNewPid(t, pidfile, oldPid)
	if code := a.hs.Wait(30 * time.Second); code != 0 {
		t.Errorf("old hotswap exited %d after the upgrade, want 0", code)
	}
	if st := statusOf(t, sock); st.PID != newPid {
		t.Errorf("control socket %s answered by pid %d, want the new hotswap %d", sock, st.PID, newPid)
	}
	if m := scrape(t, maddr); !strings.Contains(m, "hotswap_up 1") {
		t.Errorf("metrics on %s after the upgrade: no hotswap_up 1", maddr)
	}
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after the upgrade answered by %q, want v2", got)
	}
	cmd := exec.Command(hotswap, "--pidfile", pidfile, "-l", "tcp://127.0.0.1:0", "--", "true")
	out, _ := cmd.CombinedOutput()
	if want := fmt.Sprintf("another hotswap holds it (pid %d, lock %s.lock)", newPid, pidfile); !strings.Contains(string(out), want) {
		t.Errorf("a third hotswap on the pidfile: %q, want %q", out, want)
	}
	if es := a.hs.Events("self-upgrade failed, still serving"); len(es) != 1 {
		t.Errorf("%d upgrade failures logged, want the first one only: %v", len(es), es)
	}
}

// fakeControlHelper is a local user's fake hotswap: it serves the control
// protocol at path, answering every request "ok" for 10 s.
func fakeControlHelper(path string) int {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Chmod(path, 0o777) // the attacker's own fresh socket
	fmt.Println("serving")
	time.AfterFunc(10*time.Second, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return 0
		}
		go func() {
			defer c.Close()
			if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				c.Write([]byte(`{"v":1,"ok":true,"gen":9,"pid":1}` + "\n"))
			}
		}()
	}
}

// TestClientRefusesPlantedSocket (item 12): uid 65533 makes
// $TMPDIR/hotswap-65534 before uid 65534 ever ran hotswap, and serves a
// fake hotswap there. Before, uid 65534's `hotswap reload` found the only
// socket in "its" directory and printed "reload succeeded" from the fake.
// Now the client refuses a directory that is not its own and private, and,
// given the fake's path explicitly, a server whose SO_PEERCRED uid is
// neither its own nor root's: one line each, exit 3, nothing sent.
func TestClientRefusesPlantedSocket(t *testing.T) {
	tmp := publicDir(t)
	if err := os.Chmod(tmp, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	attacker := &syscall.Credential{Uid: 65533, Gid: 65533}
	dir := filepath.Join(tmp, "hotswap-65534")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65533, 65533); err != nil { // the test's own fresh directory
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "1.sock") // pid 1 is alive
	fake := asUser(t, attacker, "fakectl", sock)
	out, err := fake.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	defer fake.Wait()
	defer fake.Process.Kill()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "serving\n" {
		t.Fatalf("fake control server: %q %v", line, err)
	}
	bin := copyExecutable(t, proctest.Build(t, hotswapPkg), publicDir(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reload"}, "hotswap: reload: control directory " + dir + " is owned by uid 65533, not 65534: another user may have put a socket there; not looking for hotswap in it (pass --control PATH)\n"},
		{[]string{"reload", "--control", sock}, fmt.Sprintf("hotswap: reload: cannot reach hotswap: %s is served by uid 65533 (pid %d), neither uid 65534 nor root: not talking to it; nothing was changed\n", sock, fake.Process.Pid)},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "XDG_RUNTIME_DIR=")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		got, _ := cmd.CombinedOutput()
		if string(got) != tc.want || cmd.ProcessState.ExitCode() == 0 {
			t.Errorf("uid 65534: hotswap %s: exit %d %q, want %q", strings.Join(tc.args, " "), cmd.ProcessState.ExitCode(), got, tc.want)
		}
	}
}

// idleControlConns opens n connections to the control socket that send
// nothing, closed at the end of the test.
func idleControlConns(t *testing.T, sock string, n int) {
	t.Helper()
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("idle control client: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// TestControlIdleAndExpired (item 17): 40 clients connect to the control
// socket and say nothing, taking all 32 slots. Before, they held them for
// 30 s; a `hotswap reload --timeout 1s` behind them gave up, and its reload
// was still carried out once a slot freed. Now a first request must arrive
// within 2 s, so `hotswap status --timeout 10s` is answered; and the
// reload that waited past its client's deadline is refused, not run.
func TestControlIdleAndExpired(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	a := startApp(t, []string{"--ready", "100ms", "--control", sock})
	idleControlConns(t, sock, 40)
	code, _, errOut := ctl(t, "reload", "--control", sock, "--timeout", "1s")
	if code != exitUnreachable || !strings.Contains(errOut, "no answer within 1s") {
		t.Errorf("reload behind 40 idle clients: exit %d %q, want %d and no answer within 1s", code, errOut, exitUnreachable)
	}
	if code, _, _ := ctl(t, "status", "--control", sock, "--timeout", "10s"); code != 0 {
		t.Errorf("status behind 40 idle clients: exit %d, want 0 once their first-request deadline passed", code)
	}
	e := a.hs.WaitEvent(10*time.Second, "control request expired, not carried out", nil) // the warning is the feature
	if e.Str("op") != "reload" {
		t.Errorf("expired request %q, want reload", e.Str("op"))
	}
	if st := statusOf(t, sock); st.Current != 1 || st.Reloads.OK != 0 {
		t.Errorf("current generation %d after %d reloads, want 1 and none: the expired reload ran", st.Current, st.Reloads.OK)
	}
}

// TestControlAcceptEMFILE (item 17): hotswap runs out of descriptors
// (prlimit) while clients keep connecting to the control socket. Before,
// every failed accept was logged, one line each 100 ms; now the first is,
// then at most one per 10 s with a count, and the accept loop backs off up
// to 1 s.
func TestControlAcceptEMFILE(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	p := proctest.Start(t, "prlimit", "--nofile=40", hotswap, "--log-format", "json", "--control", sock,
		"--ready", "100ms", "-l", "tcp://127.0.0.1:0", "--", "sleep", "60")
	// The log, not the status: the control socket is what this test
	// exhausts, and the accept error it logs is the feature.
	p.WaitEvent(10*time.Second, "generation ready", proctest.Gen(1))
	idleControlConns(t, sock, 60) // more than hotswap has descriptors left
	p.WaitEvent(5*time.Second, "accept control connection", nil)
	time.Sleep(3 * time.Second)
	n := len(p.Events("accept control connection"))
	t.Logf("accept failures logged in 3 s of EMFILE: %d", n)
	if n > 1 {
		t.Errorf("%d accept failures logged within 3 s, want 1 (then one per 10 s)", n)
	}
	if code, _, _ := ctl(t, "status", "--control", sock, "--timeout", "10s"); code != 0 {
		t.Errorf("status once the idle clients' deadline passed: exit %d, want 0", code)
	}
}

// TestNestedTableflipChild (item 8): the generation is itself a hotswap
// (which upgrades itself with tableflip, as many Go servers do). Before,
// the outer hotswap's self-upgrade left TABLEFLIP_HAS_PARENT_7DIU3 in its
// environment and so in every later generation: the inner hotswap took
// its listener for tableflip's pipes and exited, and the upgrade failed.
// Now the new outer hotswap's generation never sees the variable, starts,
// and serves.
func TestNestedTableflipChild(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	pidfile := filepath.Join(t.TempDir(), "outer.pid")
	cmd := exec.Command(hotswap, "--log-format", "json", "--pidfile", pidfile, "--ready", "1s", "-l", "tcp://127.0.0.1:0",
		"--", hotswap, "--control", "none", "--ready", "100ms", "-l", "http=tcp://127.0.0.1:0", "--", goapp)
	cmd.WaitDelay = time.Second
	p := proctest.StartCmd(t, cmd)
	ctltest.WaitServing(p, 1, 15*time.Second)
	oldPid := p.Cmd.Process.Pid
	p.Signal(upgradeSignal)
	newPid := waitNewPid(t, pidfile, oldPid)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("old outer hotswap exited %d after the upgrade, want 0", code)
	}
	if _, err := os.Lstat(control.DefaultPath(oldPid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old hotswap's own control socket %s after the upgrade: %v, want removed", control.DefaultPath(oldPid), err)
	}
	st := ctltest.WaitAt(p, control.DefaultPath(newPid), 15*time.Second, "the new outer hotswap serving its first generation", ctltest.Serving(1))
	g, _ := ctltest.Gen(st, 1)
	inner := g.PID
	t.Logf("new outer hotswap %d serves through inner hotswap %d", newPid, inner)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", inner))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("TABLEFLIP_")) {
		t.Errorf("the new outer hotswap's generation (pid %d) has tableflip's variable", inner)
	}
}

// TestNotifySocketPrivate (item 18): with --user and --ready notify, the
// generation's notify socket was 0666 under a predictable name in a
// searchable directory: any local user could send to it, and a spoofed
// datagram became the "last ignored" message of a failed gate. Now it is
// 0600, owned by the generation's uid: uid 65533 cannot even connect.
func TestNotifySocketPrivate(t *testing.T) {
	proctest.RequireCI(t, proctest.IsRoot(), "root (to switch users)")
	dir := publicDir(t)
	hs := copyExecutable(t, proctest.Build(t, hotswapPkg), dir)
	app := copyExecutable(t, proctest.Build(t, goappPkg), dir)
	p := proctest.Start(t, hs, "--log-format", "json", "--user", "nobody", "--ready", "notify",
		"-l", "http=tcp://127.0.0.1:0", "--", app, "--notify")
	g, _ := ctltest.Gen(ctltest.WaitServing(p, 1, 10*time.Second), 1)
	pid := g.PID
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`NOTIFY_SOCKET=([^\x00]+)`).FindSubmatch(env)
	if m == nil {
		t.Fatalf("no NOTIFY_SOCKET in generation pid %d's environment", pid)
	}
	sock := string(m[1])
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil || st.Mode&0o777 != 0o600 || st.Uid != 65534 {
		t.Errorf("notify socket %s: %v, mode %#o, uid %d; want 0600 and uid 65534", sock, err, st.Mode&0o777, st.Uid)
	}
	out, err := asUser(t, &syscall.Credential{Uid: 65533, Gid: 65533}, "notifysend", sock).Output()
	if err != nil || !strings.Contains(string(out), "permission denied") {
		t.Errorf("uid 65533 sending to the generation's notify socket: %q %v, want permission denied", out, err)
	}
}

// TestHealthPortBoundByServer (item 3): a server that binds
// 127.0.0.1:{port} itself instead of serving the socket named health now
// finds the port taken by hotswap; the one line says so and what to do.
func TestHealthPortBoundByServer(t *testing.T) {
	_, err := exec.LookPath("python3")
	proctest.RequireCI(t, err == nil, "python3")
	hotswap := proctest.Build(t, hotswapPkg)
	cmd := exec.Command(hotswap, "--ready", "http://127.0.0.1:{port}/", "-l", "tcp://127.0.0.1:0",
		"--", "python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}")
	out, _ := cmd.CombinedOutput()
	line := lastOutputLine(out)
	re := regexp.MustCompile(`^hotswap: generation 1 \(pid \d+\) exited with status 1 before it was ready: it could not bind an address hotswap holds \(127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+\); let it take the inherited socket \(fds 3-4, LISTEN_FDS\) or add --intercept; nothing is serving$`)
	if cmd.ProcessState.ExitCode() != exitFailure || !re.MatchString(line) {
		t.Errorf("a server binding {port} itself: exit %d, last line %q", cmd.ProcessState.ExitCode(), line)
	}
}
