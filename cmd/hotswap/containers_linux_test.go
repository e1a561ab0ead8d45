package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/sys"
)

// containerSwaps is how many image swaps TestContainerSwaps makes: 20,
// which take about 23s under load on this machine kind (a swap: podman
// run to READY=1 in 0.2-1.3s, the drain, the old container's stop and
// conmon's exit), plus 18s to make the 21 images. HOTSWAP_CONTAINER_SWAPS
// changes it.
func containerSwaps(t *testing.T) int {
	n := 20
	if s := os.Getenv("HOTSWAP_CONTAINER_SWAPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("HOTSWAP_CONTAINER_SWAPS=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// containerApp is hotswap whose generations are `podman run` containers
// of the image named in a tag file.
type containerApp struct {
	t       *testing.T
	pm      *podman
	hs      *proctest.Proc
	addr    string
	control string
	tagFile string
}

// startContainers runs hotswap with hsFlags around `podman run ... IMAGE`
// where IMAGE is read from a tag file holding image at first.
func startContainers(t *testing.T, pm *podman, listen, image string, hsFlags ...string) *containerApp {
	t.Helper()
	a := &containerApp{t: t, pm: pm, tagFile: filepath.Join(t.TempDir(), "image")}
	a.setImage(image)
	args := append([]string{"--log-format", "json", "-l", "http=tcp://" + listen}, hsFlags...)
	args = append(args, "--")
	args = append(args, pm.run("--name", filepath.Base(pm.repo)+"-{gen}", "{file:"+a.tagFile+"}")...)
	a.hs = proctest.Start(t, proctest.Build(t, hotswapPkg), args...)
	a.addr = ctltest.WaitServing(a.hs, 1, 60*time.Second).Listeners[0].Address
	a.control = ctltest.Path(a.hs)
	return a
}

func (a *containerApp) setImage(image string) {
	a.t.Helper()
	if err := os.WriteFile(a.tagFile, []byte(image+"\n"), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

// swap deploys image as generation n with SIGHUP and returns the status
// once it is done and whether it succeeded.
func (a *containerApp) swap(n int, image string) (supervisor.Status, bool) {
	a.t.Helper()
	a.setImage(image)
	return ctltest.Reload(a.hs, n, 60*time.Second, func() { a.hs.Signal(syscall.SIGHUP) })
}

// checkServing checks that generation n serves image in a container of
// the test, as status tells.
func (a *containerApp) checkServing(n int, image string) {
	a.t.Helper()
	st := statusOf(a.t, a.control)
	if st.Current != n {
		a.t.Fatalf("status: serving generation %d, want %d", st.Current, n)
	}
	for _, g := range st.Generations {
		if g.ID != n {
			continue
		}
		if g.Container == nil || g.Container.Image != image || g.Container.ID == "" {
			a.t.Fatalf("status of generation %d: container %+v, want image %s with an id", n, g.Container, image)
		}
		if !slices.Contains(a.pm.containers(), g.Container.ID) {
			a.t.Fatalf("status of generation %d: container %s is not one of the test's: %v", n, g.Container.ID, a.pm.containers())
		}
		_, text, _ := ctl(a.t, "status", "--control", a.control)
		if !regexp.MustCompile(regexp.QuoteMeta(image) + `\s+` + g.Container.ID[:12]).MatchString(text) {
			a.t.Fatalf("status: no IMAGE and CONTAINER columns for generation %d (%s %s):\n%s", n, image, g.Container.ID[:12], text)
		}
		return
	}
	a.t.Fatalf("status: no generation %d", n)
}

// stop ends hotswap with SIGTERM and checks that no container is left.
func (a *containerApp) stop(wantCode int) {
	a.t.Helper()
	a.hs.Signal(syscall.SIGTERM)
	if code := a.hs.Wait(60 * time.Second); code != wantCode {
		a.t.Errorf("hotswap exit status %d, want %d", code, wantCode)
	}
	if ids := a.pm.containers(); len(ids) != 0 {
		a.t.Errorf("containers left after hotswap stopped: %v", ids)
	}
}

// twoLoads runs a load on new connections and one on keep-alive ones.
func twoLoads(t *testing.T, addr string) (stop func() (load.Result, load.Result)) {
	fresh := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 6, Duration: 5 * time.Minute})
	kept := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 6, Duration: 5 * time.Minute, KeepAlive: true})
	return func() (load.Result, load.Result) { return fresh.Stop(), kept.Stop() }
}

// checkLoads checks both loads: 0 failed, and last answered. On a failure
// it logs when each failed request started, and hotswap's output.
func checkLoads(t *testing.T, hs *proctest.Proc, fresh, kept load.Result, last string) {
	t.Helper()
	for _, r := range []struct {
		name string
		res  load.Result
	}{{"new connection per request", fresh}, {"keep-alive", kept}} {
		t.Logf("load, %s: %v; versions %v", r.name, r.res, r.res.Versions)
		if r.res.Failed != 0 {
			t.Errorf("load, %s: %d failed, want 0: %v", r.name, r.res.Failed, r.res.Errors)
			for _, s := range r.res.Samples {
				if s.Err != "" {
					t.Logf("failed: %s at %s after %v", s.Err, s.Start.UTC().Format("15:04:05.000000"), s.Dur)
				}
			}
			for _, l := range hs.Lines() {
				if !strings.Contains(l, `"control request"`) {
					t.Log(l)
				}
			}
		}
		if r.res.OK < 500 {
			t.Errorf("load, %s: only %d requests succeeded: the load did not run", r.name, r.res.OK)
		}
		if r.res.Versions[last] == 0 {
			t.Errorf("load, %s: no answer from %s", r.name, last)
		}
	}
}

// TestContainerSwaps: each generation is a container of a new image tag
// (v1 → v21), gated by READY=1 sent from inside the container
// (--sdnotify=container, added by hotswap), under load on new and on
// keep-alive connections: 0 failed, the last image answers, status shows
// each image and container id, and no container is left.
func TestContainerSwaps(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	pm := newPodman(t)
	goapp := staticGoapp(t)
	swaps := containerSwaps(t)
	t0 := time.Now()
	images := []string{""}
	for v := 1; v <= swaps+1; v++ {
		images = append(images, pm.image(fmt.Sprintf("v%d", v), map[string]string{"/goapp": goapp},
			"/goapp", "--version", fmt.Sprintf("v%d", v), "--notify"))
	}
	t.Logf("%d images made in %v", len(images)-1, time.Since(t0).Round(time.Millisecond))
	a := startContainers(t, pm, "127.0.0.1:0", images[1], "--ready", "notify", "--drain-timeout", "20s")
	a.checkServing(1, images[1])
	stop := twoLoads(t, a.addr)
	time.Sleep(200 * time.Millisecond)
	t0 = time.Now()
	var ready []time.Duration
	for n := 2; n <= swaps+1; n++ {
		st, ok := a.swap(n, images[n])
		if !ok {
			t.Fatalf("swap to %s failed: %s", images[n], st.LastFailure)
		}
		g, _ := ctltest.Gen(st, n)
		ready = append(ready, g.ReadyAfter)
		ctltest.WaitGone(a.hs, n-1, 60*time.Second)
		if got := get(t, a.addr); got != fmt.Sprintf("v%d", n) {
			t.Fatalf("after swap %d: answered by %q, want v%d", n-1, got, n)
		}
		if n == 2 || n == swaps+1 {
			a.checkServing(n, images[n])
		}
	}
	t.Logf("%d swaps in %v; container start to READY=1: %v", swaps, time.Since(t0).Round(time.Millisecond), ready)
	time.Sleep(200 * time.Millisecond)
	fresh, kept := stop()
	checkLoads(t, a.hs, fresh, kept, fmt.Sprintf("v%d", swaps+1))
	if ids := pm.containers(); len(ids) != 1 {
		t.Errorf("containers while generation %d serves: %v, want exactly its own", swaps+1, ids)
	}
	a.stop(0)
}

// TestContainerRollback: gated by an HTTP probe of the public port steered
// to the new container's own socket (reuseport), an image whose server
// exits at start and one that never becomes ready are rolled back while
// the old container keeps serving, under load on new and keep-alive
// connections, with 0 failed and their containers removed; the next good
// image deploys. Then a server that ignores the stop signal: after the
// drain timeout hotswap kills its container, and none is left.
func TestContainerRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	pm := newPodman(t)
	goapp := staticGoapp(t)
	files := map[string]string{"/goapp": goapp}
	v1 := pm.image("v1", files, "/goapp", "--version", "v1")
	exits := pm.image("exits", files, "/goapp", "--version", "exits", "--exit-at-start", "1")
	unready := pm.image("unready", files, "/goapp", "--version", "unready", "--health-status", "503")
	stubborn := pm.image("stubborn", files, "/goapp", "--version", "stubborn", "--ignore-term")
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	a := startContainers(t, pm, addr, v1, "--ready", "http://"+addr+"/healthz", "--ready-timeout", "10s", "--drain-timeout", "3s")
	stop := twoLoads(t, a.addr)
	time.Sleep(200 * time.Millisecond)
	for n, tc := range []struct{ image, reason string }{
		{exits, "exited with status 1"},
		{unready, "not ready after 10s: GET http://" + addr + "/healthz: 503 Service Unavailable"},
	} {
		n, image := n+2, tc.image
		if st, ok := a.swap(n, image); ok || ctltest.Reason(st, n) != tc.reason {
			t.Fatalf("swap to %s: succeeded %v, last failure %q, want it failed: %s", image, ok, st.LastFailure, tc.reason)
		}
		ctltest.WaitGone(a.hs, n, 30*time.Second)
		if got := get(t, a.addr); got != "v1" {
			t.Fatalf("after the failed swap to %s: answered by %q, want v1", image, got)
		}
		a.checkServing(1, v1)
		if ids := pm.containers(); len(ids) != 1 {
			t.Fatalf("after the failed swap to %s: containers %v, want only the serving one", image, ids)
		}
	}
	if st, ok := a.swap(4, stubborn); !ok {
		t.Fatalf("swap to %s failed: %s", stubborn, st.LastFailure)
	}
	ctltest.WaitGone(a.hs, 1, 30*time.Second)
	time.Sleep(200 * time.Millisecond)
	fresh, kept := stop()
	checkLoads(t, a.hs, fresh, kept, "stubborn")
	t0 := time.Now()
	a.stop(128 + int(syscall.SIGKILL)) // podman's status for a container killed by SIGKILL
	if d := time.Since(t0); d > 3*time.Second+containerSlack {
		t.Errorf("stop of a server that ignores SIGTERM took %v, want the 3s drain timeout and at most %v more", d, containerSlack)
	}
	// hotswap has exited: its warning that it killed the generation is
	// the record of the kill.
	a.hs.WaitEvent(time.Second, "generation did not stop in time, killing it", proctest.Gen(4))
}

// containerSlack bounds what podman adds to a container's stop: removing
// it and exiting.
const containerSlack = 5 * time.Second

// TestContainerPID1: hotswap is the entrypoint (pid 1) of a container on
// the host's network (here: the test's namespace). `podman kill -s HUP`
// reloads it under load with 0 failed; the orphaned grandchild of the old
// generation is reaped by hotswap, leaving no zombie; `hotswap status`
// works through `podman exec`; `podman stop` ends it within the drain
// time with the server's exit status, and the container is removed.
func TestContainerPID1(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	pm := newPodman(t)
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	image := pm.image("pid1", map[string]string{
		"/hotswap": proctest.Build(t, hotswapPkg, "CGO_ENABLED=0"),
		"/goapp":   staticGoapp(t),
		"/version": "=v1\n",
		"/tmp/.k":  "=",
	}, "/hotswap", "--log-format", "json", "-l", "http=tcp://"+addr, "--ready", "http://"+addr+"/healthz",
		"--drain-timeout", "5s", "--", "/goapp", "--version", "{file:/version}", "--spawn-grandchild")
	name := filepath.Base(pm.repo) + "-pid1"
	run := pm.run("--name", name, image)
	ctr := proctest.Start(t, run[0], run[1:]...)
	// hotswap's control socket, reached from the host through its root.
	inCtr := func() (supervisor.Status, error) {
		out, err := pm.cmd("inspect", "--format", "{{.State.Pid}}", name).Output()
		if err != nil {
			return supervisor.Status{}, err
		}
		return ctltest.Ask(fmt.Sprintf("/proc/%s/root%s", strings.TrimSpace(string(out)), control.DefaultPath(1)))
	}
	ctltest.WaitOn(ctr, 60*time.Second, "serving generation 1", inCtr, ctltest.Serving(1))
	hotswapPID := pm.hostPID(name)
	stop := twoLoads(t, addr)
	time.Sleep(200 * time.Millisecond)

	version := filepath.Join(t.TempDir(), "version")
	if err := os.WriteFile(version, []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pm.must("cp", version, name+":/version")
	pm.must("kill", "--signal", "HUP", name)
	if st := ctltest.WaitOn(ctr, 60*time.Second, "done with the reload to generation 2", inCtr, func(st supervisor.Status) bool {
		return st.Reloads.OK+st.Reloads.Failed > 0
	}); !ctltest.Serving(2)(st) {
		t.Fatalf("podman kill -s HUP: the reload failed: %s", st.LastFailure)
	}
	ctltest.WaitOn(ctr, 30*time.Second, "rid of generation 1", inCtr, ctltest.Gone(1))
	if got := get(t, addr); got != "v2" {
		t.Fatalf("after the reload: answered by %q, want v2", got)
	}
	checkReaped(t, ctr, hotswapPID)

	out := pm.must("exec", name, "/hotswap", "status", "--json")
	st := statusJSON{Status: nil}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Status == nil || st.PID != 1 || st.Current != 2 {
		t.Fatalf("podman exec hotswap status: %v; %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	fresh, kept := stop()
	checkLoads(t, ctr, fresh, kept, "v2")

	t0 := time.Now()
	pm.must("stop", "--time", "30", name)
	if code := ctr.Wait(30 * time.Second); code != 0 {
		t.Errorf("container exit status %d, want the server's 0", code)
	}
	if d := time.Since(t0); d > 5*time.Second+containerSlack {
		t.Errorf("podman stop took %v, want the 5s drain time and at most %v more", d, containerSlack)
	}
	// hotswap has exited: its log says it stopped on the signal.
	ctr.WaitEvent(time.Second, "stopping", nil)
	if ids := pm.containers(); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}

// checkReaped finds the orphaned grandchild of generation 1 (its pid in
// the container is in goapp's output), checks that hotswap, pid 1 of the
// container, adopted it, kills it, and checks that it is reaped and that
// no process of the container is a zombie.
func checkReaped(t *testing.T, p *proctest.Proc, hotswapPID int) {
	t.Helper()
	inner := grandchildPid(t, p)
	host := 0
	for _, pid := range descendants(hotswapPID) {
		if nsPIDs(pid)[1] == inner {
			host = pid
		}
	}
	if host == 0 {
		t.Fatalf("no process with pid %d in the container", inner)
	}
	if pp := ppid(host); pp != hotswapPID {
		t.Fatalf("orphaned grandchild (pid %d, %d in the container) has parent %d, want hotswap %d", host, inner, pp, hotswapPID)
	}
	syscall.Kill(host, syscall.SIGKILL)
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", host)); err != nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("grandchild %d not reaped 3s after it died", host)
		}
	}
	for _, pid := range descendants(hotswapPID) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			t.Errorf("zombie in the container: %s", b)
		}
	}
}

// descendants lists every descendant of pid.
func descendants(pid int) []int {
	var out []int
	for _, c := range sys.Children(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// nsPIDs returns pid's host pid and its pid in its own namespace.
func nsPIDs(pid int) [2]int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
			fs := strings.Fields(f)
			host, _ := strconv.Atoi(fs[0])
			inner, _ := strconv.Atoi(fs[len(fs)-1])
			return [2]int{host, inner}
		}
	}
	return [2]int{}
}

// TestContainerCrashRestart: a container killed from outside is a crash:
// hotswap starts a new container of the image that crashed, not the one
// written in the tag file for a deploy that has not happened.
func TestContainerCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	pm := newPodman(t)
	files := map[string]string{"/goapp": staticGoapp(t)}
	v1 := pm.image("v1", files, "/goapp", "--version", "v1", "--notify")
	v2 := pm.image("v2", files, "/goapp", "--version", "v2", "--notify")
	a := startContainers(t, pm, "127.0.0.1:0", v1, "--ready", "notify")
	st := statusOf(t, a.control)
	old := st.Generations[0].Container.ID
	a.setImage(v2) // written, not deployed
	pm.must("kill", "--signal", "KILL", old)
	ctltest.WaitServing(a.hs, 2, 90*time.Second)
	if st := ctltest.Status(a.hs); st.Restarts != 1 || st.Reloads.OK != 0 {
		t.Errorf("after the kill: %d restarts, %d reloads, want the crash restart only", st.Restarts, st.Reloads.OK)
	}
	a.checkServing(2, v1)
	if got := get(t, a.addr); got != "v1" {
		t.Errorf("after the crash restart: answered by %q, want v1", got)
	}
	if ids := pm.containers(); len(ids) != 1 || ids[0] == old {
		t.Errorf("containers after the crash restart: %v, want one new one (the killed one was %s)", ids, old)
	}
	a.stop(0)
}

// TestContainerNaiveDeployLoses is the control of the tests above: the
// same load against today's deploy without a proxy, podman stop of the old
// container and podman run of the new one binding the port itself, fails
// requests (the port is closed while the new container starts).
func TestContainerNaiveDeployLoses(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	if !proctest.InNetns(t) {
		return
	}
	pm := newPodman(t)
	files := map[string]string{"/goapp": staticGoapp(t)}
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	images := map[string]string{}
	for _, v := range []string{"v1", "v2", "v3"} {
		images[v] = pm.image(v, files, "/goapp", "--version", v, "--listen", addr)
	}
	start := func(v string) *proctest.Proc {
		run := pm.run(images[v])
		p := proctest.Start(t, run[0], run[1:]...)
		// No hotswap here: the server's own start line is all there is.
		p.WaitLine("goapp "+v, 60*time.Second)
		return p
	}
	cur := start("v1")
	stop := twoLoads(t, addr)
	time.Sleep(200 * time.Millisecond)
	for v := 2; v <= 3; v++ {
		cur.Signal(syscall.SIGTERM) // podman stop: through podman's signal proxy
		cur.Wait(30 * time.Second)
		cur = start(fmt.Sprintf("v%d", v))
		proctest.WaitVersion(t, addr, fmt.Sprintf("v%d", v), 30*time.Second)
	}
	fresh, kept := stop()
	t.Logf("naive deploy: new connection per request: %v; keep-alive: %v", fresh, kept)
	if fresh.Failed == 0 || kept.Failed == 0 {
		t.Errorf("naive deploy lost nothing (%d, %d failed): the control must show losses", fresh.Failed, kept.Failed)
	}
	cur.Signal(syscall.SIGTERM)
	cur.Wait(30 * time.Second)
}
