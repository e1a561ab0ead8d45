package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

func TestMain(m *testing.M) {
	proctest.HelperMain(m, proctest.Helpers{"handoff": handoffHelper})
}

// app is hotswap running examples/goapp, whose version and extra flags
// come from two files read at each generation's start, the way a config
// change reaches a real server.
type app struct {
	t              *testing.T
	hs             *proctest.Proc
	addr           string
	verFile, flags string
	gen            int    // the generation expected to serve
	pool           bool   // a worker pool (workers_linux_test.go)
	workerFlags    string // a pool's goapp flags (startWorkers), which loadReloads keeps
}

// startApp runs hotswap with hsFlags around goapp with goappFlags.
func startApp(t *testing.T, hsFlags []string, goappFlags ...string) *app {
	t.Helper()
	return startAppOn(t, "127.0.0.1:0", hsFlags, goappFlags...)
}

// startAppOn is startApp listening on addr.
func startAppOn(t *testing.T, addr string, hsFlags []string, goappFlags ...string) *app {
	t.Helper()
	return startAppFlags(t, addr, "", hsFlags, goappFlags...)
}

// startAppFlags is startAppOn with flags, the first generation's content
// of the flags file (later versions bring their own with reload).
func startAppFlags(t *testing.T, addr, flags string, hsFlags []string, goappFlags ...string) *app {
	t.Helper()
	dir := t.TempDir()
	a := &app{t: t, verFile: filepath.Join(dir, "version"), flags: filepath.Join(dir, "flags"), gen: 1}
	a.write("v1", flags)
	return a.start(addr, proctest.Build(t, goappPkg), hsFlags, goappFlags...)
}

// start runs hotswap on addr around the goapp binary at goapp, whose
// version and flags each generation reads from a.verFile and a.flags.
func (a *app) start(addr, goapp string, hsFlags []string, goappFlags ...string) *app {
	t := a.t
	t.Helper()
	hotswap := proctest.Build(t, hotswapPkg)
	script := `bin=$0 v=$1 f=$2; shift 2; exec "$bin" --version "$(cat "$v")" $(cat "$f") "$@"`
	args := append([]string{"--log-format", "json", "-l", "http=tcp://" + addr}, hsFlags...)
	args = append(args, "--", "sh", "-c", script, goapp, a.verFile, a.flags)
	a.hs = proctest.Start(t, hotswap, append(args, goappFlags...)...)
	a.addr = a.waitServing(1, 10*time.Second).Listeners[0].Address
	return a
}

func (a *app) write(version, flags string) {
	a.t.Helper()
	// Each file is replaced whole: a generation starting meanwhile (a
	// crash's restart) reads the old content or the new, never a
	// truncated file.
	for _, f := range []struct{ path, content string }{{a.verFile, version}, {a.flags, flags}} {
		if err := os.WriteFile(f.path+".new", []byte(f.content), 0o644); err != nil {
			a.t.Fatal(err)
		}
		if err := os.Rename(f.path+".new", f.path); err != nil {
			a.t.Fatal(err)
		}
	}
}

// reload changes the version, sends SIGHUP and waits on hotswap's status
// until the reload to generation n is done: generation n serves, or one
// more reload failed.
func (a *app) reload(n int, version, flags string) reloaded {
	a.t.Helper()
	a.write(version, flags)
	st, ok := ctltest.Reload(a.hs, n, 30*time.Second, func() { a.hs.Signal(syscall.SIGHUP) })
	r := reloaded{Status: st, OK: ok}
	if !ok {
		r.Reason = ctltest.Reason(st, n)
	}
	return r
}

// reloaded is the outcome of a reload, as the status tells it once the
// reload is done.
type reloaded struct {
	supervisor.Status
	OK bool
	// Reason is why it failed: the status's last failure without the
	// "generation N (pid P)" it begins with when one started.
	Reason string
}

func (r reloaded) String() string {
	if r.OK {
		return fmt.Sprintf("reload succeeded: serving generation %d", r.Current)
	}
	return "reload failed: " + r.LastFailure
}

// get sends one request on a new connection and returns X-Version.
func get(t *testing.T, addr string) string {
	t.Helper()
	return proctest.Version(t, addr)
}

func pidOf(e proctest.Event) int { return e.Int("pid") }

// TestReloadUnderLoad is the product's promise: 30 reloads under
// continuous load, a new connection per request, zero failed requests,
// each reload answered by the new version and the old generation gone.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	for _, mode := range []string{"reuseport", "shared"} {
		t.Run(mode, func(t *testing.T) { reloadUnderLoad(t, mode) })
	}
}

func reloadUnderLoad(t *testing.T, mode string) {
	a := startApp(t, []string{"--mode", mode, "--ready", "200ms"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: 3 * time.Minute})
	const reloads = 30
	for n := 2; n <= reloads+1; n++ {
		version := fmt.Sprintf("v%d", n)
		a.write(version, "")
		ctltest.Replace(a.hs, n, 30*time.Second, func() { a.hs.Signal(syscall.SIGHUP) })
		if got := get(t, a.addr); got != version {
			t.Fatalf("after reload %d: answered by %q, want %q", n, got, version)
		}
	}
	res := run.Stop()
	t.Logf("load: %v; versions seen: %d", res, len(res.Versions))
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
	}
	if len(res.Versions) != reloads+1 {
		t.Errorf("load saw %d versions, want %d", len(res.Versions), reloads+1)
	}
	if res.OK < 1000 {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	a.hs.Signal(syscall.SIGTERM)
	if code := a.hs.Wait(30 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d after SIGTERM, want 0 (goapp drains and exits 0)", code)
	}
}

// TestNaiveRestartLoses runs the same load against the same app restarted
// the naive way (stop, then start on the same port): it must show failures,
// so the zero above means something.
func TestNaiveRestartLoses(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	goapp := proctest.Build(t, goappPkg)
	addr := "127.0.0.1:0"
	start := func(version string) (*exec.Cmd, string) {
		cmd := exec.Command(goapp, "--version", version, "--listen", addr)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var out string
		re := regexp.MustCompile(`serving http on (\S+)`)
		for !re.MatchString(out) {
			n, err := stderr.Read(buf)
			if err != nil {
				t.Fatalf("goapp %s: %v (%q)", version, err, out)
			}
			out += string(buf[:n])
		}
		go func() {
			b := make([]byte, 4096)
			for {
				if _, err := stderr.Read(b); err != nil {
					return
				}
			}
		}()
		return cmd, re.FindStringSubmatch(out)[1]
	}
	cmd, bound := start("v1")
	addr = bound
	run := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 16, Duration: time.Minute})
	for i := 2; i <= 11; i++ {
		time.Sleep(150 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		cmd, _ = start(fmt.Sprintf("v%d", i))
	}
	time.Sleep(150 * time.Millisecond)
	res := run.Stop()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	t.Logf("naive restart, 10 restarts: %v", res)
	if res.Failed == 0 {
		t.Errorf("naive stop-then-start lost nothing: the load cannot see failures")
	}
}

// TestReloadFailureKeepsOldServing: a new version that exits at start is
// rolled back with one clear line, while the old one serves with 0 failures.
func TestReloadFailureKeepsOldServing(t *testing.T) {
	a := startApp(t, []string{"--ready", "300ms"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	r := a.reload(2, "v2", "--exit-at-start 1")
	if r.OK {
		t.Fatalf("got %q, want reload failed", r)
	}
	line := waitLine(t, a.hs, "hotswap: reload failed")
	want := regexp.MustCompile(`^hotswap: reload failed: generation 2 \(pid \d+\) exited with status 1; still serving generation 1 \(pid \d+\)$`)
	if !want.MatchString(line) {
		t.Errorf("got %q, want a line matching %s", line, want)
	}
	if got := get(t, a.addr); got != "v1" {
		t.Errorf("after a failed reload: answered by %q, want v1", got)
	}
	// The next reload works.
	if r := a.reload(3, "v3", ""); !r.OK {
		t.Fatalf("reload after a failure: %v", r)
	}
	res := run.Stop()
	t.Logf("load: %v", res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
}

// waitLine waits for hotswap's one-line summary of an outcome on stderr:
// the line is the feature (what a user reads), so it is matched as text.
func waitLine(t *testing.T, p *proctest.Proc, prefix string) string {
	t.Helper()
	return p.WaitLine(prefix, 5*time.Second)
}

// TestCrashRestartWithBackoff: a generation that dies on its own is
// restarted with growing backoff, and clients queue on the open socket
// instead of being refused.
func TestCrashRestartWithBackoff(t *testing.T) {
	a := startApp(t, []string{"--ready", "50ms"}, "--crash-after", "150ms")
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 4, Duration: 20 * time.Second})
	ctltest.Wait(a.hs, 15*time.Second, "generation 4 started (3 restarts)", func(st supervisor.Status) bool { return st.Restarts >= 3 })
	res := run.Stop()
	// The status holds only the backoff of the next restart; the
	// sequence of them is in the log events.
	var backoffs []time.Duration
	for _, e := range a.hs.Events("restarting after backoff") {
		backoffs = append(backoffs, time.Duration(e.Int("backoff")))
	}
	if len(backoffs) < 3 || backoffs[0] != 100*time.Millisecond || backoffs[1] != 200*time.Millisecond || backoffs[2] != 400*time.Millisecond {
		t.Errorf("backoffs %v, want 100ms 200ms 400ms ...", backoffs)
	}
	t.Logf("load during crash loop: %v", res)
	if n := res.Errors["dial/ECONNREFUSED"]; n > 0 {
		t.Errorf("%d connections refused while restarting: the socket must stay open", n)
	}
}

// TestExitStatus: SIGTERM stops the child and hotswap exits with its status
// in shell convention.
func TestExitStatus(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	p := proctest.Start(t, hotswap, "--log-format", "json", "--ready", "50ms", "-l", "tcp://127.0.0.1:0", "--", "sleep", "60")
	ctltest.WaitServing(p, 1, 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit status %d, want %d (sleep killed by SIGTERM)", code, 128+int(syscall.SIGTERM))
	}
	p = proctest.Start(t, hotswap, "--log-format", "json", "--ready", "50ms", "-l", "tcp://127.0.0.1:0", "--", "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done")
	ctltest.WaitServing(p, 1, 10*time.Second)
	p.Signal(syscall.SIGINT)
	if code := p.Wait(10 * time.Second); code != 7 {
		t.Errorf("exit status %d, want 7", code)
	}
}

// TestSignalsForwarded: SIGUSR1, SIGUSR2 and SIGWINCH reach the current
// generation.
func TestSignalsForwarded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "signals")
	a := startApp(t, []string{"--ready", "100ms"}, "--report-signals", file)
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH} {
		a.hs.Signal(sig)
		time.Sleep(50 * time.Millisecond)
	}
	var got string
	for range 100 {
		b, _ := os.ReadFile(file)
		if got = string(b); strings.Count(got, "\n") >= 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{"SIGUSR1", "SIGUSR2", "SIGWINCH"} {
		if !strings.Contains(got, want) {
			t.Errorf("child saw %q, want it to include %s", got, want)
		}
	}
}

// TestBadInput: each mistake is one line on stderr and a non-zero exit.
func TestBadInput(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus", "--", "true"}, "unknown flag: --bogus"},
		{"missing --", []string{"-l", "tcp://127.0.0.1:0", "true"}, "missing -- before the command"},
		{"no command", []string{"-l", "tcp://127.0.0.1:0"}, "missing -- COMMAND"},
		{"bad url", []string{"-l", "htp://127.0.0.1:0", "--", "true"}, `unknown scheme "htp"`},
		{"bad port", []string{"-l", "tcp://127.0.0.1:70000", "--", "true"}, `port "70000"`},
		{"port in use", []string{"-l", "tcp://" + busy.Addr().String(), "--", "true"}, "address already in use"},
		{"command not found", []string{"-l", "tcp://127.0.0.1:0", "--", "./no-such-server"}, "command ./no-such-server: no such file or directory"},
		{"bad signal", []string{"--stop-signal", "BOGUS", "-l", "tcp://127.0.0.1:0", "--", "true"}, `signal "BOGUS": unknown name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(hotswap, tc.args...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("exit 0, want a failure; output %q", out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "hotswap: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("got %q, want one line with %q", out, tc.want)
			}
		})
	}
}

// TestMaxDraining: with one old generation still draining (it ignores its
// stop signal) and --max-draining 1, a further reload fails at once with
// the reason, and the serving generation is untouched.
func TestMaxDraining(t *testing.T) {
	a := startApp(t, []string{"--mode", "shared", "--ready", "100ms", "--max-draining", "1", "--drain-timeout", "4s"}, "--ignore-term")
	if r := a.reload(2, "v2", ""); !r.OK {
		t.Fatalf("first reload: %v", r)
	}
	r := a.reload(3, "v3", "")
	if r.OK {
		t.Fatalf("reload with a generation draining: %v, want reload failed", r)
	}
	line := waitLine(t, a.hs, "hotswap: reload failed")
	if !strings.Contains(line, "1 old generations are still draining (--max-draining 1); nothing was started; still serving generation 2 (pid") {
		t.Errorf("got %q", line)
	}
	if got := get(t, a.addr); got != "v2" && got != "v1" {
		t.Errorf("answered by %q, want v2 (or v1, still draining)", got)
	}
}

// TestOutputPrefix: with --output-prefix every line of a generation's
// output carries its number; without it the output passes untouched.
func TestOutputPrefix(t *testing.T) {
	a := startApp(t, []string{"--ready", "100ms", "--output-prefix", "[gen {gen}] "})
	if r := a.reload(2, "v2", ""); !r.OK {
		t.Fatalf("reload: %v", r)
	}
	a.waitGone(1, 10*time.Second)
	want := map[string]bool{"[gen 1] goapp v1 gen 1": false, "[gen 2] goapp v2 gen 2": false}
	for _, l := range a.hs.Lines() {
		for p := range want {
			if strings.HasPrefix(l, p) {
				want[p] = true
			}
		}
		if strings.HasPrefix(l, "goapp ") {
			t.Errorf("line without the prefix: %q", l)
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("no line starting %q", p)
		}
	}
}
