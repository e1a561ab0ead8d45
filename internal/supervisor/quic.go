package supervisor

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// UDP listeners in reuseport mode (docs/hotswap.md, "QUIC"): each
// generation gets its own SO_REUSEPORT socket in a reuse.UDPGroup and a
// slot, a byte the supervisor assigns and hands over in HOTSWAP_QUIC_CID
// together with the supervisor's key. A QUIC server that starts every
// connection ID it issues with them keeps receiving its connections'
// datagrams after the cutover, while new connections and every datagram
// without such a connection ID reach the current generation.
//
// The kernel keeps no per-connection state for UDP, so hotswap cannot see
// how many QUIC connections an old generation still has. Its drain is:
// after the cutover the old generation keeps its datagrams for at most
// DrainConnWait (its connections may end by themselves, or it may exit);
// then it gets its stop signal, on which a QUIC server closes its
// connections (HTTP/3: GOAWAY, then CONNECTION_CLOSE once its requests are
// answered), and its socket stays steered to it until it has exited,
// within DrainTimeout. Only then is its slot freed.

// udpSteer is the run loop's state for the UDP groups. Its methods run on
// the run loop, except drainWait.
type udpSteer struct {
	key     [3]byte
	groups  []*reuse.UDPGroup          // per listener; nil for others
	members map[int][]*reuse.UDPMember // per generation id, per listener
	orphans []*reuse.UDPMember         // a crashed current generation's, for its restart
	slots   map[int]int                // generation id to slot
}

// newUDPSteer returns the UDP hook when cfg has a UDP listener in
// reuseport mode, else nil. Intercepted binds keep UDP shared.
func newUDPSteer(cfg Config) *udpSteer {
	if cfg.Mode != ModeReusePort || cfg.Intercept {
		return nil
	}
	for _, l := range cfg.Listeners {
		if isUDP(l.Network) {
			return &udpSteer{members: map[int][]*reuse.UDPMember{}, slots: map[int]int{}}
		}
	}
	return nil
}

// openUDP makes l a UDP group in reuseport mode.
func (s *Supervisor) openUDP(l *listener) error {
	if s.udp.key == ([3]byte{}) {
		if _, err := rand.Read(s.udp.key[:]); err != nil {
			return fmt.Errorf("quic connection-id key: %w", err)
		}
	}
	g, err := reuse.NewUDPGroup(l.spec.Network, l.spec.Address, s.udp.key)
	if err != nil {
		return err
	}
	// Bind now: the address must be free at start, and port 0 is fixed
	// from here on; the first generation gets this socket.
	if err := g.Reserve(); err != nil {
		g.Close()
		return err
	}
	l.udp, l.mode = g, ModeReusePort
	return nil
}

func isUDP(network string) bool { return strings.HasPrefix(network, "udp") }

// setGroups lines the listeners' UDP groups up by listener index.
func (u *udpSteer) setGroups(ls []*listener) {
	u.groups = make([]*reuse.UDPGroup, len(ls))
	u.orphans = make([]*reuse.UDPMember, len(ls))
	for i, l := range ls {
		u.groups[i] = l.udp
	}
}

// slotFor picks generation id's slot: id mod 256, or the next one that no
// live generation holds.
func (u *udpSteer) slotFor(id int) (int, error) {
	used := map[int]bool{u.orphan(): true}
	for _, sl := range u.slots {
		used[sl] = true
	}
	for i := range 256 {
		if sl := (id + i) % 256; !used[sl] {
			return sl, nil
		}
	}
	return 0, errors.New("all 256 connection-id slots are held by live generations")
}

// before gives generation id its UDP sockets, in place of the shared ones
// in cmd.ExtraFiles, and HOTSWAP_QUIC_CID.
func (u *udpSteer) before(id int, cmd *exec.Cmd) (retErr error) {
	slot, err := u.slotFor(id)
	if err != nil {
		return fmt.Errorf("generation %d: %w", id, err)
	}
	if o := u.orphan(); o >= 0 {
		slot = o // a restart keeps the crashed generation's sockets and slot
	}
	ms := make([]*reuse.UDPMember, len(u.groups))
	u.members[id], u.slots[id] = ms, slot
	defer func() {
		if retErr != nil {
			u.abort(id)
		}
	}()
	for i, g := range u.groups {
		if g == nil {
			continue
		}
		m := u.orphans[i]
		u.orphans[i] = nil
		if m == nil {
			if m, err = g.Add(slot); err != nil {
				return fmt.Errorf("listener %s for generation %d: %w", g.Addr(), id, err)
			}
		}
		ms[i] = m
		cmd.ExtraFiles[i] = m.File()
	}
	cmd.Env = append(cmd.Env, fdpass.QUICCID+"="+u.cid(slot))
	return nil
}

// orphan is the slot of the orphaned members, or -1.
func (u *udpSteer) orphan() int {
	for _, m := range u.orphans {
		if m != nil {
			return m.Slot()
		}
	}
	return -1
}

// cid is HOTSWAP_QUIC_CID for slot; the groups share the key.
func (u *udpSteer) cid(slot int) string {
	for _, g := range u.groups {
		if g != nil {
			return g.CID(slot)
		}
	}
	return ""
}

// after records that g has sockets of its own.
func (u *udpSteer) after(g *gen) {
	g.udp = u.members[g.id] != nil
	g.udpProbe, _ = u.probeSource(g.id)
}

// abort releases what before gave a generation that did not start.
func (u *udpSteer) abort(id int) {
	u.remove(id)
}

// steer makes generation to's sockets the current ones (with to 0 the
// current ones stay): every datagram that no other generation's
// connection ID claims goes to them; with probe non-zero, the datagrams
// from src go to probe's.
func (u *udpSteer) steer(to, probe int, src netip.AddrPort) error {
	var errs []error
	for i, g := range u.groups {
		if g == nil {
			continue
		}
		var cur, pr *reuse.UDPMember
		if ms := u.members[to]; ms != nil {
			cur = ms[i]
		}
		if ms := u.members[probe]; ms != nil {
			pr = ms[i]
		}
		if pr == nil {
			src = netip.AddrPort{}
		}
		errs = append(errs, g.Steer(cur, pr, src))
	}
	return errors.Join(errs...)
}

// probeSource picks the address generation id's readiness probes over UDP
// come from: a free port of the first UDP group's probe address. It is
// free when chosen; the probe binds it (HOTSWAP_PROBE_SOURCE).
func (u *udpSteer) probeSource(id int) (netip.AddrPort, bool) {
	if u.members[id] == nil {
		return netip.AddrPort{}, false
	}
	for _, g := range u.groups {
		if g == nil {
			continue
		}
		ip, err := g.ProbeSource()
		if err != nil {
			return netip.AddrPort{}, false
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return netip.AddrPort{}, false
		}
		defer c.Close()
		return netip.AddrPortFrom(ip, c.LocalAddr().(*net.UDPAddr).AddrPort().Port()), true
	}
	return netip.AddrPort{}, false
}

// exited frees generation id's sockets and slot once its process is gone,
// or, for a current generation that crashed, keeps them for its restart.
func (u *udpSteer) exited(id int, crashed bool) {
	if crashed {
		copy(u.orphans, u.members[id])
		delete(u.members, id)
		delete(u.slots, id)
		return
	}
	u.remove(id)
}

func (u *udpSteer) remove(id int) {
	for i, m := range u.members[id] {
		if m != nil {
			_ = u.groups[i].Remove(m) // only ErrClosed at shutdown
		}
	}
	delete(u.members, id)
	delete(u.slots, id)
}

// udpDrainWait keeps g's datagrams steered to it until DrainConnWait after
// the cutover (which a TCP drain may have used up), or until it exits,
// before its stop signal.
func (s *Supervisor) udpDrainWait(g *gen, cutover time.Time) time.Duration {
	t := time.NewTimer(time.Until(cutover.Add(min(s.cfg.DrainConnWait, s.cfg.DrainTimeout))))
	defer t.Stop()
	select {
	case <-g.exited:
	case <-t.C:
	}
	return time.Since(cutover)
}

// udpSteer steers the UDP groups as steer does the TCP ones; a nil to
// keeps the current generation. There is no weighted split for UDP: a
// client's first flight may span several datagrams, which must reach one
// generation, so new connections go to other (the serving generation
// beside a canary) until to has all of them (pct 100).
func (s *Supervisor) udpSteer(to, other *gen, pct int, probe *gen) error {
	if other != nil && pct < 100 {
		to = other
	}
	var toID, probeID int
	var src netip.AddrPort
	if to != nil {
		toID = to.id
	}
	if probe != nil {
		probeID, src = probe.id, probe.udpProbe
	}
	return s.udp.steer(toID, probeID, src)
}
