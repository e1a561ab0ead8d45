package reuse

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hotswap-dev/hotswap/internal/sys"
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
//
// Departures the model sees together are applied in the order of the
// closes that made them, which it knows only for closes of its own. A
// supervisor that stops several children at once therefore removes their
// members through a [Census], which keeps its copies, and releases each
// ([Group.Release]) once its child has exited: its close is then the last,
// so each socket leaves at a call of the supervisor's, in an order the
// model follows, however the children's exits interleave (docs/kernel.md,
// "Close order"). Or, when nothing else can hold it any more, it makes the
// member a spare again ([Group.Recycle]), for the next [Group.Take]: then
// nothing leaves at all.
type Group struct {
	network string
	probe   *os.File // bound, never connected: reserves the probe port
	probeAP netip.AddrPort

	mu      sync.Mutex // guards the fields below
	address string     // with the port fixed by the first member
	// bound is the address every member binds, as sock_diag lists it
	// (4 bytes for an AF_INET socket, 16 for AF_INET6): the kernel joins
	// only sockets bound to the same address (and family) into a group,
	// so other listeners on the port, on other addresses, are not its.
	// It is what getsockname reports for the first member (boundOK),
	// and every later member binds it, so a name is resolved once.
	// Before the first member no listener is the group's.
	bound   netip.Addr
	boundOK bool
	zone    string // the address's IPv6 zone, for binding
	port    int
	order   []*Member // kernel index order: listening and leaving members
	pol     Policy
	closed  bool
	frozen  bool       // another process steers the group now: attach nothing
	spares  int        // spare sockets Take keeps at the tail; 0: Spares
	foreign []Listener // found by Activate, for the next Audit to report
	lost    []*Member  // likewise
	// attached is the program last attached, valid while attachedOK: the
	// kernel keeps it with the group, whichever member leaves.
	attached   program
	attachedOK bool
	// released are the leaving members whose copy the supervisor closed,
	// in the order of the closes, until they leave: the order in which
	// departures seen together are applied.
	released []*Member
	// changes counts the changes of the model's membership (a listen or
	// close of ours, a departure or a foreign socket seen), for a
	// [Census] to tell whether its read predates the model.
	changes atomic.Uint64
}

// Member is one socket of a [Group]: added (bound, not listening), then
// listening, then removed.
type Member struct {
	g *Group
	f *os.File // the supervisor's copy; nil once removed
	// held is the copy a removal through a Census kept, leaving, until
	// Release: the socket leaves the group at that close.
	held  *os.File
	ino   uint64
	state memberState
	spare bool // listening at the tail, no one's yet (Take)
}

type memberState int

const (
	stateAdded     memberState = iota // bound, not listening: receives nothing
	stateListening                    // in the group, supervisor holds a copy
	stateLeaving                      // in the group, no longer steered to
	stateGone                         // out of the group
	stateForeign                      // in the group, never ours (Audit)
)

func (st memberState) String() string {
	switch st {
	case stateAdded:
		return "added"
	case stateListening:
		return "listening"
	case stateLeaving:
		return "leaving"
	case stateForeign:
		return "foreign"
	}
	return "gone"
}

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
	// Slots, when set and To is not, are the members of a worker pool
	// (one per worker): new connections are split evenly between them,
	// chosen per SYN with SKF_AD_RANDOM.
	Slots []*Member
	// ByCPU, when set, sends a new connection to ByCPU[c], c being the
	// CPU that handled the SYN (SKF_AD_CPU): the worker pinned to that
	// CPU. A CPU without a member falls back to Slots.
	ByCPU []*Member
	// Canary, when set with Slots, are the workers of a canary pool: they
	// receive Percent percent of new connections (chosen per SYN with
	// SKF_AD_RANDOM), split evenly between them; the rest go to Slots
	// and ByCPU as without it.
	Canary []*Member
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
	if host, _, err := net.SplitHostPort(address); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			g.zone = ip.Zone()
		}
	}
	if g.probe, g.probeAP, err = reserveProbe(network, address); err != nil {
		return nil, fmt.Errorf("new group %s: reserve probe port: %w", address, err)
	}
	return g, nil
}

// inGroup returns the listeners of ls that can be in the group of sockets
// bound to bound: the same address, in the same family. Two groups on one
// port and different addresses (127.0.0.1:80 and 127.0.0.2:80, or an IPv6
// wildcard and an IPv4 one) are separate groups; counting one's sockets as
// foreign to the other would put them in its index order. ls is not
// modified.
func inGroup(ls []Listener, bound netip.Addr) []Listener {
	other := func(l Listener) bool { return l.Addr.Addr() != bound }
	if !slices.ContainsFunc(ls, other) {
		return ls
	}
	return slices.DeleteFunc(slices.Clone(ls), other)
}

// euid is hotswap's effective uid, which it never changes (a member's
// owner as sock_diag lists it).
var euid = sync.OnceValue(func() uint32 { return uint32(os.Geteuid()) })

// diagNetworkLocked is the network whose sockets can take the group's
// connections, for sock_diag: sockets of one family only for an address
// of that family. The kernel joins only sockets of one family into a
// group, and for an IPv4 address, the unspecified one included, prefers
// an IPv4 listener to any IPv6 one (compute_score), so no IPv6 socket
// takes an IPv4 group's connections, and an IPv6 group on a specific
// address gets no IPv4 ones. Only an IPv6 wildcard group (or a name)
// shares its connections with both families. g.mu is held.
func (g *Group) diagNetworkLocked() string {
	if g.network != "tcp" {
		return g.network
	}
	host, _, err := net.SplitHostPort(g.address)
	if err != nil {
		return g.network
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return g.network
	case ip.Is4():
		return "tcp4"
	case ip.Is4In6() || ip.IsUnspecified():
		return g.network
	}
	return "tcp6"
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
	f, ino, err := g.bindLocked()
	if err != nil {
		return nil, fmt.Errorf("add member %s: %w", g.address, err)
	}
	return &Member{g: g, f: f, ino: ino}, nil
}

// bindLocked binds a new sibling. The first one fixes the group's port
// (for port 0) and the address the later ones bind.
func (g *Group) bindLocked() (*os.File, uint64, error) {
	addr := g.address
	if g.boundOK {
		addr = net.JoinHostPort(g.bound.WithZone(g.zone).String(), strconv.Itoa(g.port))
	}
	f, ino, _, err := bindSibling(g.network, addr)
	if err != nil {
		return nil, 0, err
	}
	if !g.boundOK {
		ip, port, err := localAddr(f)
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		g.boundLocked(ip, port)
	}
	return f, ino, nil
}

// boundLocked records ip and port, what the kernel reports for the
// group's first socket.
func (g *Group) boundLocked(ip netip.Addr, port int) {
	g.bound, g.boundOK = ip, true
	if g.port == 0 {
		host, _, _ := net.SplitHostPort(g.address)
		g.port, g.address = port, net.JoinHostPort(host, strconv.Itoa(port))
	}
}

// localAddr is the address and port f is bound to, the address as
// sock_diag lists it (4 bytes for AF_INET, 16 for AF_INET6).
func localAddr(f *os.File) (netip.Addr, int, error) {
	a, err := Addr(f)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip, ta.Port, nil
		}
	}
	return netip.Addr{}, 0, fmt.Errorf("%v is not a TCP address", a)
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
	if err := g.beforeListenLocked(nil); err != nil {
		return fmt.Errorf("activate member: %w", err)
	}
	if err := listenSibling(m.f); err != nil {
		return fmt.Errorf("activate member %s: %w", g.address, err)
	}
	m.state = stateListening
	g.order = append(g.order, m)
	g.changes.Add(1)
	return g.attachLocked()
}

// Spares is how many listening sockets [Group.Take] keeps after the
// newest member. When a socket leaves the group the kernel moves the last
// one into its place; a program index naming the last socket would then
// be out of range until the program is re-attached, and the kernel would
// hash those connections over every socket in the group, a foreign one or
// one nobody accepts from included. With spares at the tail, a departure
// moves a spare, never a member the program names, so until the re-attach
// every index the program returns still names the same socket (two
// departures between two re-attaches are covered).
const Spares = 2

// Take returns a listening member for a new generation: the spare socket
// at the lowest index, which already listens and receives nothing (a
// recycled member before the spares at the tail, which stay there), and
// listens a new spare at the tail when fewer than [Group.SetSpares] are
// left. The caller hands the member to a child and removes it like one
// from [Group.Activate].
func (g *Group) Take() (*Member, error) { return g.take(nil) }

func (g *Group) take(c *Census) (*Member, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	if err := g.fillSparesLocked(g.sparesLocked(), c); err != nil {
		return nil, err
	}
	var m *Member
	for _, o := range g.order {
		if o.spare {
			m = o
			break
		}
	}
	m.spare = false
	if err := g.fillSparesLocked(g.sparesLocked(), c); err != nil {
		return nil, err
	}
	return m, g.attachLocked()
}

// SetSpares makes Take keep n spare sockets at the tail instead of
// [Spares]: one per member that may leave the group between two
// re-attaches (a worker pool whose every old worker stops at once).
func (g *Group) SetSpares(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.spares = max(n, Spares)
}

func (g *Group) sparesLocked() int { return max(g.spares, Spares) }

// fillSparesLocked listens spare sockets at the end of the group until it
// has n.
func (g *Group) fillSparesLocked(n int, c *Census) error {
	for have := g.spareCountLocked(); have < n; have++ {
		f, ino, err := g.bindLocked()
		if err != nil {
			return fmt.Errorf("add member %s: %w", g.address, err)
		}
		if err := g.beforeListenLocked(c); err != nil {
			f.Close()
			return fmt.Errorf("add member %s: %w", g.address, err)
		}
		if err := listenSibling(f); err != nil {
			f.Close()
			return fmt.Errorf("add member %s: %w", g.address, err)
		}
		g.changes.Add(1)
		if ap, err := netip.ParseAddrPort(g.address); err == nil {
			c.listenedLocked(g, Listener{Addr: ap, Inode: ino, UID: euid()})
		}
		g.order = append(g.order, &Member{g: g, f: f, ino: ino, state: stateListening, spare: true})
	}
	return nil
}

// beforeListenLocked brings the model up to date before a listen():
// listen() appends after every socket in the group, including one another
// process added since the last look.
func (g *Group) beforeListenLocked(c *Census) error {
	if g.frozen || g.port == 0 {
		return g.syncLocked(c)
	}
	_, lost, err := g.auditLocked(c)
	g.lost = append(g.lost, lost...)
	return err
}

// dropSparesLocked closes the spare sockets, which only the group holds,
// and updates the model for their departures.
func (g *Group) dropSparesLocked() error {
	for _, m := range g.order {
		if m.spare {
			m.state, m.spare = stateLeaving, false
			g.closeLocked(m, &m.f) // the last close: it leaves now
			g.changes.Add(1)
		}
	}
	return g.syncLocked(nil)
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
	bound := g.bound // a fresh group's is the adopted socket's
	if !g.boundOK {
		if bound, _, err = localAddr(f); err != nil {
			return nil, fmt.Errorf("adopt member %s: %w", g.address, err)
		}
	}
	ls, err := Listeners(g.diagNetworkLocked(), port)
	if err != nil {
		return nil, fmt.Errorf("adopt member %s: %w", g.address, err)
	}
	live := inodes(inGroup(ls, bound))
	if !live[ino] {
		return nil, fmt.Errorf("adopt member %s: %w", g.address, ErrNotActive)
	}
	if len(live) != len(g.order)+1 {
		return nil, fmt.Errorf("adopt member %s: the group has %d sockets, the model %d besides this one: %w", g.address, len(live), len(g.order), ErrNotMember)
	}
	if !g.boundOK {
		g.boundLocked(bound, port)
	}
	m := &Member{g: g, f: f, ino: ino, state: stateListening}
	g.order = append(g.order, m)
	g.changes.Add(1)
	return m, g.attachLocked()
}

// Freeze makes the group stop attaching programs, because another process
// (a new supervisor that adopted a member) steers it now. Remove, Sync and
// Steer still update the model and close copies. [Group.Thaw] undoes it.
//
// The spare sockets are closed first, so that the group holds only the
// members: the other process adopts a group it can model.
func (g *Group) Freeze() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.dropSparesLocked()
	g.frozen = true
	g.attachedOK = false // the other process attaches its own
	return err
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
	if err := g.syncLocked(nil); err != nil {
		return err
	}
	if err := g.fillSparesLocked(g.sparesLocked(), nil); err != nil {
		return err
	}
	return g.attachLocked()
}

// Remove closes the supervisor's copy of m and re-attaches the program
// without it. A listening member should be steered away from and drained
// first. If a child still holds m, the socket stays in the group, at its
// index and receiving nothing, until the child closes it; call
// [Group.Sync] once the child has exited. When several children's closes
// may come together, remove through a [Census] instead, which keeps the
// copy for [Group.Release], so that the order of departures is the
// supervisor's (docs/kernel.md, "Close order").
func (g *Group) Remove(m *Member) error { return g.remove(nil, m, true) }

// remove is Remove; the look at the kernel after the close is left to the
// caller unless sync.
func (g *Group) remove(c *Census, m *Member, sync bool) error {
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
	g.changes.Add(1)
	if !sync {
		m.held, m.f = m.f, nil // closed by Release, once the children have exited
		return nil
	}
	if err := g.closeLocked(m, &m.f); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return g.syncLocked(c)
}

// closeLocked closes *f, a copy of the leaving member m, and records the
// close for the order of departures; g.mu is held. A socket a child shut
// down left its group at the shutdown, before its child exited, so before
// any close of the supervisor's still to be applied (each follows the
// exit of the child that held it): it goes first.
func (g *Group) closeLocked(m *Member, f **os.File) error {
	if *f == nil {
		return nil
	}
	if shutDown(*f) {
		g.released = slices.Insert(g.released, 0, m)
	} else {
		g.released = append(g.released, m)
	}
	return closeNil(f)
}

// Release closes the copy of m that a removal through a [Census] kept,
// once every process of the supervisor's that held m has exited: that
// close is then the last one, so m leaves the group now, and the next
// [Group.Sync] applies the departures in the order of these calls. What
// is still queued on m is reset: hand it over first ([Member.Dup]). It is
// a no-op for a member without a kept copy.
func (g *Group) Release(m *Member) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if m == nil || m.g != g {
		return ErrNotMember
	}
	if m.held == nil {
		return nil
	}
	g.changes.Add(1)
	if err := g.closeLocked(m, &m.held); err != nil {
		return fmt.Errorf("release member: %w", err)
	}
	return nil
}

// Recycle makes m a spare again instead of closing it: m was removed
// through a [Census], and every process of the supervisor's that held it
// has exited, so the kept copy is the socket's only one. The socket stays
// listening at its index, where the program does not name it, and the
// next [Group.Take] hands it to a new generation: no bind, no listen into
// the group and no departure, so nothing in the index order moves. What a
// child changed that belongs to the socket and matters to hotswap is put
// back: O_NONBLOCK and the backlog of [ListenFile]. Other socket options
// a child set stay, as on a shared socket.
//
// It reports whether m was recycled. It declines, and the caller releases
// m as before ([Group.Release]), when m has no kept copy, when the socket
// no longer listens (a child shut it down) or has connections queued
// (hand them over first), when another process steers the group (Freeze),
// and when the group already has twice its [Group.SetSpares] spares: a
// burst of reloads leaves no more sockets behind than two of them.
func (g *Group) Recycle(m *Member) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false, ErrClosed
	}
	if m == nil || m.g != g {
		return false, ErrNotMember
	}
	if m.held == nil || m.state != stateLeaving || g.frozen || g.spareCountLocked() >= 2*g.sparesLocked() {
		return false, nil
	}
	ok, err := reclaim(m.held)
	if err != nil || !ok {
		return false, err
	}
	m.f, m.held = m.held, nil
	m.state, m.spare = stateListening, true
	return true, nil
}

// spareCountLocked counts the group's spares.
func (g *Group) spareCountLocked() int {
	n := 0
	for _, m := range g.order {
		if m.spare {
			n++
		}
	}
	return n
}

// Held reports whether the supervisor still holds the copy of m that a
// removal through a [Census] kept ([Group.Release]).
func (m *Member) Held() bool {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	return m.held != nil
}

// copyLocked is the supervisor's copy of m, the kept one of a leaving
// member included; m.g.mu is held.
func (m *Member) copyLocked() *os.File {
	if m.f != nil {
		return m.f
	}
	return m.held
}

// Sync updates the model for members whose socket left the group since the
// last call (a child holding the last copy closed it or exited) and
// re-attaches the program. Each departure moves the last member into the
// freed slot; departures found together are applied in the order of their
// Remove calls.
func (g *Group) Sync() error { return g.sync(nil) }

func (g *Group) sync(c *Census) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	return g.syncLocked(c)
}

// Len returns the number of sockets in the group's index order, including
// removed members that a child still holds and foreign sockets, but not
// the spares of [Group.Take].
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, m := range g.order {
		if !m.spare {
			n++
		}
	}
	return n
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
func (g *Group) Steer(p Policy) error { return g.steer(nil, p) }

func (g *Group) steer(c *Census, p Policy) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if p.Percent < 0 || p.Percent > 100 {
		return fmt.Errorf("steer %s: percent %d out of range", g.address, p.Percent)
	}
	for _, m := range slices.Concat([]*Member{p.To, p.Other, p.Probe}, p.Slots, p.ByCPU, p.Canary) {
		if m == nil {
			continue
		}
		if err := g.checkLocked(m, stateListening); err != nil {
			return fmt.Errorf("steer %s: %w", g.address, err)
		}
	}
	if err := g.syncLocked(c); err != nil {
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
		errs = append(errs, closeNil(&m.f), closeNil(&m.held))
		m.state = stateGone
	}
	g.order, g.released = nil, nil
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

// QueuesEmpty reports whether the accept queue of every member in ms (nil
// entries are skipped) is empty, with one poll(2) over the supervisor's
// copies: a listening TCP socket is readable exactly when its accept
// queue holds a connection (docs/kernel.md, "A listener is readable when
// its queue is not"). One call costs about as much as a TCP_INFO read for
// one member and a fraction of a sock_diag dump for a thousand. A member
// that no longer listens (shut down) queues nothing and counts as empty;
// a removed member (no supervisor copy) is an error, ErrRemoved.
//
// The groups' locks are held, in the order of ms, until the poll returns,
// so that no copy is closed and its descriptor reused meanwhile; every
// caller passes a generation's members in listener order.
func QueuesEmpty(ms []*Member) (bool, error) {
	var locked []*Group
	defer func() {
		for _, g := range locked {
			g.mu.Unlock()
		}
	}()
	fds := make([]int, 0, len(ms))
	for _, m := range ms {
		if m == nil {
			continue
		}
		if !slices.Contains(locked, m.g) {
			m.g.mu.Lock()
			locked = append(locked, m.g)
		}
		f := m.copyLocked()
		if f == nil {
			return false, fmt.Errorf("queue of member %d: %w", m.ino, ErrRemoved)
		}
		// Not Fd(): on a file Go itself put in non-blocking mode, Fd()
		// switches the socket, which children share, back to blocking
		// (docs/kernel.md); this holds for any file a member is made of.
		if err := sys.Control(f, func(fd int) error { fds = append(fds, fd); return nil }); err != nil {
			return false, fmt.Errorf("queue of member %d: %w", m.ino, err)
		}
	}
	return pollEmpty(fds)
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

// syncLocked drops leaving and foreign members whose socket no longer
// listens, with the kernel's swap-with-last rule, and re-attaches if
// anything changed.
func (g *Group) syncLocked(c *Census) error {
	if !slices.ContainsFunc(g.order, func(m *Member) bool { return m.state == stateLeaving || m.state == stateForeign }) {
		return nil
	}
	ls, fromCensus, err := c.listenersLocked(g)
	if err != nil {
		return fmt.Errorf("sync group %s: %w", g.address, err)
	}
	gone := g.departLocked(ls, false)
	if fromCensus {
		c.agreeLocked(g)
	}
	if len(gone) == 0 {
		return nil
	}
	return g.attachLocked()
}

// departLocked drops the members whose socket is not in ls, in index
// order, moving the last member into each freed slot as the kernel does;
// listening members too when all is set. It returns the members dropped.
func (g *Group) departLocked(ls []Listener, all bool) []*Member {
	departs := func(m *Member) bool {
		return !listed(ls, m.ino) && (all || m.state == stateLeaving || m.state == stateForeign)
	}
	if !slices.ContainsFunc(g.order, departs) {
		return nil
	}
	var gone []*Member
	depart := func(m *Member) {
		i := slices.Index(g.order, m)
		if i < 0 || !departs(m) {
			return
		}
		last := len(g.order) - 1
		g.order[i] = g.order[last]
		g.order = g.order[:last]
		if m.state == stateListening {
			g.pol = g.pol.without(m)
		}
		m.state = stateGone
		closeNil(&m.held) // shut down by someone: it will never listen again
		g.changes.Add(1)
		gone = append(gone, m)
	}
	// The supervisor's own closes first, in their order (each the last
	// close, after Release); the rest in index order, a guess when two of
	// them left together.
	for _, m := range slices.Clone(g.released) {
		depart(m)
	}
	for _, m := range slices.Clone(g.order) {
		depart(m)
	}
	g.released = slices.DeleteFunc(g.released, func(m *Member) bool { return m.state == stateGone })
	return gone
}

// listed reports whether ls has the socket with inode ino (a group has a
// few sockets: a scan costs less than a set).
func listed(ls []Listener, ino uint64) bool {
	return slices.ContainsFunc(ls, func(l Listener) bool { return l.Inode == ino })
}

// Audit is one comparison of a group's model with the kernel's sockets on
// its port (sock_diag), made by [Group.Audit].
type Audit struct {
	// Kernel lists the sockets listening on the group's port.
	Kernel []Listener
	// Model is the model's index order before the audit.
	Model Model
	// Foreign are sockets the model did not know: another process
	// listened on the address with SO_REUSEPORT and joined the group.
	// They are now recorded at the end of the order, where listen() put
	// them, so that indices stay right, and the program never names them.
	Foreign []Listener
	// Lost are members the supervisor held a copy of, listening, that
	// the kernel no longer lists (a child called shutdown() on its
	// listener): dropped from the model, their roles with them.
	Lost []*Member
	// Leaving are the inodes of removed members still in the group, held
	// by a child.
	Leaving []uint64
	// QueuedSpares are spare sockets (Take) with connections in their
	// queue, which the program never selects: the caller should hand the
	// queue on and remove them.
	QueuedSpares []*Member
	// Frozen is set when another process steers the group now (Freeze):
	// nothing was compared.
	Frozen bool
}

// Model is a group's model of the kernel's index order: entry i is the
// socket at index i.
type Model []ModelEntry

// ModelEntry is one socket of a [Model].
type ModelEntry struct {
	Inode uint64
	State string
}

// String lists the model as "index:inode:state" words.
func (m Model) String() string {
	var b strings.Builder
	for i, e := range m {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d:%s", i, e.Inode, e.State)
	}
	return b.String()
}

// Queue returns the kernel's accept-queue length of m's socket, and
// whether the kernel lists it.
func (a Audit) Queue(m *Member) (uint32, bool) { return a.QueueOf(m.ino) }

// QueueOf returns the kernel's accept-queue length of the socket with
// inode ino, and whether the kernel lists it.
func (a Audit) QueueOf(ino uint64) (uint32, bool) {
	for _, l := range a.Kernel {
		if l.Inode == ino {
			return l.Queue, true
		}
	}
	return 0, false
}

// Audit reads the group's sockets from the kernel and brings the model
// in line: members that left are dropped (leaving ones, as Sync does;
// listening ones are reported Lost), unknown sockets are recorded as
// foreign, and the program is re-attached if anything changed. Foreign
// sockets found by [Group.Activate], which audits before it listens, are
// reported by the next Audit.
func (g *Group) Audit() (Audit, error) { return g.audit(nil) }

func (g *Group) audit(c *Census) (Audit, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return Audit{}, ErrClosed
	}
	if g.frozen {
		return Audit{Frozen: true}, nil
	}
	if g.port == 0 {
		return Audit{}, nil
	}
	a := Audit{Model: make(Model, len(g.order))}
	for i, m := range g.order {
		a.Model[i] = ModelEntry{Inode: m.ino, State: m.state.String()}
	}
	var err error
	if a.Kernel, a.Lost, err = g.auditLocked(c); err != nil {
		return a, err
	}
	a.Foreign, g.foreign = g.foreign, nil
	a.Lost, g.lost = append(g.lost, a.Lost...), nil
	for _, m := range g.order {
		if m.state == stateLeaving {
			a.Leaving = append(a.Leaving, m.ino)
		}
		if q, ok := a.Queue(m); ok && q > 0 && m.spare {
			m.spare = false // the caller's to remove now
			a.QueuedSpares = append(a.QueuedSpares, m)
		}
	}
	return a, nil
}

// auditLocked is Audit's work: it returns the kernel's sockets and the
// lost members, adds foreign sockets to g.foreign, and re-attaches if the
// model changed.
func (g *Group) auditLocked(c *Census) ([]Listener, []*Member, error) {
	ls, fromCensus, err := c.listenersLocked(g)
	if err != nil {
		return nil, nil, fmt.Errorf("audit group %s: %w", g.address, err)
	}
	if fromCensus {
		defer c.agreeLocked(g)
	}
	changed := false
	var lost []*Member
	for _, m := range g.departLocked(ls, true) {
		changed = true
		if m.f != nil {
			lost = append(lost, m)
			closeNil(&m.f) // shut down: it will never listen again
		}
	}
	for _, l := range ls {
		if !slices.ContainsFunc(g.order, func(m *Member) bool { return m.ino == l.Inode }) {
			g.order = append(g.order, &Member{g: g, ino: l.Inode, state: stateForeign})
			g.changes.Add(1)
			g.foreign = append(g.foreign, l)
			changed = true
		}
	}
	if changed {
		return ls, lost, g.attachLocked()
	}
	return ls, lost, nil
}

// Members returns the members the supervisor still holds a copy of, in
// index order, not counting the spares.
func (g *Group) Members() []*Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Member
	for _, m := range g.order {
		if m.f != nil && !m.spare {
			out = append(out, m)
		}
	}
	return out
}

// Spares returns how many spare sockets (Take) the group holds.
func (g *Group) Spares() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.spareCountLocked()
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
		// Nothing listening that we hold: nothing to steer. The group
		// may end here, and its program with it.
		g.attachedOK = false
		return nil
	}
	oldest := via
	for _, m := range g.order {
		if m.state == stateListening && !m.spare {
			oldest = m
			break
		}
	}
	p := g.programLocked(oldest)
	foreign := slices.ContainsFunc(g.order, func(m *Member) bool { return m.state == stateForeign })
	if g.attachedOK && p.equal(g.attached) && !foreign {
		// The same indices for the same sockets: a listen at the tail
		// or the removal of a member the program does not name leaves
		// it as it is. Attaching costs a compile in the kernel for
		// every group at every step of a reload. With a foreign socket
		// in the group, whose owner may have attached a program of its
		// own, ours is attached again every time.
		return nil
	}
	raw, err := p.compile()
	if err != nil {
		return err
	}
	g.attachedOK = false
	if err := attachProgram(via.f, raw); err != nil {
		return fmt.Errorf("attach steering program %s: %w", g.address, err)
	}
	g.attached, g.attachedOK = p, true
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
	if p.to < 0 && p.other < 0 {
		for _, m := range g.pol.Slots {
			if i := idx(m); i >= 0 {
				p.slots = append(p.slots, i)
			}
		}
		for _, m := range g.pol.ByCPU {
			p.byCPU = append(p.byCPU, idx(m))
		}
		for _, m := range g.pol.Canary {
			if i := idx(m); i >= 0 {
				p.canary = append(p.canary, i)
			}
		}
		if len(p.slots) == 0 {
			// No pool worker listens: the canary's take everything.
			p.slots, p.canary, p.byCPU = p.canary, nil, nil
		}
		if len(p.slots) > 0 {
			return p
		}
		p.byCPU = nil
	}
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
	if slices.Contains(p.Slots, m) {
		p.Slots = slices.DeleteFunc(slices.Clone(p.Slots), func(o *Member) bool { return o == m })
	}
	if slices.Contains(p.Canary, m) {
		p.Canary = slices.DeleteFunc(slices.Clone(p.Canary), func(o *Member) bool { return o == m })
	}
	if i := slices.Index(p.ByCPU, m); i >= 0 {
		p.ByCPU = slices.Clone(p.ByCPU)
		for i := range p.ByCPU {
			if p.ByCPU[i] == m {
				p.ByCPU[i] = nil
			}
		}
	}
	return p
}

// inodes is the set of the listeners' inodes.
func inodes(ls []Listener) map[uint64]bool {
	live := make(map[uint64]bool, len(ls))
	for _, l := range ls {
		live[l.Inode] = true
	}
	return live
}

func closeNil(f **os.File) error {
	if *f == nil {
		return nil
	}
	err := (*f).Close()
	*f = nil
	return err
}
