package recipes_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// Each recipe of docs/servers.md, run as written there: an unmodified
// server from Debian under hotswap in reuseport mode, 15 reloads under
// continuous load (a new connection per request), 0 failed requests, each
// reload answered by the new generation, every old generation stopped by
// its stop signal (never killed at the drain timeout), and no process of
// any generation left once hotswap has stopped.

const (
	hotswapPkg   = proctest.HotswapPkg
	listenfdsPkg = "github.com/hotswap-dev/hotswap/examples/recipes/listenfds"
	reloads      = 15
)

func TestMain(m *testing.M) { proctest.HelperMain(m, nil) }

// recipe is one server's command line under hotswap. In argv and env,
// {addr} is the public address, {port} its port, {dir} this directory,
// {listenfds} the binary of ./listenfds.
type recipe struct {
	need  map[string]string // executable (name or path) -> Debian package
	flags []string          // hotswap flags besides -l, --ready and --log-format
	argv  []string
	env   []string
}

var python3 = "/usr/bin/python3" // Debian's, whose modules the packages install

var recipes = map[string]recipe{
	"haproxy": {
		need:  map[string]string{"haproxy": "haproxy"},
		flags: []string{"--stop-signal", "USR1"},
		argv:  []string{"haproxy", "-db", "-f", "{dir}/haproxy.cfg"},
	},
	"puma": {
		need: map[string]string{"puma": "puma"},
		argv: []string{"puma", "-b", "tcp://{addr}", "{dir}/config.ru"},
	},
	"puma-workers": {
		need: map[string]string{"puma": "puma"},
		argv: []string{"puma", "-w", "2", "-b", "tcp://{addr}", "{dir}/config.ru"},
	},
	"uwsgi": {
		need:  map[string]string{"uwsgi": "uwsgi", "/usr/lib/uwsgi/plugins/python3_plugin.so": "uwsgi-plugin-python3"},
		flags: []string{"--stop-signal", "INT"},
		argv:  []string{"uwsgi", "--plugin", "python3", "--master", "--workers", "2", "--protocol", "http", "--socket", "fd://3", "--wsgi-file", "{dir}/wsgi.py"},
	},
	"uvicorn": {
		need: map[string]string{python3: "python3", "/usr/lib/python3/dist-packages/uvicorn": "python3-uvicorn"},
		argv: []string{python3, "-m", "uvicorn", "--app-dir", "{dir}", "--fd", "3", "asgi:app"},
	},
	"node-intercept": {
		need:  map[string]string{"node": "nodejs"},
		flags: []string{"--intercept"},
		argv:  []string{"node", "{dir}/server.js"},
		env:   []string{"PORT={port}"},
	},
	"listenfds": {
		argv: []string{"{listenfds}"},
	},
	"node-fd": {
		need: map[string]string{"node": "nodejs"},
		argv: []string{"node", "{dir}/server.js"},
		env:  []string{"USE_FD=1"},
	},
	"python-workers": {
		need:  map[string]string{python3: "python3"},
		flags: []string{"--workers", "2", "--cpu-affinity"},
		argv:  []string{python3, "{dir}/workers.py"},
	},
}

func TestRecipeHAProxy(t *testing.T)       { runRecipe(t, "haproxy") }
func TestRecipePuma(t *testing.T)          { runRecipe(t, "puma") }
func TestRecipePumaWorkers(t *testing.T)   { runRecipe(t, "puma-workers") }
func TestRecipeUWSGI(t *testing.T)         { runRecipe(t, "uwsgi") }
func TestRecipeUvicorn(t *testing.T)       { runRecipe(t, "uvicorn") }
func TestRecipeNodeIntercept(t *testing.T) { runRecipe(t, "node-intercept") }
func TestRecipeNodeFD(t *testing.T)        { runRecipe(t, "node-fd") }
func TestRecipeListenFDs(t *testing.T)     { runRecipe(t, "listenfds") }
func TestRecipePythonWorkers(t *testing.T) { runRecipe(t, "python-workers") }

// require fails under CI=true, else skips, when a program of r is missing.
func (r recipe) require(t *testing.T) {
	t.Helper()
	for bin, pkg := range r.need {
		var err error
		if strings.HasPrefix(bin, "/") {
			_, err = os.Stat(bin)
		} else {
			_, err = exec.LookPath(bin)
		}
		proctest.RequireCI(t, err == nil, fmt.Sprintf("%s (Debian package %s)", bin, pkg))
	}
}

func runRecipe(t *testing.T, name string) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	res := reloadRecipe(t, name, recipes[name], "reuseport")
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
	}
}

// TestRecipeHAProxyShared: in shared mode every generation accepts from
// one socket and hotswap cannot drain an old one first, so the stop
// signal decides. USR1, HAProxy's soft stop, finishes what it accepted:
// nothing is lost. TERM, its hard stop, under the same load: requests are
// cut, so the zeros are the signal's doing and the load sees failures.
func TestRecipeHAProxyShared(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	r := recipes["haproxy"]
	t.Run("USR1", func(t *testing.T) {
		if res := reloadRecipe(t, "haproxy shared USR1", r, "shared"); res.Failed != 0 {
			t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
		}
	})
	t.Run("TERM", func(t *testing.T) {
		r.flags = []string{"--stop-signal", "TERM"}
		if res := reloadRecipe(t, "haproxy shared TERM", r, "shared"); res.Failed == 0 {
			t.Errorf("HAProxy stopped with TERM in shared mode lost nothing: the load cannot see failures")
		}
	})
}

// reloadRecipe runs r under hotswap in mode, reloads it under load, checks
// each reload and returns what the load saw.
func reloadRecipe(t *testing.T, name string, r recipe, mode string) load.Result {
	t.Helper()
	r.require(t)
	hotswap := proctest.Build(t, hotswapPkg)
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	port := proctest.FreePort(t) // Puma's -b and Node's PORT name it
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	vars := []string{"{addr}", addr, "{port}", strconv.Itoa(port), "{dir}", dir}
	if slices.Contains(r.argv, "{listenfds}") {
		vars = append(vars, "{listenfds}", proctest.Build(t, listenfdsPkg))
	}
	expand := strings.NewReplacer(vars...).Replace
	// In reuseport mode a probe of the public port reaches the new
	// generation only; in shared mode any generation may answer it.
	ready := "http://" + addr + "/"
	if mode == "shared" {
		ready = "500ms"
	}
	args := []string{"--log-format", "json", "--control", filepath.Join(t.TempDir(), "control.sock"), "--mode", mode, "-l", "tcp://" + addr, "--ready", ready, "--drain-timeout", "10s"}
	args = append(append(args, r.flags...), "--")
	for _, a := range r.argv {
		args = append(args, expand(a))
	}
	cmd := exec.Command(hotswap, args...)
	cmd.Dir = t.TempDir() // uWSGI, Puma and friends may write beside them
	cmd.Env = os.Environ()
	for _, e := range r.env {
		cmd.Env = append(cmd.Env, expand(e))
	}
	hs := proctest.StartCmd(t, cmd)
	t.Cleanup(func() { checkNoneLeft(t, hs) }) // after StartCmd's cleanup has stopped hotswap
	ctltest.WaitServing(hs, 1, 30*time.Second)
	proctest.WaitVersion(t, addr, "gen 1", 5*time.Second)

	run := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 8, Duration: 3 * time.Minute})
	var took []time.Duration
	for n := 2; n <= reloads+1; n++ {
		hup := time.Now()
		ctltest.Replace(hs, n, 30*time.Second, func() { hs.Signal(syscall.SIGHUP) })
		proctest.WaitVersion(t, addr, "gen "+strconv.Itoa(n), 5*time.Second)
		took = append(took, time.Since(hup))
	}
	res := run.Stop()
	// The warning is the feature: a kill at the drain timeout says so.
	for _, e := range hs.Events("generation did not stop in time, killing it") {
		t.Errorf("generation %d killed at the drain timeout: %s", e.Int("gen"), e.Str("hint"))
	}
	slices.Sort(took)
	t.Logf("%s: %d reloads under load: %v; versions seen: %d", name, reloads, res, len(res.Versions))
	t.Logf("%s: SIGHUP to the new version answering and the old generation gone: median %s, max %s",
		name, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	if len(res.Versions) != reloads+1 {
		t.Errorf("load saw %d versions, want %d: %v", len(res.Versions), reloads+1, res.Versions)
	}
	if res.OK < 20*reloads {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	hs.Signal(syscall.SIGTERM)
	hs.Wait(30 * time.Second)
	return res
}

// checkNoneLeft runs once hotswap has exited: no process of any
// generation's process group (each generation leads its own) is left,
// workers included.
func checkNoneLeft(t *testing.T, hs *proctest.Proc) {
	// hotswap has exited: its log is the record of every generation.
	groups := map[int]bool{}
	for _, e := range hs.Events("generation started") {
		groups[e.Int("pid")] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := groupMembers(groups)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left after hotswap stopped: %v", left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// groupMembers lists the live processes whose process group is in groups.
func groupMembers(groups map[int]bool) []int {
	var pids []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state, ppid, pgrp, ...
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if pgrp, _ := strconv.Atoi(f[2]); groups[pgrp] {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}
