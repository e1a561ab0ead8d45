package reuse

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// netnsEnv carries the parent's network-namespace link into the re-executed
// test, which refuses to run in that same namespace.
const netnsEnv = "HOTSWAP_REUSE_NETNS"

// inNetns runs the calling top-level test inside a new network namespace
// with only lo up and tcp_migrate_req=0. In the parent it re-executes the
// test binary under "unshare -n", relays its output and returns false; in
// the child it returns true and the test body runs. Without root it skips,
// unless CI=true, where it fails.
func inNetns(t *testing.T) bool {
	t.Helper()
	if parent := os.Getenv(netnsEnv); parent != "" {
		netnsSetup(t, parent)
		return true
	}
	if os.Geteuid() != 0 {
		needComponent(t, "root (for a private network namespace)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		needComponent(t, "unshare(1)")
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "--", exe, "-test.run=^" + t.Name() + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(t.Context(), unshare, args...)
	cmd.Env = append(os.Environ(), netnsEnv+"="+self)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log("netns: " + line)
	}
	if err != nil {
		t.Fatalf("test in network namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("test in network namespace did not pass")
	}
	return false
}

func needComponent(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s (CI=true: not skipping)", what)
	}
	t.Skipf("needs %s", what)
}

var netnsOnce sync.Once

// netnsSetup brings lo up in the private namespace, after checking that it
// is not the parent's, and checks tcp_migrate_req=0.
func netnsSetup(t *testing.T, parent string) {
	t.Helper()
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil || self == parent {
		t.Fatalf("not in a private network namespace: %s (parent %s): %v", self, parent, err)
	}
	var setupErr error
	netnsOnce.Do(func() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			setupErr = &os.PathError{Op: "ip link set lo up", Path: string(out), Err: err}
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if m, err := MigrateReq(); err != nil || m != 0 {
		t.Fatalf("got tcp_migrate_req %d (%v), want 0", m, err)
	}
}

// sink accepts on a dup of a member, as a child generation would, and
// records which sink each client port landed on.
type sink struct {
	ln   net.Listener
	name string
	seen *sync.Map // client port -> sink name
	wg   sync.WaitGroup
}

func newSink(t *testing.T, f *os.File, name string, seen *sync.Map) *sink {
	t.Helper()
	ln, err := net.FileListener(f) // a CLOEXEC dup: the child's copy
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, name: name, seen: seen}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.seen.Store(c.RemoteAddr().(*net.TCPAddr).Port, name)
			c.Close()
		}
	})
	t.Cleanup(s.close)
	return s
}

// close is the child's final close of its copy.
func (s *sink) close() {
	s.ln.Close()
	s.wg.Wait()
}

// landed dials addr count times (from source when it is non-nil) and
// returns how many connections each sink accepted.
func landed(t *testing.T, seen *sync.Map, count int, dial func() (net.Conn, error)) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range count {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.TCPAddr).Port
		deadline := time.Now().Add(2 * time.Second)
		for {
			if v, ok := seen.LoadAndDelete(port); ok {
				got[v.(string)]++
				break
			}
			if time.Now().After(deadline) {
				got["none"]++
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		c.Close()
	}
	return got
}

// lineServer answers one request line per connection with "OK <name>\n".
func serveLine(c net.Conn, name string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return
	}
	c.Write([]byte("OK " + name + "\n"))
}
