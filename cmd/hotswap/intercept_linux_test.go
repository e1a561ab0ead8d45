package main

import (
	"debug/elf"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/intercept"
	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// The interception tests run unmodified servers that name their port in
// their own arguments, fixed when hotswap starts them. Inside a private
// network namespace (proctest.InNetns) that port is a constant: nobody
// else is there. On the host's loopback the tests bind 127.0.0.1:0, close
// it and pass that port to both hotswap and the server (icFreePort): the
// only case where a "free" port is used, because the server must be told
// the address it will bind before hotswap exists. healthgate's {port} is a
// second, per-generation port for probes and cannot stand in for it.

const (
	staticgoPkg = "github.com/hotswap-dev/hotswap/cmd/hotswap/testdata/staticgo"
	pythonBin   = "/usr/bin/python3"
	icPort      = 18080
	icReloads   = 20
	icMaxGens   = icReloads + 2
)

// icTarget is one unmodified server under interception. argv runs it on
// 127.0.0.1:port serving root/<generation>/index.html, so that each
// generation answers "gen N".
type icTarget struct {
	name  string
	need  string // an executable that must exist
	argv  func(t *testing.T, port int, root string) []string
	delay string // --ready in shared mode, where a probe of the port proves nothing
}

var icTargets = []icTarget{
	{
		name:  "python",
		need:  pythonBin,
		delay: "400ms",
		argv: func(t *testing.T, port int, root string) []string {
			return genShell(fmt.Sprintf(`exec %s -m http.server %d --bind 127.0.0.1 --directory "$0/$HOTSWAP_GENERATION"`, pythonBin, port), root)
		},
	},
	{
		name:  "staticgo",
		delay: "200ms",
		argv: func(t *testing.T, port int, root string) []string {
			return []string{staticGo(t), fmt.Sprintf("127.0.0.1:%d", port)}
		},
	},
	{
		name:  "busybox",
		need:  "busybox",
		delay: "200ms",
		argv: func(t *testing.T, port int, root string) []string {
			return genShell(fmt.Sprintf(`exec busybox httpd -f -p 127.0.0.1:%d -h "$0/$HOTSWAP_GENERATION"`, port), root)
		},
	},
}

// genShell runs script with $0 = root; the shell execs the server, which
// keeps the pid and the seccomp filter.
func genShell(script, root string) []string { return []string{"/bin/sh", "-c", script, root} }

// staticGo builds the static net/http server and checks it has no
// dynamic loader, so LD_PRELOAD could never reach it. It is built here
// rather than by proctest.Build, which adds -race in a race build, and
// the race detector needs cgo.
func staticGo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "staticgo")
	cmd := exec.Command("go", "build", "-o", bin, staticgoPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", staticgoPkg, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a dynamic loader; want a static binary", bin)
		}
	}
	return bin
}

// requireTarget fails under CI=true, else skips, when tg's program is missing.
func requireTarget(t *testing.T, tg icTarget) {
	t.Helper()
	if tg.need == "" {
		return
	}
	_, err := exec.LookPath(tg.need)
	proctest.RequireCI(t, err == nil, tg.need)
}

func requireIntercept(t *testing.T) {
	t.Helper()
	err := intercept.Supported()
	proctest.RequireCI(t, err == nil, fmt.Sprintf("seccomp bind interception (%v)", err))
}

// servedRoot makes root/1 .. root/icMaxGens, each with an index.html saying
// "gen N", readable by everyone (the unprivileged test runs as nobody).
func servedRoot(t *testing.T) string {
	t.Helper()
	root := publicDir(t)
	for n := 1; n <= icMaxGens; n++ {
		dir := filepath.Join(root, strconv.Itoa(n))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(fmt.Sprintf("gen %d\n", n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// hotswapMode returns "reuseport" when this hotswap has --mode reuseport,
// else "shared".
func hotswapMode(t *testing.T, hotswap string) string {
	t.Helper()
	out, _ := exec.Command(hotswap, "--help").Output()
	if strings.Contains(string(out), "--mode") && strings.Contains(string(out), "reuseport") {
		return "reuseport"
	}
	return "shared"
}

// intercepted is hotswap --intercept running a icTarget.
type intercepted struct {
	t    *testing.T
	hs   *proctest.Proc
	addr string
}

type runOpts struct {
	port  int
	ready string
	mode  string
	cred  *syscall.Credential
	dir   string
}

func startIntercepted(t *testing.T, hotswap string, o runOpts, argv []string) *intercepted {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", o.port)
	args := []string{"--log-format", "json", "--intercept", "--ready", o.ready, "-l", "http=tcp://" + addr}
	if o.mode == "reuseport" {
		args = append(args, "--mode", "reuseport")
	}
	cmd := exec.Command(hotswap, append(append(args, "--"), argv...)...)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), "TMPDIR=/tmp")
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	hs := proctest.StartCmd(t, cmd)
	ctltest.WaitServing(hs, 1, 10*time.Second)
	return &intercepted{t: t, hs: hs, addr: addr}
}

// reload sends SIGHUP and waits until generation n has replaced n-1 and
// n-1 has exited.
func (x *intercepted) reload(n int) {
	x.t.Helper()
	ctltest.Replace(x.hs, n, 30*time.Second, func() { x.hs.Signal(syscall.SIGHUP) })
}

// body sends one request on a new connection and returns the answer.
func getBody(t *testing.T, addr string) (string, error) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

// reloadUnderLoad reloads x the given number of times under 16 workers, each request
// on a new connection, checks that every reload is answered by the new
// generation and returns what the load saw.
func (x *intercepted) reloadUnderLoad(reloads int) load.Result {
	t := x.t
	t.Helper()
	run := load.Start(t.Context(), load.Config{Addr: x.addr, Concurrency: 16, Duration: 2 * time.Minute})
	defer run.Stop()
	for n := 2; n <= reloads+1; n++ {
		x.reload(n)
		got, err := getBody(t, x.addr)
		if err != nil {
			t.Fatalf("after reload to generation %d: %v", n, err)
		}
		if want := fmt.Sprintf("gen %d\n", n); !strings.HasPrefix(got, strings.TrimSuffix(want, "\n")+" ") && got != want {
			t.Fatalf("after reload to generation %d: answered %q, want %q", n, got, want)
		}
	}
	res := run.Stop()
	if res.OK < 500 {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	return res
}

// TestInterceptReloadUnderLoad reloads each unmodified server 20 times
// under load, in a private network namespace, in every mode this hotswap
// has. In reuseport mode no request may fail; in shared mode the old
// generation drops the connections it holds when it is stopped, and the
// test records how many. Python also runs with hotswap itself as nobody,
// in the best mode.
func TestInterceptReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	requireIntercept(t)
	hotswap := proctest.Build(t, hotswapPkg)
	best := hotswapMode(t, hotswap)
	modes := []string{best}
	if best != "shared" {
		modes = append(modes, "shared")
	}
	root := servedRoot(t)
	for i, mode := range modes {
		port := icPort + 10*i
		for _, tg := range icTargets {
			t.Run(mode+"/"+tg.name, func(t *testing.T) {
				requireTarget(t, tg)
				x := startIntercepted(t, hotswap, runOpts{port: port, ready: readySpec(mode, tg, port), mode: mode, dir: root},
					tg.argv(t, port, root))
				res := x.reloadUnderLoad(icReloads)
				reportLoad(t, tg.name+" as root", mode, res)
			})
		}
	}
	// The same as an unprivileged user: hotswap itself runs as nobody
	// with no capability, on a port above 1024.
	t.Run(best+"/python-nobody", func(t *testing.T) {
		tg := icTargets[0]
		requireTarget(t, tg)
		if err := os.Chmod(filepath.Dir(hotswap), 0o755); err != nil {
			t.Fatal(err)
		}
		port := icPort + 1
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
		x := startIntercepted(t, hotswap, runOpts{port: port, ready: readySpec(best, tg, port), mode: best, cred: nobody, dir: root},
			tg.argv(t, port, root))
		if uid := procUID(t, x.hs.Cmd.Process.Pid); uid != 65534 {
			t.Fatalf("hotswap runs as uid %d, want 65534", uid)
		}
		res := x.reloadUnderLoad(icReloads)
		reportLoad(t, "python as nobody", best, res)
	})
}

// readySpec is the gate: in reuseport mode an HTTP probe of the public
// port, which the supervisor steers to the new generation; in shared mode
// any generation may answer such a probe, so a delay.
func readySpec(mode string, tg icTarget, port int) string {
	if mode == "reuseport" {
		return fmt.Sprintf("http://127.0.0.1:%d/", port)
	}
	return tg.delay
}

func reportLoad(t *testing.T, what, mode string, res load.Result) {
	t.Helper()
	t.Logf("%s, %s mode, %d reloads: %v", what, mode, icReloads, res)
	if mode == "reuseport" && res.Failed != 0 {
		t.Errorf("%d failed requests in reuseport mode, want 0: %v", res.Failed, res.Errors)
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

// icFreePort returns a port that was free a moment ago on 127.0.0.1; see
// the comment at the top of this file for the one case it is used for.
func icFreePort(t *testing.T) int { return proctest.FreePort(t) }
