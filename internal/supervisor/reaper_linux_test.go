package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"golang.org/x/sys/unix"
)

// waitZombie waits until pid has exited and is not yet reaped.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
	}
	t.Fatalf("pid %d did not become a zombie", pid)
}

// TestReaperLeavesOwnChildren (issue 15, item 14): an exec: probe runs in a
// process group of its own; when it has exited and its cmd.Wait has not
// reaped it yet (1 in ~250 probes under CPU load), a sweep took it for an
// orphan and reaped it, and the probe failed with "waitid: no child
// processes". Here the window is held open: the probe's zombie survives
// the sweep and its Wait reports exit 0. A real orphan (a grandchild
// re-parented to this subreaper) is still reaped.
func TestReaperLeavesOwnChildren(t *testing.T) {
	s := &Supervisor{log: hclog.NewNullLogger(), done: make(chan struct{})}
	r, err := newReaper(s)
	if err != nil {
		t.Fatal(err)
	}
	if !r.pidfds {
		t.Fatal("this kernel gives no pidfds; the reaper falls back to its process group rule")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	probe := exec.Command("true")
	probe.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as healthgate's exec probe
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	waitZombie(t, probe.Process.Pid)
	r.sweep(map[int]time.Time{})
	if err := probe.Wait(); err != nil {
		t.Errorf("the probe's own Wait after a sweep: %v, want exit 0", err)
	}

	sh := exec.Command("sh", "-c", "sleep 0.2 & echo $!")
	out, err := sh.Output()
	if err != nil {
		t.Fatal(err)
	}
	var orphan int
	fmt.Sscan(string(out), &orphan)
	waitZombie(t, orphan)
	r.sweep(map[int]time.Time{})
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); !os.IsNotExist(err) {
		t.Errorf("orphan %d not reaped by the sweep", orphan)
	}
	if r.reaped != 1 {
		t.Errorf("reaped %d, want 1", r.reaped)
	}
}

// TestHeldPidfdsInPidNamespace: as pid 1 of a pid namespace under the
// host's /proc, the pidfd os/exec holds for a child names it by the pid
// waitid reports, so the reaper leaves it to its cmd.Wait.
func TestHeldPidfdsInPidNamespace(t *testing.T) {
	if !proctest.InPidNamespace(t) {
		return
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	held, err := heldPidfds()
	if err != nil || !held[cmd.Process.Pid] {
		t.Fatalf("heldPidfds: %v, %v; want pid %d among them", held, err, cmd.Process.Pid)
	}
}
