package reuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
)

// UDPGroup is one SO_REUSEPORT group of UDP sockets on one address, owned
// by the supervisor, with a classic BPF program that steers each datagram
// by the QUIC connection ID it carries (docs/hotswap.md, "QUIC").
//
// Every member has a slot, a byte its server puts first in every
// connection ID it issues, after which come the group's 3-byte key and
// random bytes up to [CIDLen]. A datagram whose QUIC destination
// connection ID starts with a member's slot and the key goes to that
// member; everything else (a client's first Initial with the random
// connection ID it chose, datagrams that are not QUIC) goes to the
// current member set by [UDPGroup.Steer].
//
// The kernel numbers UDP members by the order of bind(), and when a member
// closes it moves the last member into the freed index (docs/kernel.md,
// "UDP groups"). So that the index of no live member ever changes, Remove
// first binds a spare socket, which joins at the end, and then closes the
// removed member: the kernel moves the spare into the freed index, where it
// receives nothing, and the next [UDPGroup.Add] hands the spare out instead
// of binding a new socket.
type UDPGroup struct {
	network string
	key     [3]byte

	mu      sync.Mutex // guards the fields below
	address string     // with the port fixed by the first member
	port    int
	order   []*UDPMember // kernel index order, spares included
	current *UDPMember
	probe   *UDPMember // receives the datagrams from probeAP
	probeAP netip.AddrPort
	closed  bool
}

// UDPMember is one socket of a [UDPGroup], with its slot.
type UDPMember struct {
	g     *UDPGroup
	f     *os.File // the supervisor's copy; nil once removed
	ino   uint64
	slot  int // 0-255; -1 for a spare
	stuck bool
}

// CIDLen is the length of every connection ID a server of a [UDPGroup]
// issues: the slot, the 3-byte key and 8 random bytes.
const CIDLen = 12

// ErrSlotInUse is returned by [UDPGroup.Add] for a slot a member still has.
var ErrSlotInUse = errors.New("reuse: slot in use")

// NewUDPGroup prepares a group for network ("udp", "udp4" or "udp6") and
// address, whose connection IDs carry key after the slot. With port 0 the
// first member's port is used for every later member. It binds nothing.
func NewUDPGroup(network, address string, key [3]byte) (*UDPGroup, error) {
	if network != "udp" && network != "udp4" && network != "udp6" {
		return nil, fmt.Errorf("new udp group %s %s: %w", network, address, net.UnknownNetworkError(network))
	}
	port, err := addressPort(address)
	if err != nil {
		return nil, fmt.Errorf("new udp group %s: %w", address, err)
	}
	return &UDPGroup{network: network, address: address, port: port, key: key}, nil
}

// Reserve binds a spare socket, which receives nothing until Add hands it
// out: the address is taken now and a port 0 fixed. Another SO_REUSEPORT
// UDP socket already bound to the address (of this user, which the kernel
// would let join the group) makes it fail with [ErrInUse].
func (g *UDPGroup) Reserve() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if g.port != 0 {
		if in, err := udpInodes(g.port); err == nil && len(in) > len(g.order) {
			return fmt.Errorf("reserve %s: %w", g.address, ErrInUse)
		}
	}
	if _, err := g.bindLocked(); err != nil {
		return fmt.Errorf("reserve %s: %w", g.address, err)
	}
	return nil
}

// addressPort is the port of a host:port address.
func addressPort(address string) (int, error) {
	_, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return 0, fmt.Errorf("bad port: %w", err)
	}
	return port, nil
}

// Addr returns the group's address; its port is 0 until the first Add.
func (g *UDPGroup) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.address
}

// CID is the value of HOTSWAP_QUIC_CID for a server holding a member with
// slot: the four bytes every connection ID it issues starts with, in hex,
// and the connection IDs' length, as "PREFIX/LEN" (docs/hotswap.md).
func (g *UDPGroup) CID(slot int) string {
	return fmt.Sprintf("%02x%x/%d", byte(slot), g.key[:], CIDLen)
}

// Add gives a socket of the group to a new server with slot (0-255): a
// spare if the group has one, else a new SO_REUSEPORT socket bound to the
// group's address, which joins at the end of the index order. Datagrams
// reach it once a connection ID with its slot arrives, or once it is
// current.
func (g *UDPGroup) Add(slot int) (*UDPMember, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	if slot < 0 || slot > 255 {
		return nil, fmt.Errorf("add udp member %s: slot %d is not a byte", g.address, slot)
	}
	if g.slotLocked(slot) != nil {
		return nil, fmt.Errorf("add udp member %s: slot %d: %w", g.address, slot, ErrSlotInUse)
	}
	if err := g.syncLocked(); err != nil {
		return nil, fmt.Errorf("add udp member: %w", err)
	}
	if i := slices.IndexFunc(g.order, g.spare); i >= 0 {
		m := g.order[i]
		m.slot = slot
		return m, g.attachLocked()
	}
	m, err := g.bindLocked()
	if err != nil {
		return nil, fmt.Errorf("add udp member %s: %w", g.address, err)
	}
	m.slot = slot
	return m, g.attachLocked()
}

func (g *UDPGroup) bindLocked() (*UDPMember, error) {
	f, ino, port, err := bindSibling(g.network, g.address)
	if err != nil {
		return nil, err
	}
	if g.port == 0 {
		host, _, _ := net.SplitHostPort(g.address)
		g.port, g.address = port, net.JoinHostPort(host, strconv.Itoa(port))
	}
	m := &UDPMember{g: g, f: f, ino: ino, slot: -1}
	g.order = append(g.order, m)
	return m, nil
}

// Steer makes m the current member: it receives every datagram that no
// other member's slot claims. With probe set, the datagrams from src (a
// readiness probe) go to probe instead.
func (g *UDPGroup) Steer(m, probe *UDPMember, src netip.AddrPort) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	for _, x := range []*UDPMember{m, probe} {
		if x != nil && (x.g != g || x.f == nil) {
			return fmt.Errorf("steer %s: %w", g.address, ErrNotMember)
		}
	}
	if m != nil {
		g.current = m
	}
	g.probe, g.probeAP = probe, src
	return g.attachLocked()
}

// ProbeSource is the address readiness probes of the group's port come
// from: the group's own address, or the loopback address of its family
// when it binds the wildcard. [UDPGroup.Steer] pairs it with a port.
func (g *UDPGroup) ProbeSource() (netip.Addr, error) { return probeSource(g.network, g.address) }

// Remove takes m out of the group once its server has exited: datagrams
// with its slot go to the current member from now on, and its slot is
// free. The indices of the other members do not change (see [UDPGroup]).
// The group's only socket is kept as a spare, so that the address stays
// bound; the next Add hands it out.
// If another process still holds m's socket, it stays in the group,
// receiving nothing; [UDPGroup.Len] counts it.
func (g *UDPGroup) Remove(m *UDPMember) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if m == nil || m.g != g {
		return fmt.Errorf("remove udp member: %w", ErrNotMember)
	}
	if m.f == nil {
		return nil
	}
	if g.current == m {
		g.current = nil
	}
	if g.probe == m {
		g.probe = nil
	}
	m.slot = -1
	if err := g.attachLocked(); err != nil {
		return fmt.Errorf("remove udp member %s: %w", g.address, err)
	}
	if len(g.order) == 1 {
		return nil // the group's only socket stays, as a spare: the address stays bound
	}
	if last := g.order[len(g.order)-1]; last != m && !g.spare(last) {
		// The kernel moves the last socket into the freed index: let that
		// be a spare that receives nothing, not a live member.
		if _, err := g.bindLocked(); err != nil {
			return fmt.Errorf("remove udp member %s: %w", g.address, err)
		}
	}
	m.stuck = true // until the kernel says it left
	if err := closeNil(&m.f); err != nil {
		return fmt.Errorf("remove udp member %s: %w", g.address, err)
	}
	if err := g.syncLocked(); err != nil {
		return err
	}
	g.trimLocked()
	return nil
}

// spare reports whether m is a spare the group holds alone.
func (g *UDPGroup) spare(m *UDPMember) bool { return m.slot < 0 && !m.stuck && m.f != nil }

// trimLocked closes spares at the end of the index order, where closing
// moves no other socket, keeping one socket so that the address stays
// bound.
func (g *UDPGroup) trimLocked() {
	for len(g.order) > 1 {
		last := g.order[len(g.order)-1]
		if !g.spare(last) {
			return
		}
		closeNil(&last.f)
		g.order = g.order[:len(g.order)-1]
	}
}

// syncLocked drops the removed members whose socket left the group, with
// the kernel's swap-with-last rule, and re-attaches if anything changed. A
// removed member another process still holds stays, receiving nothing.
func (g *UDPGroup) syncLocked() error {
	if !slices.ContainsFunc(g.order, func(m *UDPMember) bool { return m.stuck }) {
		return nil
	}
	live, err := udpInodes(g.port)
	if err != nil {
		return fmt.Errorf("sync udp group %s: %w", g.address, err)
	}
	changed := false
	for _, m := range slices.Clone(g.order) {
		if !m.stuck || live[m.ino] {
			continue
		}
		i := slices.Index(g.order, m)
		last := len(g.order) - 1
		g.order[i] = g.order[last]
		g.order = g.order[:last]
		m.stuck = false
		changed = true
	}
	if !changed {
		return nil
	}
	return g.attachLocked()
}

// Sync updates the model for removed members that another process held
// and has closed since.
func (g *UDPGroup) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	return g.syncLocked()
}

// Len returns the number of sockets in the group, spares included.
func (g *UDPGroup) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.order)
}

// Close closes every copy the group holds. It is idempotent.
func (g *UDPGroup) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	for _, m := range g.order {
		errs = append(errs, closeNil(&m.f))
	}
	g.order = nil
	return errors.Join(errs...)
}

// File returns the supervisor's copy of the member's socket, to pass to a
// server as ExtraFiles. It is nil after Remove.
func (m *UDPMember) File() *os.File {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	return m.f
}

// Slot returns the member's slot, or -1 once removed.
func (m *UDPMember) Slot() int {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	return m.slot
}

func (g *UDPGroup) slotLocked(slot int) *UDPMember {
	for _, m := range g.order {
		if m.slot == slot {
			return m
		}
	}
	return nil
}

// attachLocked compiles the slot table for the current order and attaches
// it through a member the supervisor holds.
func (g *UDPGroup) attachLocked() error {
	var via *UDPMember
	p := cidProgram{key: binary.BigEndian.Uint32(append([]byte{0}, g.key[:]...)), cidLen: CIDLen, slots: map[byte]int{},
		probe: slices.Index(g.order, g.probe), probeSrc: g.probeAP}
	for i, m := range g.order {
		if m.f == nil {
			continue
		}
		if via == nil {
			via = m
		}
		if m.slot >= 0 {
			p.slots[byte(m.slot)] = i
		}
	}
	if via == nil {
		return nil
	}
	p.current = slices.Index(g.order, g.current)
	if p.current < 0 {
		// No current member yet: the newest one with a slot, so that
		// nothing lands on a spare.
		for i := len(g.order) - 1; i >= 0; i-- {
			if g.order[i].slot >= 0 && g.order[i].f != nil {
				p.current = i
				break
			}
		}
	}
	if p.current < 0 {
		p.current = slices.Index(g.order, via)
	}
	raw, err := p.compile()
	if err != nil {
		return err
	}
	if err := attachProgram(via.f, raw); err != nil {
		return fmt.Errorf("attach steering program %s: %w", g.address, err)
	}
	return nil
}
