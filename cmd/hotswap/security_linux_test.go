package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
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

