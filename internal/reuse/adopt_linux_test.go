package reuse

import (
	"os"
	"testing"
)

// dupFile is a CLOEXEC dup of f, as a self-upgrade hands it over.
func dupFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	return os.NewFile(uintptr(dupFd(t, f)), "dup")
}

// TestGroupAdopt is a self-upgrade in one process: the old group freezes,
// a new group adopts its only member (index 0) and adds its own (index 1);
// the old group's Remove attaches nothing; once the adopted socket's last
// copy closes, the new group's Sync applies swap-with-last. The model
// matches the kernel at every step.
func TestGroupAdopt(t *testing.T) {
	if !inNetns(t) {
		return
	}
	old, ms, sinks, seen := modelGroup(t, "tcp4", "127.0.0.1:0", 1)
	a := ms[0]
	dial := dialer("tcp", old.Addr())
	old.Freeze()

	g, err := NewGroup("tcp4", old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Adopt(dupFile(t, g.probe)); err == nil {
		t.Error("adopt a socket that does not listen: got nil error")
	}
	am, err := g.Adopt(dupFile(t, a.File()))
	if err != nil {
		t.Fatal(err)
	}
	sinks[am] = sinks[a]
	wantOrder(t, g, sinks, "A")
	checkModel(t, g, sinks, seen)

	b, err := g.Add()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Activate(b); err != nil {
		t.Fatal(err)
	}
	sinks[b] = newSink(t, b.File(), "B", seen)
	wantOrder(t, g, sinks, "AB")
	checkModel(t, g, sinks, seen)

	other, err := NewGroup("tcp4", old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Adopt(dupFile(t, a.File())); err == nil {
		t.Error("adopt one of two sockets into an empty model: got nil error")
	}

	if err := g.Steer(Policy{To: b}); err != nil {
		t.Fatal(err)
	}
	if err := old.Remove(a); err != nil { // frozen: attaches nothing
		t.Fatal(err)
	}
	if err := old.Steer(Policy{}); err != nil {
		t.Fatal(err)
	}
	if got := landed(t, seen, 10, dial); got["B"] != 10 {
		t.Errorf("after the frozen group's Remove and Steer: got %v, want 10 on B", got)
	}

	if err := g.Remove(am); err != nil {
		t.Fatal(err)
	}
	wantOrder(t, g, sinks, "AB") // the old child still holds A
	sinks[a].close()             // its final close
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	wantOrder(t, g, sinks, "B")
	checkModel(t, g, sinks, seen)

	if err := old.Thaw(); err != nil {
		t.Fatal(err)
	}
	// Thawed, it listens spares again and so finds B, the new group's
	// member, which it records as foreign.
	if n := old.Len(); n != 1 {
		t.Errorf("old group after its member left: %d members, want 1 (B, foreign to it)", n)
	}
}
