//go:build linux && (amd64 || arm64)

package supervisor

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// TestStartDirect: a command exec'd without a shim finds LISTEN_PID set to
// its own pid (the first environment entry, NUL-padded in place), runs
// untraced, and is the process hotswap started: no second exec.
func TestStartDirect(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `printf '%s %s %s\n' "$LISTEN_PID" "$$" "$(grep TracerPid /proc/$$/status | tr -d ' \t')"; tr '\0' '\n' </proc/$$/environ | head -1`)
	cmd.Env = []string{listenPIDSlot, "PATH=/usr/bin:/bin"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := startDirect(cmd); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{strconv.Itoa(pid) + " " + strconv.Itoa(pid) + " TracerPid:0", "LISTEN_PID=" + strconv.Itoa(pid)}
	if len(lines) != 2 || lines[0] != want[0] || lines[1] != want[1] {
		t.Errorf("child printed %q, want %q", lines, want)
	}
}

// TestStartDirectRefused: where PTRACE_TRACEME is refused (a seccomp
// filter here; ptrace_scope 3, an LSM or hotswap being traced elsewhere),
// startDirect says so with errNoDirect and leaves nothing running.
func TestStartDirectRefused(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		// The filter stays on this thread, which exits with the
		// goroutine (never unlocked).
		runtime.LockOSThread()
		if err := proctest.DenyPtrace(); err != nil {
			done <- err
			return
		}
		cmd := exec.Command("/bin/true")
		cmd.Env = []string{listenPIDSlot}
		err := startDirect(cmd)
		if err == nil {
			cmd.Wait()
			err = errors.New("started")
		}
		done <- err
	}()
	if err := <-done; !errors.Is(err, errNoDirect) || !errors.Is(err, errNoTrace) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("startDirect with ptrace denied: %v, want errNoDirect, errNoTrace and EPERM", err)
	}
}

// TestStartDirectExecError: an exec that fails for the program's own sake
// (not an executable format, here) is retried through the shim, which
// reports it as it always has, without giving up on direct starts.
func TestStartDirectExecError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bad)
	cmd.Env = []string{listenPIDSlot}
	err := startDirect(cmd)
	if !errors.Is(err, errNoDirect) || errors.Is(err, errNoTrace) || !errors.Is(err, syscall.ENOEXEC) {
		t.Fatalf("startDirect of a non-executable format: %v, want errNoDirect and ENOEXEC without errNoTrace", err)
	}
}

// TestDirectExec: setuid and setgid executables start through a shim, since
// a traced exec would run them without their privileges; so does every
// command with --intercept or --user.
func TestDirectExec(t *testing.T) {
	self, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain, setuid, setgid := filepath.Join(dir, "plain"), filepath.Join(dir, "setuid"), filepath.Join(dir, "setgid")
	for p, mode := range map[string]os.FileMode{plain: 0o755, setuid: 0o755 | os.ModeSetuid, setgid: 0o755 | os.ModeSetgid} {
		if err := os.WriteFile(p, self, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	s := &Supervisor{}
	for p, want := range map[string]bool{plain: true, setuid: false, setgid: false, dir: false} {
		if got := s.directExec(p); got != want {
			t.Errorf("directExec(%s) = %v, want %v", filepath.Base(p), got, want)
		}
	}
	s.cfg.Intercept = true
	if s.directExec(plain) {
		t.Error("--intercept: want a shim")
	}
	s = &Supervisor{noDirect: true}
	if s.directExec(plain) {
		t.Error("after a refused start: want a shim")
	}
}
