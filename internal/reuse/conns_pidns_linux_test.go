package reuse

import (
	"net"
	"testing"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/sys"
)

// TestSnapshotInPidNamespace: as pid 1 of a pid namespace under the host's
// /proc (unshare --pid --fork, no --mount-proc, as hotswap runs in
// TestHardeningPid1), where /proc/PID is some other process, Snapshot
// still finds the connection a child's child holds: it reads /proc by the
// pids /proc knows the tree by, not by the namespace's.
func TestSnapshotInPidNamespace(t *testing.T) {
	if !proctest.InPidNamespace(t) {
		return
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
