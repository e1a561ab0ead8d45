package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// The user's one line for each mistake, asserted whole: what failed, on
// what, why, and the fix where hotswap knows it. The lines and hints are
// the feature, so they are read from hotswap's output. A wait for state
// before one asks the status; where hotswap exits or is killed first the
// log is the only record left (the pid of a generation that failed, the
// crash's hint), and those tests run with --control none.

// oneLine runs hotswap with args and returns its exit status and its only
// line of output; it fails the test when there is not exactly one.
func oneLine(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(proctest.Build(t, hotswapPkg), args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("hotswap %s: %d lines, want one:\n%s", strings.Join(args, " "), len(lines), out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, lines[0]
}

func TestListenErrorsInUserTerms(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	comm, _ := os.ReadFile("/proc/self/comm")
	inUse := fmt.Sprintf("hotswap: listen tcp://%s: address already in use, by pid %d (%s); this hotswap started nothing",
		busy.Addr(), os.Getpid(), strings.TrimSpace(string(comm)))
	for _, mode := range []string{"reuseport", "shared"} {
		t.Run(mode, func(t *testing.T) {
			for _, tc := range []struct{ addr, want string }{
				{busy.Addr().String(), inUse},
				{"bad..host:8080", `hotswap: listen tcp://bad..host:8080: cannot resolve host "bad..host": no such host; this hotswap started nothing`},
				{"192.0.2.1:8080", "hotswap: listen tcp://192.0.2.1:8080: 192.0.2.1 is not an address of this machine; this hotswap started nothing"},
			} {
				code, line := oneLine(t, "--mode", mode, "--control", "none", "-l", "tcp://"+tc.addr, "--", "true")
				if code != exitFailure || line != tc.want {
					t.Errorf("exit %d, %q\nwant exit %d, %q", code, line, exitFailure, tc.want)
				}
			}
		})
	}
}

// TestFlagErrorsInUserTerms: mistakes in other flags name the flag and
// the cause, not the package or the temporary file behind them.
func TestFlagErrorsInUserTerms(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--ready", "htp://x"}, exitUsage, `hotswap: --ready "htp://x": unknown scheme "htp"`},
		{[]string{"--user", "no-such-user-xyz"}, exitUsage, "hotswap: --user no-such-user-xyz: no such user"},
		{[]string{"--pidfile", "/nonexistent/dir/hotswap.pid"}, exitFailure, "hotswap: --pidfile /nonexistent/dir/hotswap.pid: directory /nonexistent/dir: no such file or directory; this hotswap changed nothing"},
		{[]string{"--control", "/nonexistent/dir/hotswap.sock"}, exitFailure, "hotswap: --control /nonexistent/dir/hotswap.sock: directory /nonexistent/dir: no such file or directory; this hotswap changed nothing"},
		{[]string{"--control", "none", "--metrics", "127.0.0.1:99999"}, exitFailure, "hotswap: --metrics 127.0.0.1:99999: address 99999: invalid port; nothing is serving"},
	} {
		args := append(append([]string{"--log-level", "error"}, tc.args...), "-l", "tcp://127.0.0.1:0", "--", "sleep", "5")
		code, line := oneLine(t, args...)
		if code != tc.code || line != tc.want {
			t.Errorf("%v: exit %d, %q\nwant exit %d, %q", tc.args, code, line, tc.code, tc.want)
		}
	}
}

// TestCommandErrorsExitAsDocumented: a command that cannot be run is one
// line before anything starts, with a shell's status: 127 not found, 126
// found but not runnable.
func TestCommandErrorsExitAsDocumented(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	text := write("notes.txt", "hello\n", 0o755)
	elfish := write("broken", "\x7fELF\x02\x01\x01", 0o755)
	interp := write("script", "#!/no/such/interpreter\n", 0o755)
	plain := write("plain", "#!/bin/sh\n", 0o644)
	for _, tc := range []struct {
		cmd  string
		code int
		want string
	}{
		{text, 126, "command " + text + ": not a program: neither an ELF executable nor a script with a #! line"},
		{elfish, 126, "command " + elfish + ": not a program: a truncated or broken ELF file"},
		{interp, 126, "command " + interp + ": its #! interpreter /no/such/interpreter: no such file or directory"},
		{plain, 126, "command " + plain + ": permission denied"},
		{dir, 126, "command " + dir + ": is a directory"},
		{filepath.Join(dir, "missing"), 127, "command " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{"no-such-server-xyz", 127, "command no-such-server-xyz: not found in PATH"},
	} {
		code, line := oneLine(t, "-l", "tcp://127.0.0.1:0", "--", tc.cmd)
		if code != tc.code || line != "hotswap: "+tc.want {
			t.Errorf("exit %d, %q\nwant exit %d, %q", code, line, tc.code, "hotswap: "+tc.want)
		}
	}
}

// nodeBinary is Node.js from the machine image or Debian's nodejs.
func nodeBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("node")
	proctest.RequireCI(t, err == nil, "node (Debian package nodejs)")
	return bin
}

// nodeServer answers with X-Version: gen N. It listens on the inherited
// socket (fd 3) in the generations listed in $INHERIT, else on
// 127.0.0.1:$PORT itself, as a Node server written for a fixed port does.
const nodeServer = `
const gen = process.env.HOTSWAP_GENERATION;
const s = require('http').createServer((q, r) => { r.setHeader('X-Version', 'gen ' + gen); r.end('ok\n'); });
if ((process.env.INHERIT || '').split(',').includes(gen)) s.listen({fd: 3}); else s.listen(+process.env.PORT, '127.0.0.1');
process.on('SIGTERM', () => s.close());
`

// TestHintBindHeldAddress: Node's listen(PORT) under hotswap without
// --intercept finds the port taken by hotswap and exits; hotswap's line
// says so and names the two fixes. At start-up and on a reload.
func TestHintBindHeldAddress(t *testing.T) {
	node := nodeBinary(t)
	hotswap := proctest.Build(t, hotswapPkg)
	// start runs Node on its own port with the listeners before it and
	// returns the generation's pid, its port and hotswap's last line.
	start := func(t *testing.T, before ...string) (int, int, string) {
		port := icFreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		// A probe of the port, not a delay: Node on a busy machine can
		// take longer than a delay to fail, and would then have been ready.
		args := append([]string{"--log-format", "json", "--control", "none", "--ready", "http://" + addr + "/"}, before...)
		cmd := exec.Command(hotswap, append(args, "-l", "tcp://"+addr, "--", node, "-e", nodeServer)...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
		p := proctest.StartCmd(t, cmd)
		if code := p.Wait(15 * time.Second); code != exitFailure {
			t.Errorf("exit %d, want %d", code, exitFailure)
		}
		return p.WaitEvent(time.Second, "generation started", proctest.Gen(1)).Int("pid"), port, lastLine(p)
	}
	t.Run("start", func(t *testing.T) {
		pid, port, l := start(t)
		want := fmt.Sprintf("hotswap: generation 1 (pid %d) exited with status 1 before it was ready: it could not bind 127.0.0.1:%d, which hotswap holds; let it take the inherited socket (fd 3, LISTEN_FDS) or add --intercept; nothing is serving", pid, port)
		if l != want {
			t.Errorf("got  %q\nwant %q", l, want)
		}
	})
	t.Run("second listener", func(t *testing.T) {
		pid, port, l := start(t, "-l", "unix://"+filepath.Join(t.TempDir(), "admin.sock"))
		want := fmt.Sprintf("hotswap: generation 1 (pid %d) exited with status 1 before it was ready: it could not bind 127.0.0.1:%d, which hotswap holds; let it take the inherited socket (fds 3-4, LISTEN_FDS) or add --intercept; nothing is serving", pid, port)
		if l != want {
			t.Errorf("got  %q\nwant %q", l, want)
		}
	})
	t.Run("reload", func(t *testing.T) {
		port := icFreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(hotswap, "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "http://"+addr+"/", "-l", "tcp://"+addr, "--", node, "-e", nodeServer)
		cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "INHERIT=1")
		p := proctest.StartCmd(t, cmd)
		g, _ := ctltest.Gen(ctltest.WaitServing(p, 1, 15*time.Second), 1)
		first := g.PID
		if st, ok := ctltest.Reload(p, 2, 15*time.Second, func() { p.Signal(syscall.SIGHUP) }); ok {
			t.Fatalf("reload to generation 2 succeeded (serving %d), want it to fail", st.Current)
		}
		// Generation 2 is gone: its pid is in the log.
		pid := p.WaitEvent(time.Second, "generation started", proctest.Gen(2)).Int("pid")
		want := fmt.Sprintf("hotswap: reload failed: generation 2 (pid %d) exited with status 1: it could not bind %s, which hotswap holds; let it take the inherited socket (fd 3, LISTEN_FDS) or add --intercept; still serving generation 1 (pid %d)", pid, addr, first)
		p.WaitLine("hotswap: reload failed:", 5*time.Second)
		if l := lineWith(p, "hotswap: reload failed:"); l != want {
			t.Errorf("got  %q\nwant %q", l, want)
		}
		if v := get(t, addr); v != "gen 1" {
			t.Errorf("after the failed reload %s answered by %q, want gen 1", addr, v)
		}
	})
}

// TestHintBindAfterReady: a delay gate can pass before a slow server gets
// to its bind and fails; the crash-restart warning then carries the hint.
func TestHintBindAfterReady(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	p := proctest.Start(t, hotswap, "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "100ms", "-l", "tcp://127.0.0.1:0", "--",
		"sh", "-c", "sleep 0.3; echo 'bind(): Address already in use [core/socket.c line 769]' >&2; exit 1")
	addr := ctltest.Addr(p, 10*time.Second)
	e := p.WaitEvent(10*time.Second, "generation exited on its own", proctest.Gen(1))
	want := "it could not bind " + addr + ", which hotswap holds; let it take the inherited socket (fd 3, LISTEN_FDS) or add --intercept"
	if e.Str("hint") != want {
		t.Errorf("hint %q, want %q", e.Str("hint"), want)
	}
}

// TestStderrOutlivesHotswap: a generation's stderr is a pipe to a tee
// process of its own, not to hotswap, so a generation that outlives a
// killed hotswap can still write to it (a shell writing to a pipe nobody
// reads dies of SIGPIPE).
func TestStderrOutlivesHotswap(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	// The control socket is in the test's directory: a killed hotswap
	// cannot remove it.
	p := proctest.Start(t, hotswap, "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "100ms", "-l", "tcp://127.0.0.1:0", "--",
		"sh", "-c", "while :; do echo tick >&2; sleep 0.02; done")
	g, _ := ctltest.Gen(ctltest.WaitServing(p, 1, 10*time.Second), 1)
	pid := g.PID
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	p.Signal(syscall.SIGKILL)
	waitGone(t, p.Cmd.Process.Pid, 5*time.Second) // not p.Wait: the generation holds hotswap's stdout
	time.Sleep(300 * time.Millisecond)            // 15 more lines
	if !proctest.Alive(pid) {
		t.Fatalf("generation 1 (pid %d) died once hotswap was killed", pid)
	}
	before := len(p.Lines())
	time.Sleep(200 * time.Millisecond)
	if after := len(p.Lines()); after <= before {
		t.Errorf("no stderr line reached hotswap's stderr after it was killed (%d, then %d lines)", before, after)
	}
}

// TestStderrRelayOnePerRun: one relay process copies every generation's
// stderr, the same one across reloads (not a process per generation), and
// each generation's lines arrive.
func TestStderrRelayOnePerRun(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	p := proctest.Start(t, hotswap, "--log-format", "json", "--ready", "100ms", "-l", "tcp://127.0.0.1:0", "--",
		"sh", "-c", `echo "said by $HOTSWAP_GENERATION" >&2; exec sleep 60`)
	ctltest.WaitServing(p, 1, 10*time.Second)
	first := relaysOf(t, p.Cmd.Process.Pid)
	for n := 2; n <= 4; n++ {
		if st, ok := ctltest.Reload(p, n, 10*time.Second, func() { p.Signal(syscall.SIGHUP) }); !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
	}
	for n := 1; n <= 4; n++ {
		p.WaitLine(fmt.Sprintf("said by %d", n), 5*time.Second)
	}
	if last := relaysOf(t, p.Cmd.Process.Pid); len(first) != 1 || !slices.Equal(first, last) {
		t.Errorf("stderr relay processes: %v with generation 1, %v after 3 reloads; want the same one", first, last)
	}
}

// TestStderrRelayClosedLogPipe: hotswap's stderr is a pipe whose reader
// went away (`hotswap 2>&1 | logger`, the logger gone). A generation that
// then writes 1 MB to its stderr, far more than a pipe holds, gets it all
// out: it is neither blocked nor killed, since the relay's writes fail
// with EPIPE, not SIGPIPE, and it goes on reading. A reload still
// succeeds.
func TestStderrRelayClosedLogPipe(t *testing.T) {
	dir := t.TempDir()
	sock, start, done := filepath.Join(dir, "hotswap.sock"), filepath.Join(dir, "start"), filepath.Join(dir, "done")
	startClosedLogPipe(t, sock, "--ready", "100ms", "-l", "tcp://127.0.0.1:0", "--", "sh", "-c",
		`[ "$HOTSWAP_GENERATION" = 1 ] || exec sleep 60; while [ ! -e "$1" ]; do sleep 0.01; done; head -c 1048576 /dev/zero >&2 && touch "$2"; exec sleep 60`,
		"sh", start, done)
	if err := os.WriteFile(start, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("generation 1 did not get its 1 MB of stderr out within 10s of the log pipe closing")
		}
	}
	if st := statusOf(t, sock); st.Current != 1 || len(st.Generations) != 1 {
		t.Fatalf("after the write: current %d, %d generations; want generation 1 alone", st.Current, len(st.Generations))
	}
	if code, out, _ := ctl(t, "reload", "--control", sock); code != 0 {
		t.Fatalf("reload with the log pipe closed: exit %d %q", code, out)
	}
}

// relaysOf returns the pids of pid's children that are stderr relays.
func relaysOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var relays []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil || ppid(c) != pid {
			continue
		}
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); strings.HasPrefix(string(cmdline), "hotswap-stderr-") {
			relays = append(relays, c)
		}
	}
	return relays
}

// TestHintStopSignal: a generation still running at the end of the drain
// timeout is killed, and the warning says which signal would have stopped
// it gracefully. uWSGI's SIGTERM means "reload yourself".
func TestHintStopSignal(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	t.Run("unknown server", func(t *testing.T) {
		p := proctest.Start(t, hotswap, "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "100ms", "--drain-timeout", "500ms",
			"-l", "tcp://127.0.0.1:0", "--", "sh", "-c", "trap '' TERM; while :; do sleep 0.05; done")
		ctltest.WaitServing(p, 1, 10*time.Second)
		ctltest.Reload(p, 2, 10*time.Second, func() { p.Signal(syscall.SIGHUP) })
		e := p.WaitEvent(10*time.Second, "generation did not stop in time, killing it", proctest.Gen(1))
		if want := "it did not exit on SIGTERM: give --stop-signal the server's graceful stop signal, or a longer --drain-timeout"; e.Str("hint") != want {
			t.Errorf("hint %q, want %q", e.Str("hint"), want)
		}
	})
	t.Run("uwsgi", func(t *testing.T) {
		uwsgi := uwsgiBinary(t)
		addr := fmt.Sprintf("127.0.0.1:%d", icFreePort(t))
		p := proctest.Start(t, hotswap, "--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "tcp://"+addr, "--drain-timeout", "2s",
			"-l", "tcp://"+addr, "--", uwsgi, "--plugin", "python3", "--master", "--workers", "2", "--protocol", "http", "--socket", "fd://3",
			"--wsgi-file", uwsgiApp(t))
		ctltest.WaitServing(p, 1, 20*time.Second)
		ctltest.Reload(p, 2, 20*time.Second, func() { p.Signal(syscall.SIGHUP) })
		e := p.WaitEvent(20*time.Second, "generation did not stop in time, killing it", proctest.Gen(1))
		if want := "uWSGI stops on SIGINT (SIGTERM makes it reload itself): add --stop-signal INT"; e.Str("hint") != want {
			t.Errorf("hint %q, want %q", e.Str("hint"), want)
		}
	})
}

// TestHintStopSignalAtStart: a stop signal known to lose requests or
// time is warned about at the start, not after the first reload: uWSGI's
// SIGTERM in any mode, HAProxy's where a socket is shared.
func TestHintStopSignalAtStart(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	haproxy, err := exec.LookPath("haproxy")
	proctest.RequireCI(t, err == nil, "haproxy (Debian package haproxy)")
	uwsgi := uwsgiBinary(t)
	dir, err := filepath.Abs("../../examples/recipes")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		hint string // "" for no warning
	}{
		{[]string{"--mode", "shared", "--", haproxy, "-db", "-f", dir + "/haproxy.cfg"}, "HAProxy stops gracefully on SIGUSR1: add --stop-signal USR1"},
		{[]string{"--", haproxy, "-db", "-f", dir + "/haproxy.cfg"}, ""}, // reuseport: drained first
		{[]string{"--", uwsgi, "--plugin", "python3", "--protocol", "http", "--socket", "fd://3", "--wsgi-file", dir + "/wsgi.py"}, "uWSGI stops on SIGINT (SIGTERM makes it reload itself): add --stop-signal INT"},
		{[]string{"--", uwsgi, "--die-on-term", "--plugin", "python3", "--protocol", "http", "--socket", "fd://3", "--wsgi-file", dir + "/wsgi.py"}, ""},
	} {
		p := proctest.Start(t, hotswap, append([]string{"--log-format", "json", "--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "200ms", "--drain-timeout", "2s", "-l", "tcp://127.0.0.1:0"}, tc.args...)...)
		ctltest.WaitServing(p, 1, 20*time.Second)
		cmd := tc.args[slices.Index(tc.args, "--")+1]
		var got []string
		for _, e := range p.Events("stop signal SIGTERM will not stop " + cmd + " gracefully") {
			got = append(got, e.Str("hint"))
		}
		if want := []string{tc.hint}; tc.hint == "" && len(got) != 0 || tc.hint != "" && !slices.Equal(got, want) {
			t.Errorf("%v: warnings %q, want %q", tc.args, got, tc.hint)
		}
		p.Signal(syscall.SIGINT)
		p.Wait(20 * time.Second)
	}
}

// TestHintUwsgiProtocol: uWSGI's --http-socket on the address hotswap
// holds finds the inherited socket and speaks the uwsgi protocol on it, so
// the HTTP gate only ever sees EOF; uWSGI's own complaint names the fix.
func TestHintUwsgiProtocol(t *testing.T) {
	uwsgi := uwsgiBinary(t)
	hotswap := proctest.Build(t, hotswapPkg)
	addr := fmt.Sprintf("127.0.0.1:%d", icFreePort(t))
	p := proctest.Start(t, hotswap, "--log-format", "json", "--control", "none", "--ready", "http://"+addr+"/", "--ready-timeout", "3s",
		"-l", "tcp://"+addr, "--", uwsgi, "--plugin", "python3", "--http-socket", addr, "--wsgi-file", uwsgiApp(t))
	if code := p.Wait(20 * time.Second); code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	pid := p.WaitEvent(time.Second, "generation started", proctest.Gen(1)).Int("pid")
	want := fmt.Sprintf(`hotswap: generation 1 (pid %d) not ready after 3s: GET http://%s/: EOF: uWSGI read HTTP as its own uwsgi protocol ("invalid request block size"): serve HTTP on the inherited socket with --protocol http --socket fd://3, not --http-socket; nothing is serving`, pid, addr)
	if l := lastLine(p); l != want {
		t.Errorf("got  %q\nwant %q", l, want)
	}
}

func lastLine(p *proctest.Proc) string {
	lines := p.Lines()
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

func lineWith(p *proctest.Proc, prefix string) string {
	for _, l := range p.Lines() {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func uwsgiBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("uwsgi")
	_, perr := os.Stat("/usr/lib/uwsgi/plugins/python3_plugin.so")
	proctest.RequireCI(t, err == nil && perr == nil, "uwsgi with its python3 plugin (Debian packages uwsgi, uwsgi-plugin-python3)")
	return bin
}

// uwsgiApp writes a WSGI application answering X-Version: gen N.
func uwsgiApp(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.py")
	app := `import os
gen = os.environ.get("HOTSWAP_GENERATION", "?")
def application(env, start):
    start("200 OK", [("X-Version", "gen " + gen), ("Content-Type", "text/plain")])
    return [b"ok\n"]
`
	if err := os.WriteFile(p, []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
