package reuse

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// What a child does to its copy of a member before it exits.
const (
	leaveAsIs   = iota
	shutItDown  // shutdown(SHUT_RD): the socket leaves the group at once
	makeBlock   // clears O_NONBLOCK, which belongs to the socket
	shrinkQueue // listen(5): so does the backlog
	queueOne    // a connection waits in its queue at its exit
	actions
)

var actNames = []string{"as-is", "shut-down", "blocking", "backlog-5", "queued"}

// TestGroupRecycleAnySequence runs reloads of generations of 1 to 3
// workers, at random: the new generation takes its members, the old one is
// removed through a census, each old child does one of the actions above
// (at most one shuts its socket down),
// the children exit in a random order, and then each kept copy is recycled
// or, where Recycle declines, released, in another random order. After
// every reload the model must match the kernel index by index (a program
// "ret i" for every i puts a connection on the model's i-th socket), the
// group must stay within its bound, a recycled socket must be back as
// hotswap made it, and a reload after one that recycled every old member
// must bind no socket at all.
func TestGroupRecycleAnySequence(t *testing.T) {
	if !inNetns(t) {
		return
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 0))
	recycled := 0
	for trial := range 12 {
		workers := 1 + trial%3
		t.Run(fmt.Sprintf("%d-workers-%d", trial, workers), func(t *testing.T) {
			recycled += recycleTrial(t, rnd, workers, 12)
		})
	}
	if recycled == 0 {
		t.Error("no member was recycled")
	}
}

// recycleTrial runs reloads reloads of a generation of workers members
// and returns how many members were recycled.
func recycleTrial(t *testing.T, rnd *rand.Rand, workers, reloads int) (recycled int) {
	g, err := NewGroup("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.SetSpares(workers)
	spares := max(workers, Spares)
	bound := map[uint64]bool{} // every socket the group has had
	start := func() (cs []*Member, children []int, binds int) {
		n := len(bound)
		for range workers {
			m, err := g.Take()
			if err != nil {
				t.Fatal(err)
			}
			cs, children = append(cs, m), append(children, dupFd(t, m.File()))
		}
		g.mu.Lock()
		for _, m := range g.order {
			bound[m.ino] = true
		}
		g.mu.Unlock()
		return cs, children, len(bound) - n
	}
	steerTo := func(ms []*Member) {
		p := Policy{To: ms[0]}
		if len(ms) > 1 {
			p = Policy{Slots: ms}
		}
		if err := g.Steer(p); err != nil {
			t.Fatal(err)
		}
	}
	old, oldChildren, _ := start()
	steerTo(old)
	allRecycled := false
	for reload := 1; reload <= reloads; reload++ {
		cur, children, binds := start()
		if allRecycled && binds != 0 {
			t.Errorf("reload %d: %d sockets bound after a reload that recycled every old member", reload, binds)
		}
		acts := make([]int, len(old))
		shut := false
		for i, m := range old {
			if acts[i] = rnd.IntN(actions); rnd.IntN(2) == 0 {
				acts[i] = leaveAsIs // half of the children do nothing
			}
			if acts[i] == shutItDown && shut {
				// Two shutdowns between two looks leave in an order
				// nothing shows (docs/kernel.md, "Close order").
				acts[i] = leaveAsIs
			}
			shut = shut || acts[i] == shutItDown
			if acts[i] == queueOne {
				if err := g.Steer(Policy{To: m}); err != nil {
					t.Fatal(err)
				}
				c := queueConn(t, m)
				defer c.Close()
			}
		}
		steerTo(cur)
		cen := NewCensus([]*Group{g})
		for _, m := range old {
			if err := cen.Remove(g, m); err != nil {
				t.Fatal(err)
			}
		}
		for i := range old {
			childActs(t, oldChildren[i], acts[i])
		}
		for _, i := range rnd.Perm(len(old)) {
			unix.Close(oldChildren[i]) // the children's exits
		}
		var steps []string
		n := 0
		for _, i := range rnd.Perm(len(old)) {
			m := old[i]
			had := g.Spares()
			ok, err := g.Recycle(m)
			if err != nil {
				t.Fatal(err)
			}
			want := acts[i] != shutItDown && acts[i] != queueOne && had < 2*spares
			if ok != want {
				t.Errorf("reload %d: Recycle after %s with %d spares: got %v, want %v", reload, actNames[acts[i]], had, ok, want)
			}
			if ok {
				n++
				checkReclaimed(t, m)
			} else if err := g.Release(m); err != nil {
				t.Fatal(err)
			}
			steps = append(steps, fmt.Sprintf("%s:%v", actNames[acts[i]], ok))
		}
		if err := cen.Sync(g); err != nil {
			t.Fatal(err)
		}
		recycled += n
		allRecycled = n == len(old)
		t.Logf("reload %d: bound %d; %s; %d sockets, %d spares", reload, binds, strings.Join(steps, " "), g.Len()+g.Spares(), g.Spares())
		if n, most := g.Len()+g.Spares(), workers+2*spares; n > most {
			t.Errorf("reload %d: the group has %d sockets, want at most %d", reload, n, most)
		}
		checkKernelOrder(t, g)
		old, oldChildren = cur, children
	}
	for _, fd := range oldChildren {
		unix.Close(fd)
	}
	return recycled
}

// dupFd is a raw CLOEXEC duplicate of f: a child's copy, which Go's poller
// never owns (so nothing switches the socket's O_NONBLOCK behind the test).
func dupFd(t *testing.T, f *os.File) int {
	t.Helper()
	var nfd int
	err := sys.Control(f, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return nfd
}

func childActs(t *testing.T, fd, act int) {
	t.Helper()
	var err error
	switch act {
	case shutItDown:
		err = unix.Shutdown(fd, unix.SHUT_RD)
	case makeBlock:
		err = unix.SetNonblock(fd, false)
	case shrinkQueue:
		err = unix.Listen(fd, 5)
	}
	if err != nil {
		t.Fatalf("%s: %v", actNames[act], err)
	}
}

// queueConn dials the group's port, where the program steers to m, and
// waits until the connection is in m's accept queue.
func queueConn(t *testing.T, m *Member) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.g.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		if q, err := m.QueueLen(); err == nil && q == 1 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never reached the member's queue")
		}
	}
}

// checkReclaimed checks that a recycled member's socket is back as the
// group makes one: non-blocking, with the somaxconn backlog.
func checkReclaimed(t *testing.T, m *Member) {
	t.Helper()
	f := m.File()
	var fl int
	if err := sys.Control(f, func(fd int) (err error) { fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); return err }); err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Error("a recycled socket is blocking")
	}
	if _, backlog, err := QueueLen(f); err != nil || int(backlog) != Somaxconn() {
		t.Errorf("a recycled socket's backlog: %d (%v), want %d", backlog, err, Somaxconn())
	}
}

// checkKernelOrder checks the model against the kernel: the same sockets,
// and for every index i a program "ret i" puts a new connection in the
// queue of the model's i-th socket and no other. Then it attaches the
// group's own program again.
func checkKernelOrder(t *testing.T, g *Group) {
	t.Helper()
	g.mu.Lock()
	order := slices.Clone(g.order)
	var via *os.File
	for _, m := range order {
		if m.state == stateListening && via == nil {
			via = m.f
		}
	}
	port := g.port
	g.mu.Unlock()
	ls, err := Listeners("tcp4", port)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != len(order) {
		t.Fatalf("the kernel lists %d sockets, the model has %d", len(ls), len(order))
	}
	for _, m := range order {
		if !listed(ls, m.ino) {
			t.Fatalf("the model's socket %d (%s) is not in the kernel's group", m.ino, m.state)
		}
	}
	for i, want := range order {
		if err := attachProgram(via, retConst(i)); err != nil {
			t.Fatal(err)
		}
		c, err := net.DialTimeout("tcp", g.Addr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := landedOn(t, order)
		c.Close()
		if got != want {
			t.Errorf("ret %d: the connection landed on socket %d, the model has %d there (order %s)", i, got.ino, want.ino, modelOf(order))
		}
	}
	g.mu.Lock()
	g.attachedOK = false // the ret programs replaced the group's
	err = g.attachLocked()
	g.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

// landedOn waits for the one member of order with a queued connection,
// accepts it and returns the member.
func landedOn(t *testing.T, order []*Member) *Member {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		for _, m := range order {
			f := m.File()
			if q, _, err := QueueLen(f); err != nil || q == 0 {
				continue
			}
			err := sys.Control(f, func(fd int) error {
				nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
				if err == nil {
					unix.Close(nfd)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatal("the connection landed on no socket of the model")
	return nil
}

func modelOf(order []*Member) string {
	var b strings.Builder
	for i, m := range order {
		fmt.Fprintf(&b, "%d:%d:%s ", i, m.ino, m.state)
	}
	return b.String()
}
