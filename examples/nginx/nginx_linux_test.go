package nginx_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

const hotswapPkg = proctest.HotswapPkg

func TestMain(m *testing.M) { proctest.HelperMain(m, nil) }

// versionLine is the line of nginx.conf that a deploy changes.
const versionLine = `set $version "v1";`

// site is hotswap running nginx through run.sh, with the configuration
// template in a temporary directory that each reload rewrites, the way an
// operator edits nginx.conf before kill -HUP.
type site struct {
	t        *testing.T
	hs       *proctest.Proc
	addr     string
	template string
	base     []byte
	pids     []int // every nginx master and worker seen, for the orphan check
}

// nginxBinary returns Debian's nginx, failing under CI=true when missing.
func nginxBinary(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("nginx"); err == nil {
			bin = p
		} else {
			bin = ""
		}
	}
	proctest.RequireCI(t, bin != "", "nginx (Debian package nginx)")
	return bin
}

// startSite runs nginx under hotswap in socket mode mode ("shared" or
// "reuseport"); hotswap stops old generations with stopSignal.
func startSite(t *testing.T, mode, stopSignal string) *site {
	t.Helper()
	return startSiteReady(t, mode, stopSignal, "http://127.0.0.1:{port}/ready")
}

// startSiteReady is startSite with the --ready value ready.
func startSiteReady(t *testing.T, mode, stopSignal, ready string, hsFlags ...string) *site {
	t.Helper()
	nginx := nginxBinary(t)
	hotswap := proctest.Build(t, hotswapPkg)
	runSh, err := filepath.Abs("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(base, []byte(versionLine)) {
		t.Fatalf("nginx.conf has no line %q", versionLine)
	}
	dir := t.TempDir()
	s := &site{t: t, template: filepath.Join(dir, "nginx.conf"), base: base}
	s.writeVersion("v1")
	args := append([]string{"--log-format", "json", "-l", "tcp://127.0.0.1:0",
		"--mode", mode, "--stop-signal", stopSignal, "--drain-timeout", "10s",
		"--ready", ready}, hsFlags...)
	cmd := exec.Command(hotswap, append(args, "--", runSh, "{port}")...)
	cmd.Env = append(os.Environ(), "NGINX_TEMPLATE="+s.template,
		"NGINX_PREFIX="+filepath.Join(dir, "run"), "NGINX_BIN="+nginx)
	t.Cleanup(s.checkNoOrphans) // after StartCmd's cleanup has stopped hotswap
	s.hs = proctest.StartCmd(t, cmd)
	s.addr = ctltest.WaitServing(s.hs, 1, 10*time.Second).Listeners[0].Address
	return s
}

// writeVersion writes the template with the site's version set to v.
func (s *site) writeVersion(v string) {
	s.t.Helper()
	conf := bytes.Replace(s.base, []byte(versionLine), fmt.Appendf(nil, "set $version %q;", v), 1)
	s.writeTemplate(conf)
}

func (s *site) writeTemplate(conf []byte) {
	s.t.Helper()
	if err := os.WriteFile(s.template, conf, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// master returns the pid of generation n's nginx master.
func (s *site) master(n int) int {
	s.t.Helper()
	return ctltest.WaitStarted(s.hs, n, 10*time.Second).PID
}

// family returns the master and its workers, and remembers them.
func (s *site) family(master int) []int {
	s.t.Helper()
	var pids []int
	// The master forks its workers after it has read its configuration,
	// and again after a worker died: wait for them.
	for end := time.Now().Add(2 * time.Second); len(pids) < 2 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		pids = []int{master}
		matches, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", master))
		for _, m := range matches {
			b, _ := os.ReadFile(m)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	if len(pids) < 2 {
		s.t.Fatalf("nginx master %d has no workers", master)
	}
	s.pids = append(s.pids, pids...)
	return pids
}

// reload sends SIGHUP and waits on hotswap's status for the outcome of
// the reload to generation n; it returns the status, whether the reload
// succeeded and when the signal was sent.
func (s *site) reload(n int) (supervisor.Status, bool, time.Time) {
	s.t.Helper()
	var hup time.Time
	st, ok := ctltest.Reload(s.hs, n, 15*time.Second, func() {
		hup = time.Now()
		s.hs.Signal(syscall.SIGHUP)
	})
	return st, ok, hup
}

// waitVersion polls the public address on new connections until version
// answers.
func (s *site) waitVersion(version string) {
	s.t.Helper()
	proctest.WaitVersion(s.t, s.addr, version, 5*time.Second)
}

// checkNoOrphans runs after hotswap has stopped: no nginx master or worker
// the test saw may outlive it.
func (s *site) checkNoOrphans() {
	for range 500 {
		if !slices.ContainsFunc(s.pids, proctest.Alive) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, pid := range s.pids {
		if proctest.Alive(pid) {
			s.t.Errorf("nginx process %d outlived hotswap", pid)
		}
	}
}

// TestNginxReloadUnderLoad: 20 configuration changes deployed under load,
// each answered by the new configuration, with no failed request and no
// nginx process of an old generation left behind.
func TestNginxReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	s := startSite(t, "shared", "QUIT")
	run := load.Start(t.Context(), load.Config{Addr: s.addr, Concurrency: 16, Duration: time.Minute})
	const reloads = 20
	var ready, exited, switched []time.Duration
	for n := 2; n <= reloads+1; n++ {
		old := s.family(s.master(n - 1))
		version := "v" + strconv.Itoa(n)
		s.writeVersion(version)
		st, ok, hup := s.reload(n)
		if !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
		ready = append(ready, time.Since(hup))
		s.waitVersion(version)
		switched = append(switched, time.Since(hup))
		ctltest.WaitGone(s.hs, n-1, 15*time.Second)
		exited = append(exited, time.Since(hup))
		for _, pid := range old {
			if proctest.Alive(pid) {
				t.Errorf("generation %d: nginx process %d still running after its master exited", n-1, pid)
			}
		}
	}
	res := run.Stop()
	t.Logf("load: %v; versions seen: %d", res, len(res.Versions))
	t.Logf("SIGHUP to reload succeeded: %s", summary(ready))
	t.Logf("SIGHUP to the new version answering: %s", summary(switched))
	t.Logf("SIGHUP to the old master exited: %s", summary(exited))
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
	}
	if len(res.Versions) != reloads+1 {
		t.Errorf("load saw %d versions, want %d: %v", len(res.Versions), reloads+1, res.Versions)
	}
	if res.OK < 1000 {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	s.hs.Signal(syscall.SIGTERM)
	if code := s.hs.Wait(30 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d after SIGTERM, want 0", code)
	}
}

// TestNginxBadConfigRollsBack: a configuration nginx rejects is rolled
// back with one clear line while the old configuration serves, and the
// next good configuration deploys.
func TestNginxBadConfigRollsBack(t *testing.T) {
	s := startSite(t, "shared", "QUIT")
	s.family(s.master(1))
	run := load.Start(t.Context(), load.Config{Addr: s.addr, Concurrency: 16, Duration: time.Minute})
	time.Sleep(200 * time.Millisecond)
	s.writeTemplate(append(bytes.Clone(s.base), "no_such_directive on;\n"...))
	st, ok, _ := s.reload(2)
	if ok {
		t.Fatalf("reload to a configuration nginx rejects succeeded, want it failed")
	}
	t.Logf("reason: %s", st.LastFailure)
	// The one clear line on stderr is the feature: it is matched as text.
	line := s.hs.WaitLine("hotswap: reload failed", 5*time.Second)
	want := regexp.MustCompile(`^hotswap: reload failed: generation 2 \(pid \d+\) exited with status 1; still serving generation 1 \(pid \d+\)$`)
	if !want.MatchString(line) {
		t.Errorf("got %q, want a line matching %s", line, want)
	}
	if !slices.ContainsFunc(s.hs.Lines(), func(l string) bool { return strings.Contains(l, `unknown directive "no_such_directive"`) }) {
		t.Errorf("nginx's own reason is not on hotswap's stderr")
	}
	if got := proctest.Version(t, s.addr); got != "v1" {
		t.Errorf("after a failed reload: answered by %q, want v1", got)
	}
	s.writeVersion("v3")
	if st, ok, _ := s.reload(3); !ok {
		t.Fatalf("reload after a failure failed: %s", st.LastFailure)
	}
	s.waitVersion("v3")
	res := run.Stop()
	t.Logf("load: %v", res)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
}

// TestNginxTermLoses stops old generations with TERM, nginx's fast
// shutdown, under the same load: requests that old workers had accepted are
// cut, so the zero above is QUIT's graceful drain and the load can see
// failures.
func TestNginxTermLoses(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	s := startSite(t, "shared", "TERM")
	run := load.Start(t.Context(), load.Config{Addr: s.addr, Concurrency: 16, Duration: time.Minute})
	for n := 2; n <= 11; n++ {
		s.writeVersion("v" + strconv.Itoa(n))
		if st, ok, _ := s.reload(n); !ok {
			t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
		}
		ctltest.WaitGone(s.hs, n-1, 15*time.Second)
		time.Sleep(50 * time.Millisecond)
	}
	res := run.Stop()
	t.Logf("stop signal TERM, 10 reloads: %v", res)
	if res.Failed == 0 {
		t.Errorf("nginx stopped with TERM lost nothing: the load cannot see failures")
	}
}

// summary prints the median and maximum of ds.
func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("median %s, max %s over %d reloads",
		s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}
