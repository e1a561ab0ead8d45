package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// Mode is how a listener is handed to generations.
type Mode string

const (
	// ModeShared hands every generation the same socket.
	ModeShared Mode = "shared"
	// ModeReusePort gives each generation its own SO_REUSEPORT sibling in
	// a group the supervisor steers with classic BPF: a generation gets
	// no client until it is ready, and the old one is drained before it
	// is stopped.
	ModeReusePort Mode = "reuseport"
)

// ParseMode accepts "shared" and "reuseport".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeShared, ModeReusePort:
		return Mode(s), nil
	}
	return "", fmt.Errorf("mode %q: want shared or reuseport", s)
}

// DefaultDrainGrace is how long an old reuseport generation keeps accepting
// after the cutover before its queue may count as drained: handshakes that
// were in flight on its socket still land there (docs/kernel.md,
// "Steer, drain, then close").
const DefaultDrainGrace = 50 * time.Millisecond

// listener is one socket address the supervisor owns: a shared socket, or
// a reuseport group with one member per generation.
type listener struct {
	spec   ListenSpec
	mode   Mode
	shared *os.File
	group  *reuse.Group
	udp    *reuse.UDPGroup // a UDP listener in reuseport mode (quic.go)
	port   int             // the bound port
	// diagPort is a reuseport group's port as sock_diag files its
	// connections, for the drain.
	diagPort reuse.Port
}

func (l *listener) reuseport() bool { return l.group != nil }

// openListener binds l in mode; reuseport applies to TCP only, other
// networks are shared.
func (s *Supervisor) openListener(spec ListenSpec) (*listener, error) {
	l := &listener{spec: spec, mode: ModeShared}
	if s.cfg.Mode == ModeReusePort && strings.HasPrefix(spec.Network, "tcp") {
		g, err := reuse.NewGroup(spec.Network, spec.Address)
		if err != nil {
			return nil, err
		}
		// The first member fixes the port (also for port 0) and makes
		// sure the address can be bound now, not at the first start.
		l.group, l.mode = g, ModeReusePort
		if s.pool() {
			// Every old worker of --rollout all (or every new one of a
			// stopped rollout) may leave before the next re-attach: a
			// spare each keeps the program's indices right meanwhile.
			g.SetSpares(s.workers())
		}
		return l, nil
	}
	if s.udp != nil && isUDP(spec.Network) {
		return l, s.openUDP(l)
	}
	f, err := s.cfg.Listen(spec)
	if err != nil {
		return nil, err
	}
	l.shared = f
	if a, err := reuse.Addr(f); err == nil {
		if ta, ok := a.(*net.TCPAddr); ok {
			l.port = ta.Port
		}
	}
	return l, nil
}

// addr is the listener's bound address.
func (l *listener) addr() string {
	if l.group != nil {
		return l.group.Addr()
	}
	if l.udp != nil {
		return l.udp.Addr()
	}
	if a, err := reuse.Addr(l.shared); err == nil {
		return a.String()
	}
	return l.spec.Address
}

func (l *listener) close() {
	if l.shared != nil {
		l.shared.Close()
	}
	if l.group != nil {
		l.group.Close()
	}
	if l.udp != nil {
		l.udp.Close()
	}
}

// members makes generation id's sockets: the shared ones, and per
// reuseport group a listening sibling that receives nothing until it is
// steered to; orphaned members are taken first.
func (s *Supervisor) members(sl *slot, id int) (files []*os.File, ms []*reuse.Member, retErr error) {
	ms = make([]*reuse.Member, len(s.listeners))
	c := s.census()
	s.lastCensus = c
	defer func() {
		if retErr != nil {
			s.dropMembers(sl, ms)
		}
	}()
	for i, l := range s.listeners {
		if !l.reuseport() {
			files = append(files, l.shared)
			continue
		}
		m := sl.orphans[i] // taken by takeOrphans once the generation runs
		if m == nil {
			var err error
			if m, err = c.Take(l.group); err != nil {
				return nil, nil, fmt.Errorf("listener %s for generation %d: %w", l.spec, id, err)
			}
		}
		ms[i] = m
		files = append(files, m.File())
	}
	if !slices.ContainsFunc(ms, func(m *reuse.Member) bool { return m != nil }) {
		ms = nil // no reuseport listener: nothing to steer or drain
	}
	return files, ms, nil
}

// takeOrphans records that the generation started with ms took the
// orphans it was given.
func (s *Supervisor) takeOrphans(sl *slot, ms []*reuse.Member) {
	for i, m := range ms {
		if m != nil && sl.orphans[i] == m {
			sl.orphans[i] = nil
		}
	}
}

// dropMembers releases the members made for a generation that did not
// start; orphans it was given stay orphans, queue and all, for the next
// try.
func (s *Supervisor) dropMembers(sl *slot, ms []*reuse.Member) {
	for i, m := range ms {
		if m != nil && sl.orphans[i] == m {
			ms[i] = nil
		}
	}
	s.release(ms, false)
}

// release takes a generation's members out of their groups: the program
// no longer names them. With keep (the generation is being stopped, its
// process still holds them), the supervisor's copies stay open until the
// generation has exited (closeKept): the close that makes each socket
// leave its group is then hotswap's, in an order the group's model
// follows however several generations' exits interleave (docs/kernel.md,
// "Close order"). Otherwise they are closed now, with their queues (a
// process still holding a member accepts what waits in it, or resets it
// at its exit), and one census after the last close tells every group
// which sockets left.
func (s *Supervisor) release(ms []*reuse.Member, keep bool) {
	c := s.census()
	for i, m := range ms {
		if m != nil {
			if err := c.Remove(s.listeners[i].group, m); err != nil && !errors.Is(err, reuse.ErrClosed) && !errors.Is(err, reuse.ErrRemoved) {
				s.log.Warn("remove reuseport member", "listener", s.listeners[i].spec.Name, "error", err)
			}
			if !keep {
				s.releaseMember(s.listeners[i], m)
			}
		}
	}
	if keep {
		return // nothing left the kernel's groups: no census to read
	}
	for i, m := range ms {
		if m != nil {
			s.syncGroup(c, s.listeners[i])
		}
	}
}

func (s *Supervisor) releaseMember(l *listener, m *reuse.Member) {
	if err := l.group.Release(m); err != nil && !errors.Is(err, reuse.ErrClosed) {
		s.log.Warn("close a generation's reuseport member", "listener", l.spec.Name, "error", err)
	}
}

// closeKept ends the copies release kept of ms, g's members, now that g has
// exited: each becomes a spare for the next generation again
// ([reuse.Group.Recycle]) when nothing of g's can still hold it, or is
// closed, one by one, each the socket's last close. A member on which
// connections queued after g's last accept is handed over first
// (handQueue), not reset. One poll over every kept copy answers for all
// of them when none has a queue, as at almost every exit. The caller
// syncs the groups after.
func (s *Supervisor) closeKept(g *gen, ms []*reuse.Member) {
	kept := make([]*reuse.Member, len(ms))
	n := 0
	for i, m := range ms {
		if m != nil && m.Held() {
			kept[i] = m
			n++
		}
	}
	if n == 0 {
		return
	}
	allEmpty, allErr := reuse.QueuesEmpty(kept)
	alone := g.treeGone()
	for i, m := range kept {
		if m == nil {
			continue
		}
		l := s.listeners[i]
		if allErr == nil && !allEmpty {
			if empty, err := reuse.QueuesEmpty([]*reuse.Member{m}); err == nil && !empty {
				s.handQueue(l, m)
				continue
			}
		}
		if alone {
			ok, err := l.group.Recycle(m)
			if err != nil && !errors.Is(err, reuse.ErrClosed) {
				s.log.Warn("recycle a generation's reuseport member", "listener", l.spec.Name, "error", err)
			}
			if ok {
				continue
			}
		}
		s.releaseMember(l, m)
	}
}

// leaveMembers is the one way a generation's members leave it, whichever
// way the generation goes (stopped, exited before its gate answered,
// crashed, a canary that died): exactly once per generation, the first
// caller's choice wins. With keep, keep takes the members, still
// listening with their queues (a restart serves them); otherwise they
// are released: while g runs (alive, a stop) the supervisor keeps its
// copies until g's exit (onExit closes them), else it closes them now.
func (s *Supervisor) leaveMembers(g *gen, alive bool, keep func([]*reuse.Member)) {
	g.leave.Do(func() {
		if keep != nil && g.members != nil {
			keep(g.members)
			return
		}
		s.release(g.members, alive)
	})
}

// sync updates every group's model after a generation holding members
// has exited.
func (s *Supervisor) sync() {
	c := s.census()
	s.lastCensus = c
	for _, l := range s.listeners {
		if l.reuseport() {
			s.syncGroup(c, l)
		}
	}
}

func (s *Supervisor) syncGroup(c *reuse.Census, l *listener) {
	if err := c.Sync(l.group); err != nil && !errors.Is(err, reuse.ErrClosed) {
		s.log.Warn("sync reuseport group", "listener", l.spec.Name, "error", err)
	}
}

// census prepares one read of the kernel's listeners for a pass over
// every reuseport group: one sock_diag dump per address family, where a
// look per group would cost a walk of every listening socket each
// (docs/kernel.md, "One dump walks every listener").
func (s *Supervisor) census() *reuse.Census {
	var gs []*reuse.Group
	for _, l := range s.listeners {
		if l.reuseport() {
			gs = append(gs, l.group)
		}
	}
	return reuse.NewCensus(gs)
}

// steer attaches, in every group, the policy "new connections to to (or
// pct percent to to and the rest to other); probes to probe". A nil
// generation leaves that role to the group's default (the oldest member).
// The probe role goes only to the group that probe's gate dials: in the
// others it would be a program to attach for nothing (each attach is a
// compile in the kernel, for every group at every reload).
func (s *Supervisor) steer(to, other *gen, pct int, probe *gen) error {
	var errs []error
	if s.udp != nil {
		errs = append(errs, s.udpSteer(to, other, pct, probe))
	}
	probedAt := -1
	if probe != nil {
		probedAt = s.probed(probeAddr(s.gateCheck(probe)))
	}
	c := s.census()
	for i, l := range s.listeners {
		if !l.reuseport() {
			continue
		}
		p := reuse.Policy{To: member(to, i), Other: member(other, i), Percent: pct}
		if i == probedAt {
			p.Probe = member(probe, i)
		}
		if p.Other == nil {
			p.Percent = 0
		}
		if s.pool() {
			p = s.poolPolicy(i, probe)
			if i != probedAt {
				p.Probe = nil
			}
		}
		if err := c.Steer(l.group, p); err != nil {
			errs = append(errs, fmt.Errorf("steer %s: %w", l.spec, err))
		}
	}
	return errors.Join(errs...)
}

func member(g *gen, i int) *reuse.Member {
	if g == nil || g.members == nil {
		return nil
	}
	return g.members[i]
}

// probeFor returns the source address a readiness probe to addr must use
// to reach the generation being gated: the probe address of the reuseport
// group listening on addr, if any.
func (s *Supervisor) probeFor(addr string) (netip.AddrPort, bool) {
	if i := s.probed(addr); i >= 0 {
		return s.listeners[i].group.ProbeAddr(), true
	}
	return netip.AddrPort{}, false
}

// probed returns the index of the reuseport listener on addr, or -1.
func (s *Supervisor) probed(addr string) int {
	for i, l := range s.listeners {
		if l.reuseport() && sameAddr(addr, l.group.Addr()) {
			return i
		}
	}
	return -1
}

func sameAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	ia, err1 := netip.ParseAddr(ha)
	ib, err2 := netip.ParseAddr(hb)
	if err1 != nil || err2 != nil {
		return ha == hb
	}
	return ia.Unmap() == ib.Unmap() || ib.IsUnspecified()
}

// Drain polling: no event says that a connection has been answered or a
// handshake has landed, so the drain looks with back-off.
const (
	drainPollMin = time.Millisecond     // first look: the new steering is in force on every CPU
	drainPollMax = 4 * time.Millisecond // the longest wait between looks: one clock tick at HZ=250
)

// drainWait waits until g may be stopped without losing a client, or until
// g exits, and reports whether the drain completed. g may be stopped once:
//
//  1. the handshakes that reached g's sockets before the cutover have
//     landed: a few round trips of g's own connections (the longest
//     smoothed RTT among them, times 4, plus a millisecond), at most the
//     drain grace, which is also the wait when g holds no connection;
//  2. g's accept queues are empty;
//  3. every connection g's process tree holds on their ports is idle
//     ([reuse.Conn.Idle]: everything it received has been answered) at two
//     looks in a row with no byte moved between them ([reuse.ConnSet.Busy]),
//     for at most DrainConnWait.
//
// The tree's descriptors are read once (and again only if a queue refills);
// then each look is one batch of exact sock_diag lookups of those
// connections and one TCP_INFO per socket.
func (s *Supervisor) drainWait(g *gen) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(s.cfg.DrainTimeout)
	connsDeadline := start.Add(min(s.cfg.DrainConnWait, s.cfg.DrainTimeout))
	d := drainer{s: s, g: g, ports: s.drainPorts(g), grace: s.cfg.DrainGrace}
	wait := drainPollMin
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-g.exited:
			return time.Since(start), true
		case <-t.C:
		}
		now := time.Now()
		if !now.Before(deadline) {
			return now.Sub(start), false
		}
		done, graceLeft := d.done(now.Sub(start), now.Before(connsDeadline))
		if done {
			return time.Since(start), true
		}
		wait = min(2*wait, drainPollMax)
		if graceLeft > 0 {
			wait = graceLeft // nothing else to wait for: look once more after it
		}
		t.Reset(min(wait, time.Until(deadline)))
	}
}

// drainer is the state of one drainWait.
type drainer struct {
	s     *Supervisor
	g     *gen
	ports []reuse.Port
	grace time.Duration  // how long handshakes may still land on g's queues
	conns *reuse.ConnSet // g's connections, once its queues were empty
}

// done takes one look, after elapsed of the drain; with conns, g's
// connections must be idle too. When only the handshake grace is left,
// graceLeft says how long.
func (d *drainer) done(elapsed time.Duration, conns bool) (done bool, graceLeft time.Duration) {
	if !d.queuesEmpty() {
		d.conns = nil // accepted ones will join g's connections
		return false, 0
	}
	if d.conns == nil {
		set, err := d.g.snapshot(d.ports, d.listeners())
		if err != nil {
			return false, 0 // g exited (g.exited ends the wait), or a look failed
		}
		d.conns = set
		if rtt := set.MaxRTT(); rtt > 0 {
			d.grace = min(d.grace, 4*rtt+time.Millisecond)
		}
	} else if conns {
		if err := d.conns.Refresh(); err != nil {
			return false, 0
		}
	}
	if conns && d.conns.Busy() > 0 {
		return false, 0
	}
	if elapsed < d.grace {
		return false, d.grace - elapsed
	}
	return d.queuesEmpty(), 0
}

// listeners are the inodes of g's reuseport sockets.
func (d *drainer) listeners() map[uint64]bool {
	out := map[uint64]bool{}
	for _, m := range d.g.members {
		if m != nil {
			out[m.Inode()] = true
		}
	}
	return out
}

// queuesEmpty reports whether every reuseport socket of g has an empty
// accept queue: one poll(2) over hotswap's copies, however many listeners
// there are (a socket is readable while its queue holds a connection).
func (d *drainer) queuesEmpty() bool {
	empty, err := reuse.QueuesEmpty(d.g.members)
	return err == nil && empty
}

// drainPorts are the ports of g's reuseport sockets.
func (s *Supervisor) drainPorts(g *gen) []reuse.Port {
	var out []reuse.Port
	for i, m := range g.members {
		if m != nil {
			out = append(out, s.listeners[i].diagPort)
		}
	}
	return out
}

// logMigrateReq records net.ipv4.tcp_migrate_req: 1 is a backstop for
// request sockets the drain cannot see, never a requirement.
func (s *Supervisor) logMigrateReq() {
	v, err := reuse.MigrateReq()
	if err != nil {
		s.log.Info("reuseport mode", "tcp_migrate_req", "unknown", "error", err)
		return
	}
	s.log.Info("reuseport mode", "tcp_migrate_req", v)
}
