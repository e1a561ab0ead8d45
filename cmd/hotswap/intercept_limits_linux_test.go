package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// pythonArgv serves root/1 on host:port with the unmodified http.server.
func pythonArgv(host string, port int, root string) []string {
	return []string{pythonBin, "-m", "http.server", fmt.Sprint(port), "--bind", host, "--directory", filepath.Join(root, "1")}
}

// TestInterceptUnmatchedBindLeftAlone: a bind that matches no supervised
// address runs unchanged; the child serves on its own socket, and
// hotswap's socket, which nobody accepts from, answers nothing.
func TestInterceptUnmatchedBindLeftAlone(t *testing.T) {
	requireIntercept(t)
	requireTarget(t, icTargets[0])
	hotswap := proctest.Build(t, hotswapPkg)
	root := servedRoot(t)
	tests := []struct {
		name   string
		listen func(port int) string // hotswap's address
		bind   string                // the child's host
	}{
		{"other port", func(int) string { return "127.0.0.1:0" }, "127.0.0.1"},
		{"same port, other address", func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }, "127.0.0.2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := icFreePort(t)
			own := net.JoinHostPort(tc.bind, fmt.Sprint(port))
			args := []string{"--log-format", "json", "--intercept", "--ready", "http://" + own + "/", "-l", "tcp://" + tc.listen(port), "--"}
			hs := proctest.Start(t, hotswap, append(args, pythonArgv(tc.bind, port, root)...)...)
			ours := ctltest.WaitServing(hs, 1, 15*time.Second).Listeners[0].Address
			if got, err := getBody(t, own); err != nil || got != "gen 1\n" {
				t.Fatalf("child's own socket %s: %q, %v; want gen 1", own, got, err)
			}
			if got, err := answered(ours, 300*time.Millisecond); err == nil {
				t.Errorf("hotswap's socket %s answered %q: the child's bind to %s was swapped", ours, got, own)
			}
		})
	}
}

// answered sends a request to addr and returns the answer, or an error if
// none comes within d.
func answered(addr string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return "", err
	}
	b := make([]byte, 512)
	n, err := c.Read(b)
	return string(b[:n]), err
}

// TestInterceptChildDiesWithHotswap: generations run with Pdeathsig
// SIGKILL, so when hotswap is killed the server goes too (instead of
// living on with every later bind failing with ENOSYS) and the port is
// free for a restarted hotswap. (The control socket is in the test's
// directory: a killed hotswap cannot remove it.)
func TestInterceptChildDiesWithHotswap(t *testing.T) {
	requireIntercept(t)
	requireTarget(t, icTargets[0])
	hotswap := proctest.Build(t, hotswapPkg)
	root := servedRoot(t)
	port := icFreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctl := filepath.Join(t.TempDir(), "control.sock")
	hs := proctest.Start(t, hotswap, append([]string{"--log-format", "json", "--control", ctl, "--intercept", "--ready", "300ms", "-l", "tcp://" + addr, "--"},
		pythonArgv("127.0.0.1", port, root)...)...)
	child := ctltest.WaitStarted(hs, 1, 10*time.Second).PID
	// Runs before proctest's cleanup: an orphaned child would hold
	// hotswap's stdout and keep its Wait from returning.
	t.Cleanup(func() {
		if proctest.Alive(child) {
			syscall.Kill(child, syscall.SIGKILL)
		}
	})
	ctltest.WaitServing(hs, 1, 10*time.Second)
	if got, err := getBody(t, addr); err != nil || got != "gen 1\n" {
		t.Fatalf("GET %s: %q, %v; want gen 1", addr, got, err)
	}
	hs.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for proctest.Alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child pid %d still running 5s after hotswap was killed", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hs.Wait(10 * time.Second)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("after hotswap and its child died, %s cannot be bound again: %v", addr, err)
	}
	ln.Close()
}

// TestInterceptFlags: --intercept is in the help, and refused, on one
// line, where it cannot work.
func TestInterceptFlags(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	out, err := exec.Command(hotswap, "--help").Output()
	if err != nil || !strings.Contains(string(out), "--intercept") {
		t.Errorf("--help: %v; want --intercept in %s", err, out)
	}
	requireIntercept(t)
	sock := filepath.Join(t.TempDir(), "app.sock")
	out, err = exec.Command(hotswap, "--intercept", "-l", "unix://"+sock, "--", "true").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err == nil || len(lines) != 1 || !strings.Contains(lines[0], "only tcp and udp addresses can be intercepted") {
		t.Errorf("--intercept with a unix listener: %v, %q; want one line refusing it", err, out)
	}
}

// TestInterceptNested: a child that is itself hotswap --intercept cannot
// install its filter under ours; its shim says so and exits 126, and so
// does each hotswap whose first generation could not be run.
func TestInterceptNested(t *testing.T) {
	requireIntercept(t)
	hotswap := proctest.Build(t, hotswapPkg)
	hs := proctest.Start(t, hotswap, "--log-format", "json", "--intercept", "--ready", "5s", "-l", "tcp://127.0.0.1:0", "--",
		hotswap, "--intercept", "--ready", "5s", "-l", "tcp://127.0.0.1:0", "--", "sleep", "10")
	code := hs.Wait(15 * time.Second)
	line := ""
	for _, l := range hs.Lines() {
		if strings.HasPrefix(l, "hotswap: prepare sleep: intercept binds:") {
			line = l
		}
	}
	if !strings.Contains(line, "cannot be nested") {
		t.Errorf("got %q, want a line saying the filter cannot be nested; output:\n%s", line, strings.Join(hs.Lines(), "\n"))
	}
	if code != fdpass.ExitCannotExec {
		t.Errorf("outer hotswap exited %d, want %d (its first generation, the inner hotswap, exited so: its shim could not run sleep)", code, fdpass.ExitCannotExec)
	}
	found := false
	for _, l := range hs.Lines() {
		found = found || strings.Contains(l, "exited with status 126")
	}
	if !found {
		t.Errorf("no line says the inner generation exited with status 126:\n%s", strings.Join(hs.Lines(), "\n"))
	}
}
