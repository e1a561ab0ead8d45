package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/healthgate"
	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// TestReadinessGateUnderLoad: the gate is a probe of a port only the new
// generation serves ({port}). Under load: a version that exits at start
// and one whose health check fails are rolled back (the second stopped
// gracefully after --ready-timeout), one that becomes ready late but in
// time is switched to; each outcome is reported, no request fails.
func TestReadinessGateUnderLoad(t *testing.T) {
	a := startApp(t, []string{"--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "2s"},
		"--health-listen", "127.0.0.1:{port}")
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(100 * time.Millisecond)

	r := a.reload(2, "v2", "--exit-at-start 1")
	if r.OK || r.Reason != "exited with status 1" {
		t.Errorf("exits at start: %s (%s), want reload failed (exited with status 1)", r, r.Reason)
	}
	r = a.reload(3, "v3", "--health-status 500")
	if r.OK || !regexp.MustCompile(`^not ready after 2s: GET http://127.0.0.1:\d+/healthz: 500 Internal Server Error$`).MatchString(r.Reason) {
		t.Errorf("never ready: %s (%s), want reload failed, not ready after 2s with the 500", r, r.Reason)
	}
	a.waitGone(3, 10*time.Second)
	// How a reaped generation exited is told only in the log.
	if x := a.hs.WaitEvent(5*time.Second, "generation exited", proctest.Gen(3)); x.Str("status") != "status 0" {
		t.Errorf("the unready generation %s, want a graceful stop (status 0)", x.Str("status"))
	}
	r = a.reload(4, "v4", "--start-delay 1s")
	if !r.OK {
		t.Errorf("ready late: %s (%s), want reload succeeded", r, r.Reason)
	}
	if g, _ := ctltest.Gen(r.Status, 4); g.ReadyAfter < time.Second {
		t.Errorf("generation 4 ready after %v, before its 1s start delay: the gate did not wait", g.ReadyAfter)
	}
	a.waitGone(1, 10*time.Second)
	res := run.Stop()
	t.Logf("load: %v; versions %v", res, res.Versions)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	if got := get(t, a.addr); got != "v4" {
		t.Errorf("answered by %q, want v4", got)
	}
}

// TestReadinessNotify: --ready notify takes READY=1 from the generation's
// own notify socket; a version that never sends it is rolled back.
func TestReadinessNotify(t *testing.T) {
	a := startAppFlags(t, "127.0.0.1:0", "--notify", []string{"--ready", "notify", "--ready-timeout", "2s"})
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	if r := a.reload(2, "v2", "--notify"); !r.OK {
		t.Errorf("a version that sends READY=1: %v", r)
	}
	if r := a.reload(3, "v3", ""); r.OK {
		t.Errorf("a version that never sends READY=1: %s, want reload failed", r)
	}
	res := run.Stop()
	t.Logf("load: %v", res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
}

// TestFirstGenerationNotReady: hotswap reports itself up only once the
// first generation is ready, and exits non-zero with one line if it never
// is.
func TestFirstGenerationNotReady(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	cmd := exec.Command(hotswap, "--ready", "http://127.0.0.1:{port}/healthz", "--ready-timeout", "1s",
		"-l", "http=tcp://127.0.0.1:0", "--control", "none", "--log-level", "error",
		"--", goapp, "--health-listen", "127.0.0.1:{port}", "--health-status", "503")
	out, err := cmd.CombinedOutput()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(l, "hotswap") {
			lines = append(lines, l)
		}
	}
	want := regexp.MustCompile(`^hotswap: generation 1 \(pid \d+\) not ready after 1s.*: 503 Service Unavailable; nothing is serving$`)
	if err == nil || len(lines) != 1 || !want.MatchString(lines[0]) {
		t.Errorf("exit %v, hotswap said %q; want a failure and one line matching %s", err, lines, want)
	}
}

// TestNotifiesServiceManager: under a service manager (NOTIFY_SOCKET set
// for hotswap itself), hotswap sends READY=1 once the first generation is
// ready, RELOADING=1 then READY=1 around a reload, and STOPPING=1.
func TestNotifiesServiceManager(t *testing.T) {
	ns, err := healthgate.ListenNotify(filepath.Join(t.TempDir(), "notify"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var mu sync.Mutex
	var got []string
	ns.OnMessage(func(m healthgate.Message) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m.Err != nil:
			got = append(got, "error: "+m.Err.Error())
		case m.Ready:
			got = append(got, "READY")
		case m.Reloading:
			got = append(got, "RELOADING")
		case m.Stopping:
			got = append(got, "STOPPING")
		}
	})
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	cmd := exec.Command(hotswap, "--log-format", "json", "--ready", "100ms", "-l", "http=tcp://127.0.0.1:0", "--", goapp)
	cmd.Env = append(cmd.Environ(), "NOTIFY_SOCKET="+ns.Path())
	p := proctest.StartCmd(t, cmd)
	if err := ns.Attach(p.Cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	ctltest.WaitServing(p, 1, 10*time.Second)
	if st, ok := ctltest.Reload(p, 2, 10*time.Second, func() { p.Signal(syscall.SIGHUP) }); !ok {
		t.Fatalf("reload: %s", st.LastFailure)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(30 * time.Second)
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"READY", "RELOADING", "READY", "STOPPING"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("service manager received %v, want %v", got, want)
	}
}
