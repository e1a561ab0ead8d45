package reuse

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSteerPoolSplit: a pool policy splits new connections evenly between
// its slots and never sends one to a member it does not name.
func TestSteerPoolSplit(t *testing.T) {
	if !inNetns(t) {
		return
	}
	g, ms, _, seen := modelGroup(t, "tcp4", "127.0.0.1:0", 4)
	if err := g.Steer(Policy{Slots: []*Member{ms[1], ms[2], ms[3]}, Probe: ms[0]}); err != nil {
		t.Fatal(err)
	}
	const n = 900
	got := landed(t, seen, n, dialer("tcp", g.Addr()))
	t.Logf("3 slots: %v", got)
	for _, name := range []string{"B", "C", "D"} {
		if got[name] < n/3-90 || got[name] > n/3+90 {
			t.Errorf("got %v, want %d ±90 on %s and nothing on A", got, n/3, name)
		}
	}
	if got["A"] != 0 || got["none"] != 0 {
		t.Errorf("got %v, want nothing on A (the probe member) and every connection landed", got)
	}
	// A slot removed from the pool (its worker crashed) gets nothing.
	if err := g.Steer(Policy{Slots: []*Member{ms[1], ms[3]}}); err != nil {
		t.Fatal(err)
	}
	if got := landed(t, seen, 200, dialer("tcp", g.Addr())); got["B"]+got["D"] != 200 || got["B"] < 60 || got["D"] < 60 {
		t.Errorf("2 slots: got %v, want 200 split between B and D", got)
	}
}

// TestSteerByCPU: with ByCPU, every connection whose SYN a CPU handled goes
// to that CPU's member. On loopback the SYN is handled on the CPU of the
// connecting thread, so the test pins its dialing thread.
func TestSteerByCPU(t *testing.T) {
	if !inNetns(t) {
		return
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		t.Skipf("needs 2 CPUs, may run on %v", cpus)
	}
	g, ms, _, seen := modelGroup(t, "tcp4", "127.0.0.1:0", 2)
	by := make([]*Member, cpus[1]+1)
	by[cpus[0]], by[cpus[1]] = ms[0], ms[1]
	if err := g.Steer(Policy{Slots: ms, ByCPU: by}); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.SchedSetaffinity(0, &set)
	for i, want := range []string{"A", "B"} {
		var one unix.CPUSet
		one.Set(cpus[i])
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		got := landed(t, seen, 300, dialer("tcp", g.Addr()))
		t.Logf("dialing on CPU %d: %v", cpus[i], got)
		if got[want] != 300 {
			t.Errorf("dialing on CPU %d: got %v, want 300 on %s", cpus[i], got, want)
		}
	}
}
