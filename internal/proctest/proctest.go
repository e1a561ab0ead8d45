// Package proctest holds helpers for tests that build and run hotswap's
// binaries as real processes. It is imported only by _test.go files.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proc"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// HotswapPkg is hotswap's own main package.
const HotswapPkg = "github.com/hotswap-dev/hotswap/cmd/hotswap"

// Build compiles the main package pkg (an import path) once per test binary
// and returns the path of the binary; with -race when the test binary is a
// race build (unless env has CGO_ENABLED=0: a static binary, for a
// container image, cannot be one). Env entries (e.g. CGO_ENABLED=0) are passed to go build.
// hotswap itself is built as make build builds it, with CGO_ENABLED=0,
// except in a race build (-race needs cgo).
func Build(t testing.TB, pkg string, env ...string) string {
	t.Helper()
	if pkg == HotswapPkg && !raceEnabled && !slices.Contains(env, "CGO_ENABLED=0") {
		env = append(env, "CGO_ENABLED=0")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + " " + strings.Join(env, " ")
	if p, ok := built[key]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "hotswap-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, fmt.Sprintf("%s-%d", filepath.Base(pkg), len(built)))
	args := []string{"build", "-o", out}
	if raceEnabled && !slices.Contains(env, "CGO_ENABLED=0") { // -race needs cgo
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[key] = out
	return out
}

// Cleanup removes the binaries Build made; call it from TestMain.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Event is one JSON log line of hotswap.
type Event = proc.Event

// Proc is a running hotswap (or any process logging hclog JSON to stderr),
// on the process core of internal/proc.
type Proc struct {
	t    testing.TB
	Cmd  *exec.Cmd
	core *proc.Proc
}

// Start runs bin with args, parsing its stderr as JSON log lines (others
// are kept as text) and logging them to t. The process is SIGKILLed at the
// end of the test if still running.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, exec.Command(bin, args...))
}

// StartCmd is [Start] for a prepared command (environment, extra files);
// it sets the command's stdout and stderr.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	cmd.Stdout = writerFunc(func(b []byte) { t.Logf("stdout: %s", strings.TrimRight(string(b), "\n")) })
	core, err := proc.Start(cmd, proc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{t: t, Cmd: cmd, core: core}
	t.Cleanup(func() {
		// A graceful stop ends its children too.
		core.Stop(syscall.SIGTERM, 15*time.Second)
		// Stop reading before the test ends; a straggler holding the
		// pipe would otherwise be read after completion.
		core.StopReading(2 * time.Second)
		p.failOnRepairs()
	})
	return p
}

// Lines returns every stderr line so far.
func (p *Proc) Lines() []string {
	var out []string
	for _, l := range p.core.Lines() {
		out = append(out, l.Text)
	}
	return out
}

// Events returns every event so far with message msg ("" for all).
func (p *Proc) Events(msg string) []Event {
	var out []Event
	for _, l := range p.core.Lines() {
		if l.Event != nil && (msg == "" || l.Event.Msg() == msg) {
			out = append(out, l.Event)
		}
	}
	return out
}

// WaitEvent waits up to d for an event with message msg that match accepts
// (nil accepts any) and returns it; it fails the test otherwise.
func (p *Proc) WaitEvent(d time.Duration, msg string, match func(Event) bool) Event {
	p.t.Helper()
	l, err := p.core.WaitEvent(d, 0, msg, match)
	if err != nil {
		p.t.Fatalf("no %q event within %s (%v); output:\n%s", msg, d, err, strings.Join(p.Lines(), "\n"))
	}
	return l.Event
}

// Gen matches an event of generation n.
func Gen(n int) func(Event) bool { return func(e Event) bool { return e.Int("gen") == n } }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.core.Done():
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.core.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits up to d for the process to exit and returns its exit code
// (128+signal when killed by one).
func (p *Proc) Wait(d time.Duration) int {
	p.t.Helper()
	if !p.core.Wait(d) {
		p.t.Fatalf("process %d still running after %s", p.Cmd.Process.Pid, d)
	}
	return p.core.ExitCode()
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool { return proc.Alive(pid) }

// RequireCI fails (under CI=true) or skips the test when a component is
// missing: a test that needs it never skips silently in CI.
func RequireCI(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing %s (required under CI=true; make test installs it)", what)
	}
	t.Skipf("missing %s", what)
}

// IsRoot reports whether the test runs as root.
func IsRoot() bool { return os.Geteuid() == 0 }

// pidnsEnv marks the copy of a test binary that InPidNamespace runs.
const (
	pidnsEnv   = "HOTSWAP_TEST_IN_PIDNS"
	mountnsEnv = "HOTSWAP_TEST_IN_MOUNTNS"
)

// InPidNamespace reports whether the test runs as pid 1 of a pid namespace
// of its own under the host's /proc, as hotswap does under `unshare --pid
// --fork` without --mount-proc. When it does not, it runs the test (t's
// name, alone) there, in a copy of the test binary, fails t if that fails,
// and returns false: the caller returns too.
func InPidNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(pidnsEnv) != "" {
		if os.Getpid() != 1 {
			t.Fatalf("pid %d, want 1 in the new pid namespace", os.Getpid())
		}
		return true
	}
	inNamespace(t, pidnsEnv, "--pid", "--fork", "--kill-child")
	return false
}

// InMountNamespace reports whether the test runs in a mount namespace of
// its own (private propagation), where it may mount over system files
// without the host seeing it. When it does not, it runs the test there
// as InPidNamespace does, and returns false.
func InMountNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(mountnsEnv) != "" {
		return true
	}
	inNamespace(t, mountnsEnv, "--mount", "--propagation", "private")
	return false
}

// inNamespace runs t alone in a copy of the test binary under `unshare
// flags...` with env set, and fails t if that fails.
func inNamespace(t *testing.T, env string, flags ...string) {
	t.Helper()
	RequireCI(t, IsRoot(), "root (for unshare "+flags[0]+")")
	_, err := exec.LookPath("unshare")
	RequireCI(t, err == nil, "unshare (util-linux)")
	args := append(flags, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a %s namespace: %v\n%s", strings.TrimPrefix(flags[0], "--"), err, out)
	}
	t.Logf("%s", out)
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

// Command returns the path of the program name from the Debian package
// pkg, found in PATH; RequireCI decides what its absence means.
func Command(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	RequireCI(t, err == nil, name+" (Debian package "+pkg+"; scripts/deps.sh installs it)")
	return path
}

// T returns the test p belongs to.
func (p *Proc) T() testing.TB { return p.t }
