package reuse

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
)

// Errors returned by [Group] and [Member].
var (
	ErrClosed    = errors.New("reuse: group closed")
	ErrNotMember = errors.New("reuse: not a member of this group")
	ErrNotActive = errors.New("reuse: member is not listening")
	ErrRemoved   = errors.New("reuse: member removed")
)

// Group is one SO_REUSEPORT group of TCP listeners on one address, owned by
// the supervisor, with a classic BPF program that steers new connections
// between its members.
//
// The kernel numbers the members of a group by the order of listen(), and
// when a member leaves it moves the last member into the freed slot; an
// index the program returns that is out of range falls back to the hash
// over all members (docs/kernel.md, "Steering indices"). Group keeps an exact model of
// that order and re-attaches the program after every membership change,
// always through a listening member, so the program names only indices of
// current members: a member appended by [Group.Activate] receives nothing
// until a [Policy] names it.
//
// A member whose supervisor copy was closed by [Group.Remove] while a child
// still holds a descriptor stays in the group, at its index, until the
// child's last close. Group notices that on the next call that changes or
// reads the order, or on [Group.Sync], which the supervisor should call as
// soon as the child that held it has exited.
type Group struct {
	network string
	probe   *os.File // bound, never connected: reserves the probe port
	probeAP netip.AddrPort

	mu      sync.Mutex // guards the fields below
	address string     // with the port fixed by the first member
	port    int
	order   []*Member // kernel index order: listening and leaving members
	pol     Policy
	closed  bool
	frozen  bool // another process steers the group now: attach nothing
}

// Member is one socket of a [Group]: added (bound, not listening), then
// listening, then removed.
type Member struct {
	g     *Group
	f     *os.File // the supervisor's copy; nil once removed
	ino   uint64
	state memberState
}

type memberState int

const (
	stateAdded     memberState = iota // bound, not listening: receives nothing
	stateListening                    // in the group, supervisor holds a copy
	stateLeaving                      // in the group, held only by others
	stateGone                         // out of the group
)

// Policy says where new connections go. The zero Policy, and any role whose
// member has been removed, falls back to the oldest listening member, so
// the group never relies on the hash.
type Policy struct {
	// To receives every new connection that is not a probe (or Percent of
	// them when Other is set).
	To *Member
	// Other, when set, receives 100-Percent percent of new connections,
	// chosen per SYN with SKF_AD_RANDOM.
	Other   *Member
	Percent int
	// Probe, when set, receives the connections whose source is
	// [Group.ProbeAddr]: a readiness probe through the public port reaches
	// exactly this member.
	Probe *Member
}

// NewGroup prepares a group for network ("tcp", "tcp4" or "tcp6") and
// address. With port 0 the first member's port is used for every later
// member. NewGroup binds no listener; it reserves the probe source port.
func NewGroup(network, address string) (*Group, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("new group %s %s: %w", network, address, net.UnknownNetworkError(network))
	}
	port, err := addressPort(address)
	if err != nil {
		return nil, fmt.Errorf("new group %s: %w", address, err)
	}
	g := &Group{network: network, address: address, port: port}
	if g.probe, g.probeAP, err = reserveProbe(network, address); err != nil {
		return nil, fmt.Errorf("new group %s: reserve probe port: %w", address, err)
	}
	return g, nil
}

// Addr returns the group's address; its port is 0 until the first Add.
func (g *Group) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.address
}

// ProbeAddr is the source address and port that [Policy.Probe] matches.
// The group holds a bound socket on it, so no ephemeral connect() takes the
// port. Dial probes with [Group.DialProbe] (one at a time).
func (g *Group) ProbeAddr() netip.AddrPort { return g.probeAP }

// Add creates a new SO_REUSEPORT sibling bound to the group's address. It
// is not listening, so it receives nothing until [Group.Activate].
func (g *Group) Add() (*Member, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	f, ino, port, err := bindSibling(g.network, g.address)
	if err != nil {
		return nil, fmt.Errorf("add member %s: %w", g.address, err)
	}
	if g.port == 0 {
		host, _, _ := net.SplitHostPort(g.address)
		g.port, g.address = port, net.JoinHostPort(host, strconv.Itoa(port))
	}
	return &Member{g: g, f: f, ino: ino}, nil
}

// Activate calls listen() (backlog somaxconn) on an added member, which
// joins the group at the end of the index order, and re-attaches the
// program, which does not name the new index.
func (g *Group) Activate(m *Member) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.checkLocked(m, stateAdded); err != nil {
		return fmt.Errorf("activate member: %w", err)
	}
	if err := g.syncLocked(); err != nil {
		return fmt.Errorf("activate member: %w", err)
	}
	if err := listenSibling(m.f); err != nil {
		return fmt.Errorf("activate member %s: %w", g.address, err)
	}
	m.state = stateListening
	g.order = append(g.order, m)
	return g.attachLocked()
}

// Adopt records f, a socket that already listens in the group (handed
// over by the process that created it), as a member at the end of the
// index order, where the kernel has it only if every other socket of the
// group is already a member: with a fresh Group, f must be the group's only
// socket, and it becomes index 0. Adopt takes f; the member is listening,
// and [Group.Remove] closes the copy as for any other member.
func (g *Group) Adopt(f *os.File) (_ *Member, retErr error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer func() {
		if retErr != nil {
			f.Close()
		}
	}()
	if g.closed {
		return nil, ErrClosed
	}
	ino, port, err := inspectListener(f)
	if err != nil {
		return nil, fmt.Errorf("adopt member %s: %w", g.address, err)
	}
	if g.port != 0 && port != g.port {
		return nil, fmt.Errorf("adopt member %s: socket listens on port %d: %w", g.address, port, ErrNotMember)
	}
	live, err := listeningInodes(g.network, port)
	if err != nil {
		return nil, fmt.Errorf("adopt member %s: %w", g.address, err)
	}
	if !live[ino] {
		return nil, fmt.Errorf("adopt member %s: %w", g.address, ErrNotActive)
	}
	if len(live) != len(g.order)+1 {
		return nil, fmt.Errorf("adopt member %s: the group has %d sockets, the model %d besides this one: %w", g.address, len(live), len(g.order), ErrNotMember)
	}
	if g.port == 0 {
		host, _, _ := net.SplitHostPort(g.address)
		g.port, g.address = port, net.JoinHostPort(host, strconv.Itoa(port))
	}
	m := &Member{g: g, f: f, ino: ino, state: stateListening}
	g.order = append(g.order, m)
	return m, g.attachLocked()
}

// Freeze makes the group stop attaching programs, because another process
// (a new supervisor that adopted a member) steers it now. Remove, Sync and
// Steer still update the model and close copies. [Group.Thaw] undoes it.
func (g *Group) Freeze() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.frozen = true
}

// Thaw lets a frozen group attach again, and re-attaches its program at
// once, replacing whatever another process attached meanwhile.
func (g *Group) Thaw() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	g.frozen = false
	if err := g.syncLocked(); err != nil {
		return err
	}
	return g.attachLocked()
}

// Remove closes the supervisor's copy of m and re-attaches the program
// without it. A listening member should be steered away from and drained
// first. If a child still holds m, the socket stays in the group, at its
// index and receiving nothing, until the child closes it: close the
// supervisor's copy before the child's final close, so that the child's
// close is the last (docs/kernel.md, "Close order"), then call [Group.Sync]
// once the child has exited.
func (g *Group) Remove(m *Member) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.checkLocked(m, -1); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	if m.f == nil {
		return nil
	}
	if m.state == stateAdded {
		m.state = stateGone
		return closeNil(&m.f)
	}
	g.pol = g.pol.without(m)
	m.state = stateLeaving // the program must no longer name it
	if err := g.attachLocked(); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	if err := closeNil(&m.f); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return g.syncLocked()
}

// Sync updates the model for members whose socket left the group since the
// last call (a child holding the last copy closed it or exited) and
// re-attaches the program. Each departure moves the last member into the
// freed slot; departures found together are applied in the order of their
// Remove calls.
func (g *Group) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	return g.syncLocked()
}

// Len returns the number of sockets in the group's index order, including
// removed members that a child still holds.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.order)
}

// Index returns m's current index in the kernel's order, or -1 and false.
func (g *Group) Index(m *Member) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.order, m)
	return i, i >= 0
}

// Steer compiles p for the current index order and attaches it. Every
// member p names must be listening.
func (g *Group) Steer(p Policy) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if p.Percent < 0 || p.Percent > 100 {
		return fmt.Errorf("steer %s: percent %d out of range", g.address, p.Percent)
	}
	for _, m := range []*Member{p.To, p.Other, p.Probe} {
		if m == nil {
			continue
		}
		if err := g.checkLocked(m, stateListening); err != nil {
			return fmt.Errorf("steer %s: %w", g.address, err)
		}
	}
	if err := g.syncLocked(); err != nil {
		return fmt.Errorf("steer %s: %w", g.address, err)
	}
	g.pol = p
	return g.attachLocked()
}

// Close closes every copy the group holds and the probe reservation. It is
// idempotent.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	for _, m := range g.order {
		errs = append(errs, closeNil(&m.f))
		m.state = stateGone
	}
	g.order = nil
	errs = append(errs, closeNil(&g.probe))
	return errors.Join(errs...)
}

// File returns the supervisor's copy of the member's socket, to pass to a
// child as ExtraFiles or to duplicate. It is nil after Remove. The file is
// not registered with Go's poller, so os/exec's Fd() leaves it as it is.
func (m *Member) File() *os.File {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	return m.f
}

// QueueLen returns the member's current accept-queue length (TCP_INFO
// tcpi_unacked). It does not count request sockets still in SYN_RECV.
func (m *Member) QueueLen() (uint32, error) {
	m.g.mu.Lock()
	f := m.f
	m.g.mu.Unlock()
	if f == nil {
		return 0, ErrRemoved
	}
	return acceptQueue(f)
}

func (g *Group) checkLocked(m *Member, want memberState) error {
	switch {
	case g.closed:
		return ErrClosed
	case m == nil || m.g != g:
		return ErrNotMember
	case m.state == stateGone || (m.f == nil && want >= 0):
		return ErrRemoved
	case want == stateAdded && m.state != stateAdded:
		return fmt.Errorf("member already listening: %w", ErrNotMember)
	case want == stateListening && m.state != stateListening:
		return ErrNotActive
	}
	return nil
}

// syncLocked drops leaving members whose socket no longer listens, with
// the kernel's swap-with-last rule, and re-attaches if anything changed.
func (g *Group) syncLocked() error {
	var leaving []*Member
	for _, m := range g.order {
		if m.state == stateLeaving {
			leaving = append(leaving, m)
		}
	}
	if len(leaving) == 0 {
		return nil
	}
	live, err := listeningInodes(g.network, g.port)
	if err != nil {
		return fmt.Errorf("sync group %s: %w", g.address, err)
	}
	changed := false
	for _, m := range leaving {
		if live[m.ino] {
			continue
		}
		i := slices.Index(g.order, m)
		last := len(g.order) - 1
		g.order[i] = g.order[last]
		g.order = g.order[:last]
		m.state = stateGone
		changed = true
	}
	if !changed {
		return nil
	}
	return g.attachLocked()
}

// attachLocked compiles the policy for the current order and attaches it
// through a listening member the supervisor holds.
func (g *Group) attachLocked() error {
	if g.frozen {
		return nil
	}
	var via *Member
	for _, m := range g.order {
		if m.state == stateListening {
			via = m
			break
		}
	}
	if via == nil {
		return nil // nothing listening that we hold: nothing to steer
	}
	raw, err := g.programLocked(via).compile()
	if err != nil {
		return err
	}
	if err := attachProgram(via.f, raw); err != nil {
		return fmt.Errorf("attach steering program %s: %w", g.address, err)
	}
	return nil
}

// programLocked maps the policy to indices; oldest is the fallback target.
func (g *Group) programLocked(oldest *Member) program {
	idx := func(m *Member) int {
		if m == nil || m.state != stateListening {
			return -1
		}
		return slices.Index(g.order, m)
	}
	p := program{to: idx(g.pol.To), other: idx(g.pol.Other), pct: g.pol.Percent,
		probe: idx(g.pol.Probe), probeSrc: g.probeAP}
	if p.to < 0 {
		p.to, p.pct = p.other, 100
	}
	if p.to < 0 {
		p.to = slices.Index(g.order, oldest)
	}
	return p
}

// without drops every role m plays.
func (p Policy) without(m *Member) Policy {
	if p.To == m {
		p.To, p.Other, p.Percent = p.Other, nil, 100
	}
	if p.Other == m {
		p.Other, p.Percent = nil, 100
	}
	if p.Probe == m {
		p.Probe = nil
	}
	return p
}

func closeNil(f **os.File) error {
	if *f == nil {
		return nil
	}
	err := (*f).Close()
	*f = nil
	return err
}
