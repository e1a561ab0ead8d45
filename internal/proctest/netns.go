package proctest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// netnsEnv names the test re-run inside the namespace; netnsParentEnv
// carries the outer namespace, which the inner run must not be in.
const (
	netnsEnv       = "HOTSWAP_TEST_NETNS"
	netnsParentEnv = "HOTSWAP_TEST_NETNS_PARENT"
)

// InNetns runs the calling test in a private network namespace whose only
// interface is lo, so it may set sysctls such as net.ipv4.tcp_migrate_req
// without touching the host's. It returns false in the outer process, where
// the test re-ran itself under `unshare -n` and has already reported the
// inner run's outcome; the caller then returns at once. It needs root:
// under CI=true its absence is a failure, elsewhere a skip.
//
//	func TestX(t *testing.T) {
//		if !proctest.InNetns(t) {
//			return
//		}
//		... // runs inside the namespace
//	}
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		if self, err := os.Readlink("/proc/self/ns/net"); err != nil || self == os.Getenv(netnsParentEnv) {
			t.Fatalf("not in a private network namespace: %s (outer %s): %v", self, os.Getenv(netnsParentEnv), err)
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	_, err := exec.LookPath("unshare")
	RequireCI(t, IsRoot() && err == nil, "root and unshare(1) for a private network namespace")
	outer, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "--", exe, "-test.run", "^" + regexp.QuoteMeta(strings.Split(t.Name(), "/")[0]) + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(t.Context(), "unshare", args...)
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name(), netnsParentEnv+"="+outer)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log("netns: " + line)
	}
	if err != nil {
		t.Fatalf("test in a private network namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("test in a private network namespace did not pass")
	}
	return false
}

// SetSysctl writes a sysctl; only for use inside [InNetns].
func SetSysctl(t testing.TB, name, value string) {
	t.Helper()
	if os.Getenv(netnsEnv) == "" {
		t.Fatalf("SetSysctl %s outside a private network namespace", name)
	}
	p := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}
