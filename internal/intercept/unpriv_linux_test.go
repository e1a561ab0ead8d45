package intercept

import (
	"bufio"
	"context"
	"fmt"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// supervisorMain is the supervisor side run by an unprivileged process: it
// owns a listener, starts python under the shim, serves its notifications
// and reports "addr childpid" on fd 3 once python has called listen().
func supervisorMain() int {
	if err := runSupervisor(); err != nil {
		fmt.Fprintln(os.Stderr, "supervisor:", err)
		return 1
	}
	return 0
}

func runSupervisor() error {
	ln, addr, err := rawListen()
	if err != nil {
		return err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "shim-sock"), os.NewFile(uintptr(fds[1]), "shim-sock-child")
	exe, _ := os.Executable()
	cmd := exec.Command(exe, python, "-m", "http.server", fmt.Sprint(addr.Port()), "--bind", "127.0.0.1")
	cmd.Env = append(os.Environ(), proctest.UseHelper("shim"))
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	theirs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	notify, err := Receive(ctx, ours)
	if err != nil {
		return err
	}
	listened := make(chan struct{}, 1)
	table := Listeners{{Network: "tcp", Addr: addr, File: ln, OnListen: func(int) error { listened <- struct{}{}; return nil }}}
	served := make(chan error, 1)
	go func() {
		st, err := Serve(context.Background(), notify, cmd.Process.Pid, table)
		if err == nil && st.Failed > 0 {
			err = fmt.Errorf("handling failed: %v", st.Errors)
		}
		served <- err
	}()
	select {
	case <-listened:
	case err := <-served:
		return fmt.Errorf("serve ended before listen: %v", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	report := os.NewFile(3, "report")
	fmt.Fprintf(report, "%s %d\n", addr, cmd.Process.Pid)
	report.Close()
	return cmd.Wait() // until the test kills this process
}

// TestUnprivilegedSupervisor runs the supervisor side and the child as
// uid 65534 with no capabilities.
func TestUnprivilegedSupervisor(t *testing.T) {
	requireTool(t, python)
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pr.Close()
	cmd := exec.Command(helperExe(t, true))
	cmd.Env = append(os.Environ(), proctest.UseHelper("supervisor"))
	cmd.Dir = webDir(t, "unpriv-supervisor-ok")
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stdout = logWriter(t)
	cmd.Stderr = cmd.Stdout
	must(t, cmd.Start())
	pw.Close()
	var pyPid int
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if pyPid > 0 {
			unix.Kill(pyPid, unix.SIGKILL) // Pdeathsig normally did it already
		}
	})
	pr.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no report from the unprivileged supervisor: %v", err)
	}
	var addrStr string
	if _, err := fmt.Sscanf(line, "%s %d", &addrStr, &pyPid); err != nil {
		t.Fatalf("parse report %q: %v", line, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	must(t, err)
	for _, want := range []string{"Uid:\t65534", "CapEff:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("supervisor status lacks %q", want)
		}
	}
	body, err := getRetry(t, netip.MustParseAddrPort(addrStr))
	if err != nil || body != "unpriv-supervisor-ok" {
		t.Fatalf("GET through the unprivileged supervisor's socket: %q, %v", body, err)
	}
}
