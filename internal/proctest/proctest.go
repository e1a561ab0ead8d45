// Package proctest holds helpers for tests that build and run hotswap's
// binaries as real processes. It is imported only by _test.go files.
package proctest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// Build compiles the main package pkg (an import path) once per test binary
// and returns the path of the binary; with -race when the test binary is a
// race build. Env entries (e.g. CGO_ENABLED=0) are passed to go build.
func Build(t testing.TB, pkg string, env ...string) string {
	t.Helper()
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
	if raceEnabled {
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
type Event map[string]any

// Msg returns the message of the event.
func (e Event) Msg() string { s, _ := e["@message"].(string); return s }

// Int returns the integer field k, or -1.
func (e Event) Int(k string) int {
	if f, ok := e[k].(float64); ok {
		return int(f)
	}
	return -1
}

// Str returns the field k as a string.
func (e Event) Str(k string) string {
	if v, ok := e[k]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// Proc is a running hotswap (or any process logging hclog JSON to stderr).
type Proc struct {
	t    testing.TB
	Cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex // guards the fields below
	events []Event
	lines  []string
	cond   *sync.Cond
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
	p := &Proc{t: t, done: make(chan struct{}), Cmd: cmd}
	p.cond = sync.NewCond(&p.mu)
	p.Cmd.Stdout = writerFunc(func(b []byte) { t.Logf("stdout: %s", strings.TrimRight(string(b), "\n")) })
	// A pipe of our own rather than StderrPipe: children that outlive
	// the process may hold it open, and Wait must not depend on them.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd.Stderr = w
	err = p.Cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	var reading sync.WaitGroup
	reading.Go(func() { p.read(r) })
	go func() {
		p.Cmd.Wait()
		p.mu.Lock()
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.Cmd.Process.Signal(syscall.SIGTERM) // a graceful stop ends its children too
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				p.Cmd.Process.Kill()
				<-p.done
			}
		}
		// Stop logging to t before the test ends; a straggler holding the
		// pipe would otherwise log after completion.
		r.SetReadDeadline(time.Now().Add(2 * time.Second))
		reading.Wait()
		p.failOnRepairs()
	})
	return p
}

func (p *Proc) read(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var e Event
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if json.Unmarshal([]byte(line), &e) == nil {
			p.events = append(p.events, e)
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// Lines returns every stderr line so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Events returns every event so far with message msg ("" for all).
func (p *Proc) Events(msg string) []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Event
	for _, e := range p.events {
		if msg == "" || e.Msg() == msg {
			out = append(out, e)
		}
	}
	return out
}

// WaitEvent waits up to d for an event with message msg that match accepts
// (nil accepts any) and returns it; it fails the test otherwise.
func (p *Proc) WaitEvent(d time.Duration, msg string, match func(Event) bool) Event {
	p.t.Helper()
	e, ok := p.waitEvent(d, msg, match)
	if !ok {
		p.t.Fatalf("no %q event within %s; output:\n%s", msg, d, strings.Join(p.Lines(), "\n"))
	}
	return e
}

func (p *Proc) waitEvent(d time.Duration, msg string, match func(Event) bool) (Event, bool) {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := 0
	for {
		for ; seen < len(p.events); seen++ {
			e := p.events[seen]
			if e.Msg() == msg && (match == nil || match(e)) {
				return e, true
			}
		}
		if time.Now().After(deadline) || p.exited() {
			return nil, false
		}
		p.cond.Wait()
	}
}

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Gen matches an event of generation n.
func Gen(n int) func(Event) bool { return func(e Event) bool { return e.Int("gen") == n } }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits up to d for the process to exit and returns its exit code
// (128+signal when killed by one).
func (p *Proc) Wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("process %d still running after %s", p.Cmd.Process.Pid, d)
	}
	ws := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

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

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }
