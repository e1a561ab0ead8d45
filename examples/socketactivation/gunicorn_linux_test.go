package socketactivation_test

import (
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

const hotswapPkg = proctest.HotswapPkg

func TestMain(m *testing.M) { proctest.HelperMain(m, nil) }

// gunicornBinary returns Debian's gunicorn, failing under CI=true when
// missing.
func gunicornBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("gunicorn")
	if err != nil {
		bin = ""
		if _, err := os.Stat("/usr/bin/gunicorn"); err == nil {
			bin = "/usr/bin/gunicorn"
		}
	}
	proctest.RequireCI(t, bin != "", "gunicorn (Debian package gunicorn)")
	return bin
}

// TestGunicornReloadUnderLoad runs Debian's gunicorn, unmodified, under
// hotswap: it takes the socket from LISTEN_FDS (checking LISTEN_PID against
// its own pid) and reports READY=1 on NOTIFY_SOCKET, like under systemd.
// 10 deploys of a new application version under load lose no request.
func TestGunicornReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow end-to-end test")
	}
	gunicorn := gunicornBinary(t)
	hotswap := proctest.Build(t, hotswapPkg)
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	verFile := filepath.Join(t.TempDir(), "version")
	writeVersion(t, verFile, "v1")
	cmd := exec.Command(hotswap, "--log-format", "json", "-l", "tcp://127.0.0.1:0",
		"--ready", "notify", "--drain-timeout", "10s",
		"--", gunicorn, "--workers", "2", "--chdir", dir, "app:app")
	cmd.Env = append(os.Environ(), "APP_VERSION_FILE="+verFile)
	hs := proctest.StartCmd(t, cmd)
	addr := ctltest.WaitServing(hs, 1, 15*time.Second).Listeners[0].Address
	// gunicorn's stderr reaches hotswap's through the generation's tee,
	// which may pass its line on after READY=1 has come.
	says := func(l string) bool { return strings.Contains(l, "Listening at: http://"+addr) }
	for end := time.Now().Add(5 * time.Second); !slices.ContainsFunc(hs.Lines(), says); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gunicorn does not say it listens on %s, the socket hotswap handed over", addr)
		}
	}
	proctest.WaitVersion(t, addr, "v1", 5*time.Second)

	run := load.Start(t.Context(), load.Config{Addr: addr, Concurrency: 16, Duration: time.Minute})
	const reloads = 10
	var took []time.Duration
	for n := 2; n <= reloads+1; n++ {
		version := "v" + strconv.Itoa(n)
		writeVersion(t, verFile, version)
		hup := time.Now()
		ctltest.Replace(hs, n, 30*time.Second, func() { hs.Signal(syscall.SIGHUP) })
		proctest.WaitVersion(t, addr, version, 5*time.Second)
		took = append(took, time.Since(hup))
	}
	res := run.Stop()
	slices.Sort(took)
	t.Logf("load: %v; versions seen: %d", res, len(res.Versions))
	t.Logf("SIGHUP to new version answering and old master exited: median %s, max %s",
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	if res.Failed != 0 {
		t.Errorf("%d failed requests over %d reloads, want 0: %v", res.Failed, reloads, res.Errors)
	}
	if len(res.Versions) != reloads+1 {
		t.Errorf("load saw %d versions, want %d: %v", len(res.Versions), reloads+1, res.Versions)
	}
	if res.OK < 1000 {
		t.Errorf("only %d requests succeeded: the load did not run", res.OK)
	}
	hs.Signal(syscall.SIGTERM)
	if code := hs.Wait(30 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d after SIGTERM, want 0", code)
	}
}

// writeVersion replaces the version file whole, as a deploy would: gunicorn
// sends READY=1 from its arbiter before its workers have booted, so a
// worker of the generation just deployed may still be importing app (and
// reading the file) when the next version is written; an in-place write
// could hand it an empty file (CI saw 1,378 answers without a version).
func writeVersion(t *testing.T, path, v string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
