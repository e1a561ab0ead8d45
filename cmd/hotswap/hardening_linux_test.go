package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// hardeningHelperEnv selects a helper main of this file in a child that
// hotswap starts; init runs it before TestMain, so no shared registry is
// touched.
const hardeningHelperEnv = "TEST_HARDENING_HELPER"

func init() {
	switch os.Getenv(hardeningHelperEnv) {
	case "":
	case "udp":
		os.Exit(udpHelper())
	default:
		fmt.Fprintf(os.Stderr, "unknown hardening helper %q\n", os.Getenv(hardeningHelperEnv))
		os.Exit(2)
	}
}

// udpHelper answers every datagram on the inherited "udp" socket with
// "<gen> <payload>" until SIGTERM, then stops reading and exits: what it
// did not read stays in the shared socket's receive queue for the next
// generation.
func udpHelper() int {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	pcs, err := fdpass.PacketConns()
	if err != nil || pcs["udp"] == nil {
		fmt.Fprintf(os.Stderr, "udp helper: inherit: %v %v\n", err, pcs)
		return 1
	}
	pc := pcs["udp"]
	gen := os.Getenv(fdpass.Generation)
	var stopping sync.WaitGroup
	stopping.Go(func() {
		<-sigc
		pc.SetReadDeadline(time.Now()) // a read in progress returns; nothing read is dropped
	})
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return 0
		}
		if _, err := pc.WriteTo(append([]byte(gen+" "), buf[:n]...), from); err != nil {
			fmt.Fprintf(os.Stderr, "udp helper: reply: %v\n", err)
		}
	}
}

// requireHardening skips (fails under CI) when the hotswap binary has not
// got the hardening flags wired into flags.go yet.
func requireHardening(t *testing.T, hotswap string) {
	t.Helper()
	out, _ := exec.Command(hotswap, "--help").CombinedOutput()
	proctest.RequireCI(t, strings.Contains(string(out), "--subreaper"), "hardening flags in hotswap (addHardeningFlags in flags.go)")
}

// readPid reads a pidfile, 0 when absent or partial.
func readPid(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !proctest.Alive(pid) {
			return
		}
	}
	t.Fatalf("pid %d still running after %s", pid, d)
}

// TestHardeningSelfUpgradeUnderLoad: kill -s RTMIN+2 starts a new hotswap
// from the binary, which inherits the sockets and gates its own first
// generation; the old one drains and exits 0; the pidfile follows; no
// request fails.
func TestHardeningSelfUpgradeUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	pidfile := filepath.Join(t.TempDir(), "hotswap.pid")
	a := startAppCmd(t, []string{"--ready", "200ms", "--pidfile", pidfile})
	oldPid := a.hs.Cmd.Process.Pid
	if got := readPid(pidfile); got != oldPid {
		t.Fatalf("pidfile holds %d, want %d", got, oldPid)
	}
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute})
	newPid, res := a.upgradeUnderLoad(t, pidfile, run)
	if res.Failed != 0 {
		t.Errorf("%d failed requests across a self-upgrade, want 0: %v", res.Failed, res.Errors)
	}
	if res.Versions["v1"] == 0 || res.Versions["v2"] == 0 {
		t.Errorf("versions seen %v, want v1 and v2", res.Versions)
	}
	syscall.Kill(newPid, syscall.SIGTERM)
	waitGone(t, newPid, 15*time.Second)
	if _, err := os.Stat(pidfile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left after the new hotswap stopped: %v", err)
	}
}

// upgradeUnderLoad lets run load a's hotswap for 300ms, upgrades it to one
// whose generation answers v2, checks that the old hotswap exits 0 and v2
// answers, and returns the new hotswap's pid and what the load saw.
func (a *app) upgradeUnderLoad(t *testing.T, pidfile string, run *load.Run) (int, load.Result) {
	t.Helper()
	oldPid := a.hs.Cmd.Process.Pid
	time.Sleep(300 * time.Millisecond)
	a.write("v2", "")
	t0 := time.Now()
	a.hs.Signal(upgradeSignal)
	newPid := waitNewPid(t, pidfile, oldPid)
	t.Logf("new hotswap pid %d serving after %s", newPid, time.Since(t0).Round(time.Millisecond))
	if code := a.hs.Wait(30 * time.Second); code != 0 {
		t.Errorf("old hotswap exited %d after the upgrade, want 0", code)
	}
	if got := get(t, a.addr); got != "v2" {
		t.Errorf("after the upgrade answered by %q, want v2", got)
	}
	time.Sleep(300 * time.Millisecond)
	res := run.Stop()
	t.Logf("load across the self-upgrade: %v; versions %v", res, res.Versions)
	return newPid, res
}

// waitNewPid waits for the pidfile to name a hotswap other than oldPid,
// and stops that one when the test ends.
func waitNewPid(t *testing.T, pidfile string, oldPid int) int {
	t.Helper()
	var newPid int
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end) && newPid == 0; time.Sleep(10 * time.Millisecond) {
		if p := readPid(pidfile); p != 0 && p != oldPid {
			newPid = p
		}
	}
	if newPid == 0 {
		t.Fatalf("pidfile still names %d 20s after the upgrade signal", oldPid)
	}
	t.Cleanup(func() {
		if !proctest.Alive(newPid) {
			return
		}
		syscall.Kill(newPid, syscall.SIGTERM)
		for range 500 {
			if !proctest.Alive(newPid) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		syscall.Kill(newPid, syscall.SIGKILL)
	})
	return newPid
}

// startAppCmd is startApp with a WaitDelay, for a hotswap whose successor
// keeps its stdout after it exits.
func startAppCmd(t *testing.T, hsFlags []string, goappFlags ...string) *app {
	t.Helper()
	hotswap := proctest.Build(t, hotswapPkg)
	goapp := proctest.Build(t, goappPkg)
	dir := t.TempDir()
	a := &app{t: t, verFile: filepath.Join(dir, "version"), flags: filepath.Join(dir, "flags"), gen: 1}
	a.write("v1", "")
	script := `bin=$0 v=$1 f=$2; shift 2; exec "$bin" --version "$(cat "$v")" $(cat "$f") "$@"`
	args := append([]string{"--log-format", "json", "-l", "http=tcp://127.0.0.1:0"}, hsFlags...)
	args = append(args, "--", "sh", "-c", script, goapp, a.verFile, a.flags)
	cmd := exec.Command(hotswap, append(args, goappFlags...)...)
	cmd.WaitDelay = time.Second
	a.hs = proctest.StartCmd(t, cmd)
	a.addr = a.waitServing(1, 10*time.Second).Listeners[0].Address
	return a
}

// TestHardeningUnixSocket: a unix listener gets its mode between bind and
// listen, serves goapp through 5 reloads under load with 0 failures, stays
// in place while generations serve it, and is removed on the final stop.
func TestHardeningUnixSocket(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	goapp := proctest.Build(t, goappPkg)
	sock := filepath.Join(t.TempDir(), "app.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // not a socket: refused
		t.Fatal(err)
	}
	out, err := exec.Command(hotswap, "-l", "http=unix://"+sock, "--", goapp).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not a socket") {
		t.Errorf("a regular file at the path: got %v %q, want a failure naming it", err, out)
	}
	os.Remove(sock)
	stale, err := net.Listen("unix", sock) // a stale socket nobody listens on: replaced
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	hs := proctest.Start(t, hotswap, "--log-format", "json", "--ready", "200ms",
		"-l", "http=unix://"+sock+"?mode=0640", "--", goapp, "--version", "v1")
	ctltest.WaitServing(hs, 1, 10*time.Second)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v, want a socket with mode 0640", sock, fi.Mode(), err)
	}
	run := load.Start(t.Context(), load.Config{Network: "unix", Addr: sock, Concurrency: 8, Duration: time.Minute})
	for n := 2; n <= 6; n++ {
		hs.Signal(syscall.SIGHUP)
		ctltest.WaitServing(hs, n, 15*time.Second)
		ctltest.WaitGone(hs, n-1, 15*time.Second)
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("after reload %d: %v", n, err)
		}
	}
	res := run.Stop()
	t.Logf("unix socket, 5 reloads: %v", res)
	if res.Failed != 0 || res.OK < 100 {
		t.Errorf("%d failed, %d ok; want 0 failed: %v", res.Failed, res.OK, res.Errors)
	}
	hs.Signal(syscall.SIGTERM)
	hs.Wait(15 * time.Second)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after the final stop: %v", err)
	}
}

// TestHardeningUDPReload: a client sends datagrams one at a time (each
// waits up to 1s for its answer) while hotswap reloads a UDP server 5
// times. The socket's receive queue belongs to the socket: a datagram the
// old generation did not read is read by the new one.
func TestHardeningUDPReload(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hotswap, "--log-format", "json", "--ready", "100ms", "-l", "udp=udp4://127.0.0.1:0", "--", self, "-test.run=^$")
	cmd.Env = append(os.Environ(), hardeningHelperEnv+"=udp")
	hs := proctest.StartCmd(t, cmd)
	addr := ctltest.WaitServing(hs, 1, 10*time.Second).Listeners[0].Address

	ctx, cancel := context.WithCancel(t.Context())
	var sent, lost int
	gens := map[string]int{}
	var client sync.WaitGroup
	client.Go(func() {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 2048)
		// Bounded by count and by the test (cancel below); the five
		// reloads wait for each old generation to exit, which in the
		// default mode is --drain-conn-wait (2 s) after its cutover, so
		// the count must outlast about 10 s of fast answers (200,000 did
		// not on a quiet machine: generation 6 was never asked).
		for i := 0; ctx.Err() == nil && i < 5_000_000; i++ {
			want := strconv.Itoa(i)
			sent++
			c.Write([]byte(want))
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				n, err := c.Read(buf)
				if err != nil {
					lost++
					break
				}
				gen, got, _ := strings.Cut(string(buf[:n]), " ")
				if got == want {
					gens[gen]++
					break
				}
			}
		}
	})
	for n := 2; n <= 6; n++ {
		time.Sleep(100 * time.Millisecond)
		hs.Signal(syscall.SIGHUP)
		ctltest.WaitServing(hs, n, 15*time.Second)
		ctltest.WaitGone(hs, n-1, 15*time.Second)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	client.Wait()
	t.Logf("udp, 5 reloads: %d datagrams, %d lost, answers by generation %v", sent, lost, gens)
	if lost != 0 {
		t.Errorf("%d of %d datagrams lost, want 0", lost, sent)
	}
	if len(gens) != 6 {
		t.Errorf("answers from generations %v, want 6 generations", gens)
	}
}

// TestHardeningSubreaper: with --subreaper, a grandchild that outlives its
// generation is adopted by hotswap and reaped when it exits; generations
// are still reaped by their own waiter (reloads and exit statuses work).
func TestHardeningSubreaper(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	a := startApp(t, []string{"--ready", "200ms", "--subreaper"}, "--spawn-grandchild")
	gc := grandchildPid(t, a.hs)
	t.Cleanup(func() { killGrandchildren(a.hs) })
	if r := a.reload(2, "v2", ""); !r.OK {
		t.Fatalf("reload: %v", r)
	}
	a.waitGone(1, 15*time.Second)
	if pp := ppid(gc); pp != a.hs.Cmd.Process.Pid {
		t.Fatalf("orphaned grandchild %d has parent %d, want hotswap %d", gc, pp, a.hs.Cmd.Process.Pid)
	}
	syscall.Kill(gc, syscall.SIGKILL)
	waitReaped(t, gc, 3*time.Second)
	if r := a.reload(3, "v3", ""); !r.OK {
		t.Fatalf("reload after reaping: %v", r)
	}
	for _, e := range a.hs.Events("generation exited") {
		if strings.Contains(e.Str("status"), "wait") {
			t.Errorf("a generation's exit was stolen: %v", e)
		}
	}
	a.hs.Signal(syscall.SIGTERM)
	if code := a.hs.Wait(15 * time.Second); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

var grandchildRe = regexp.MustCompile(`spawned grandchild pid (\d+)`)

func grandchildPid(t *testing.T, p *proctest.Proc) int {
	t.Helper()
	for range 500 {
		if pids := grandchildPids(p); len(pids) > 0 {
			return pids[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no grandchild pid in the output")
	return 0
}

// grandchildPids are the pids of goapp's --spawn-grandchild processes, in
// the order their generations logged them.
func grandchildPids(p *proctest.Proc) []int {
	var out []int
	for _, l := range p.Lines() {
		if m := grandchildRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// killGrandchildren ends the grandchildren still sleeping: every
// generation of goapp --spawn-grandchild spawned one.
func killGrandchildren(p *proctest.Proc) {
	for _, pid := range grandchildPids(p) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, _ := strconv.Atoi(f[1])
	return n
}

// waitReaped waits until pid, killed, is gone from /proc: reaped, not left
// a zombie.
func waitReaped(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("pid %d not reaped %v after it was killed", pid, d)
		}
	}
}
