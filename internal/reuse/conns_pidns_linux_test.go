package reuse

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/sys"
)

// pidnsEnv marks the copy of the test binary that runs as pid 1 of a pid
// namespace of its own.
const pidnsEnv = "HOTSWAP_TEST_IN_PIDNS"

// TestSnapshotInPidNamespace: as pid 1 of a pid namespace under the host's
// /proc (unshare --pid --fork, no --mount-proc, as hotswap runs in
// TestHardeningPid1), where /proc/PID is some other process, Snapshot
// still finds the connection a child's child holds: it reads /proc by the
// pids /proc knows the tree by, not by the namespace's.
func TestSnapshotInPidNamespace(t *testing.T) {
	if os.Getenv(pidnsEnv) == "" {
		proctest.RequireCI(t, proctest.IsRoot(), "root (for unshare --pid)")
		_, err := exec.LookPath("unshare")
		proctest.RequireCI(t, err == nil, "unshare (util-linux)")
		cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", os.Args[0], "-test.run", "^TestSnapshotInPidNamespace$", "-test.v")
		cmd.Env = append(os.Environ(), pidnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in a pid namespace: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		return
	}
	if os.Getpid() != 1 {
		t.Fatalf("pid %d, want 1 in the new namespace", os.Getpid())
	}
	if pids, err := sys.NewProcPids(); err != nil || pids.Same() {
		t.Fatalf("ProcPids %+v, %v: want /proc in another namespace (it is the host's)", pids, err)
	}
	ln, p := listenLoopback(t)
	pair := dialPairs(t, ln, 1)[0]
	f, err := pair.served.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := holdInGrandchild(t, f)
	f.Close()
	pair.served.Close()
	set, err := Snapshot(cmd.Process.Pid, []Port{p}, nil)
	if err != nil || len(set.Conns) != 1 {
		t.Fatalf("Snapshot of pid %d: %+v, %v; want the 1 connection its child holds", cmd.Process.Pid, set, err)
	}
}
