package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// ctl runs `hotswap ARGS...` as a client and returns its exit status,
// stdout and stderr.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return ctlCmd(t, exec.Command(proctest.Build(t, hotswapPkg), args...))
}

func ctlCmd(t *testing.T, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish in 60s", cmd.Args)
	}
	t.Logf("%s: exit %d; stdout %q; stderr %q", strings.Join(cmd.Args[1:], " "), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// statusOf runs `hotswap status --json`.
func statusOf(t *testing.T, sock string) statusJSON {
	t.Helper()
	code, out, _ := ctl(t, "status", "--json", "--control", sock)
	if code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	st := statusJSON{Status: &supervisor.Status{}}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape metrics: %s\n%s", resp.Status, b)
	}
	return string(b)
}

var reloadOK = regexp.MustCompile(`^hotswap: reload succeeded: serving generation (\d+) \(pid (\d+)\)\n$`)

// TestControlPlane drives a running hotswap through its control socket:
// reload waits for and reports both outcomes, concurrent callers all learn
// theirs, status matches the processes, signal reaches the generation,
// metrics count the reloads, and stop ends hotswap.
func TestControlPlane(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "hotswap.sock")
	signals := filepath.Join(dir, "signals")
	a := startApp(t, []string{"--ready", "300ms", "--control", sock, "--metrics", "127.0.0.1:0"}, "--report-signals", signals)
	// The status does not list --metrics: its port 0 is resolved only in
	// the log.
	metrics := a.hs.WaitEvent(10*time.Second, "metrics listening", nil).Str("address")

	a.write("v2", "")
	code, out, _ := ctl(t, "reload", "--control", sock)
	m := reloadOK.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != "2" {
		t.Fatalf("reload: exit %d, %q; want 0 and generation 2", code, out)
	}
	st := statusOf(t, sock) // before generation 1 is gone: it may be listed draining
	checkStatus(t, st, 2, a.addr)
	// In shared mode generation 1 accepts until its stop signal lands.
	a.waitGone(1, 10*time.Second)
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after reload: answered by %q, want v2", got)
	}
	st = statusOf(t, sock)
	checkStatus(t, st, 2, a.addr)
	if pid := st.Generations[len(st.Generations)-1].PID; m[2] != itoa(pid) {
		t.Errorf("reload said pid %s, status says %d", m[2], pid)
	}

	a.write("v3", "--exit-at-start 1")
	code, _, errOut := ctl(t, "reload", "--control", sock)
	want := regexp.MustCompile(`^hotswap: reload failed: generation 3 \(pid \d+\) exited with status 1; still serving generation 2 \(pid ` + itoa(st.Generations[len(st.Generations)-1].PID) + `\)\n$`)
	if code != exitFailure || !want.MatchString(errOut) {
		t.Errorf("failed reload: exit %d, %q; want %d and a line matching %s", code, errOut, exitFailure, want)
	}
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after a failed reload: answered by %q, want v2", got)
	}

	// Three callers at once: each learns an outcome that covers its request.
	a.write("v4", "")
	var wg sync.WaitGroup
	codes := make([]int, 3)
	outs := make([]string, 3)
	for i := range codes {
		wg.Go(func() { codes[i], outs[i], _ = ctl(t, "reload", "--control", sock) })
	}
	wg.Wait()
	for i := range codes {
		if codes[i] != 0 || !reloadOK.MatchString(outs[i]) {
			t.Errorf("concurrent reload %d: exit %d, %q", i, codes[i], outs[i])
		}
	}
	st = statusOf(t, sock)
	checkStatus(t, st, st.Current, a.addr)
	if st.Current < 4 || st.Reloads.OK < 2 || st.Reloads.Failed != 1 || !strings.Contains(st.LastFailure, "exited with status 1") {
		t.Errorf("status after the reloads: %+v", st.Status)
	}

	code, out, _ = ctl(t, "status", "--control", sock)
	for _, s := range []string{"LISTENER", a.addr, "reuseport", "GEN", "ready", "1 failed"} {
		if code != 0 || !strings.Contains(out, s) {
			t.Errorf("status: exit %d, output lacks %q:\n%s", code, s, out)
		}
	}

	body := scrape(t, metrics)
	for _, s := range []string{
		`hotswap_reloads_total{outcome="ok"} ` + itoa(st.Reloads.OK),
		`hotswap_reloads_total{outcome="failed"} 1`,
		`hotswap_reload_duration_seconds_count{outcome="failed"} 1`,
		`hotswap_generations{state="ready"} 1`,
		`hotswap_listener_queue_length{address="` + a.addr + `",listener="http"} 0`,
		`hotswap_up 1`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %q", s)
		}
	}

	if code, _, _ := ctl(t, "signal", "USR1", "--control", sock); code != 0 {
		t.Errorf("signal USR1: exit %d", code)
	}
	waitFile(t, signals, "SIGUSR1")

	code, out, _ = ctl(t, "stop", "--control", sock)
	if code != 0 || out != "hotswap: stopped\n" {
		t.Errorf("stop: exit %d, %q", code, out)
	}
	if code := a.hs.Wait(10 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d after stop, want 0", code)
	}
	for _, g := range st.Generations {
		if proctest.Alive(g.PID) {
			t.Errorf("generation %d (pid %d) alive after stop", g.ID, g.PID)
		}
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket after stop: %v", err)
	}
	if code, _, _ := ctl(t, "status", "--control", sock); code != exitUnreachable {
		t.Errorf("status of a stopped hotswap: exit %d, want %d", code, exitUnreachable)
	}
}

// checkStatus: the current generation is ready, every listed pid lives,
// the listener is the one the app serves on.
func checkStatus(t *testing.T, st statusJSON, current int, addr string) {
	t.Helper()
	if st.Current != current || st.UptimeSeconds <= 0 || st.PID == 0 {
		t.Errorf("status: current %d, uptime %v, pid %d; want current %d", st.Current, st.UptimeSeconds, st.PID, current)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Address != addr || st.Listeners[0].Name != "http" {
		t.Errorf("status listeners %+v, want http on %s", st.Listeners, addr)
	}
	var sawCurrent bool
	for _, g := range st.Generations {
		// A draining generation may have exited a moment before the
		// supervisor reaped it; every other listed pid must be running.
		if !proctest.Alive(g.PID) && g.State != supervisor.StateDraining {
			t.Errorf("status lists generation %d (%s) with pid %d, which is not running", g.ID, g.State, g.PID)
		}
		switch {
		case g.ID == current:
			sawCurrent = true
			if g.State != supervisor.StateReady || g.ReadyAfter <= 0 {
				t.Errorf("current generation %+v, want ready", g)
			}
		case g.ID < current && g.State != supervisor.StateDraining:
			t.Errorf("old generation %+v, want draining", g)
		}
	}
	if !sawCurrent {
		t.Errorf("status lacks the current generation %d: %+v", current, st.Generations)
	}
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	for range 500 {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s never contained %q", path, want)
}

// TestControlRefusesOtherUsers: the socket is 0600, and a peer of another
// uid that gets through (here: the mode is widened) is refused by its
// SO_PEERCRED credentials and logged; garbage does not hurt the next caller.
func TestControlRefusesOtherUsers(t *testing.T) {
	proctest.RequireCI(t, proctest.IsRoot(), "root (to run a client as uid 65534)")
	dir := t.TempDir()
	sock := filepath.Join(dir, "hotswap.sock")
	a := startApp(t, []string{"--ready", "100ms", "--control", sock})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	// A copy of hotswap that uid 65534 may run, in directories it may enter.
	bin := filepath.Join(dir, "hotswap")
	b, err := os.ReadFile(proctest.Build(t, hotswapPkg))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nobody := func() *exec.Cmd {
		cmd := exec.Command(bin, "status", "--control", sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd
	}
	code, _, errOut := ctlCmd(t, nobody())
	if code != exitUnreachable || !strings.Contains(errOut, "permission denied") {
		t.Errorf("uid 65534 on the 0600 socket: exit %d, %q; want %d, permission denied", code, errOut, exitUnreachable)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = ctlCmd(t, nobody())
	if code != exitFailure || !strings.Contains(errOut, "permission denied: uid 65534") {
		t.Errorf("uid 65534 past the file mode: exit %d, %q; want %d, refused by uid", code, errOut, exitFailure)
	}
	// The warning, naming the refused uid, is the feature.
	a.hs.WaitEvent(5*time.Second, "control connection refused", func(e proctest.Event) bool { return e.Int("uid") == 65534 })

	for _, g := range []string{"garbage\n", strings.Repeat("{", 10000), `{"v":1,"op":"sta`, "\x00\x01\x02"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(g))
		c.Close()
	}
	if st := statusOf(t, sock); st.Current != 1 || len(st.Generations) != 1 {
		t.Errorf("status after garbage: %+v", st.Status)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
