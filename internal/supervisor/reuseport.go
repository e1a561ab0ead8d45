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
// were in flight on its socket still land there (shared/KERNEL.md
// pitfall 11).
const DefaultDrainGrace = 50 * time.Millisecond

// listener is one socket address the supervisor owns: a shared socket, or
// a reuseport group with one member per generation.
type listener struct {
	spec   ListenSpec
	mode   Mode
	shared *os.File
	group  *reuse.Group
	port   int // the bound port, for OpenConns
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
		return l, nil
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
}

// members makes generation id's sockets: the shared ones, and per
// reuseport group a listening sibling that receives nothing until it is
// steered to; orphaned members are taken first.
func (s *Supervisor) members(id int) (files []*os.File, ms []*reuse.Member, retErr error) {
	ms = make([]*reuse.Member, len(s.listeners))
	defer func() {
		if retErr != nil {
			s.dropMembers(ms)
		}
	}()
	for i, l := range s.listeners {
		if !l.reuseport() {
			files = append(files, l.shared)
			continue
		}
		m := s.orphans[i] // taken by takeOrphans once the generation runs
		if m == nil {
			var err error
			if m, err = l.group.Take(); err != nil {
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
func (s *Supervisor) takeOrphans(ms []*reuse.Member) {
	for i, m := range ms {
		if m != nil && s.orphans[i] == m {
			s.orphans[i] = nil
		}
	}
}

// dropMembers releases the members made for a generation that did not
// start; orphans it was given stay orphans, queue and all, for the next
// try.
func (s *Supervisor) dropMembers(ms []*reuse.Member) {
	for i, m := range ms {
		if m != nil && s.orphans[i] == m {
			ms[i] = nil
		}
	}
	s.release(ms)
}

// release closes the supervisor's copies of a generation's members: the
// child's own close is then the last one (shared/KERNEL.md pitfall 12).
func (s *Supervisor) release(ms []*reuse.Member) {
	for i, m := range ms {
		if m != nil {
			if err := s.listeners[i].group.Remove(m); err != nil && !errors.Is(err, reuse.ErrClosed) && !errors.Is(err, reuse.ErrRemoved) {
				s.log.Warn("remove reuseport member", "listener", s.listeners[i].spec.Name, "error", err)
			}
		}
	}
}

// leaveMembers is the one way a generation's members leave it, whichever
// way the generation goes (stopped, exited before its gate answered,
// crashed, a canary that died): exactly once per generation, the first
// caller's choice wins. With keep, keep takes the members, still
// listening with their queues (a restart serves them); otherwise the
// supervisor's copies are closed and the sockets leave their groups with
// the process's last close.
func (s *Supervisor) leaveMembers(g *gen, keep func([]*reuse.Member)) {
	g.leave.Do(func() {
		if keep != nil && g.members != nil {
			keep(g.members)
			return
		}
		s.release(g.members)
	})
}

// sync updates every group's model after a generation holding members
// has exited.
func (s *Supervisor) sync() {
	for _, l := range s.listeners {
		if l.reuseport() {
			if err := l.group.Sync(); err != nil && !errors.Is(err, reuse.ErrClosed) {
				s.log.Warn("sync reuseport group", "listener", l.spec.Name, "error", err)
			}
		}
	}
}

// steer attaches, in every group, the policy "new connections to to (or
// pct percent to to and the rest to other); probes to probe". A nil
// generation leaves that role to the group's default (the oldest member).
func (s *Supervisor) steer(to, other *gen, pct int, probe *gen) error {
	var errs []error
	for i, l := range s.listeners {
		if !l.reuseport() {
			continue
		}
		p := reuse.Policy{To: member(to, i), Other: member(other, i), Percent: pct, Probe: member(probe, i)}
		if p.Other == nil {
			p.Percent = 0
		}
		if err := l.group.Steer(p); err != nil {
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
	for _, l := range s.listeners {
		if !l.reuseport() {
			continue
		}
		if sameAddr(addr, l.group.Addr()) {
			return l.group.ProbeAddr(), true
		}
	}
	return netip.AddrPort{}, false
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

// drainWait waits until g's reuseport sockets have an empty accept queue
// and g's process tree holds no connection on their ports, twice in a row
// after the grace period, or until g exits. The queue may take up to the
// drain timeout; open connections only DrainConnWait, because an idle
// keep-alive connection looks like one in progress and a client may hold
// it for ever. It reports whether the drain completed.
func (s *Supervisor) drainWait(g *gen) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(s.cfg.DrainTimeout)
	connsDeadline := start.Add(min(s.cfg.DrainConnWait, s.cfg.DrainTimeout))
	quiet := 0
	for time.Now().Before(deadline) {
		if s.drained(g, time.Now().Before(connsDeadline)) {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 2 && time.Since(start) >= s.cfg.DrainGrace {
			return time.Since(start), true
		}
		select {
		case <-g.exited:
			return time.Since(start), true
		case <-time.After(2 * time.Millisecond):
		}
	}
	return time.Since(start), false
}

// drained reports whether g's reuseport queues are empty and, with conns,
// whether its process tree holds no connection on their ports.
func (s *Supervisor) drained(g *gen, conns bool) bool {
	for i, m := range g.members {
		if m == nil {
			continue
		}
		if q, err := m.QueueLen(); err != nil || q > 0 {
			return false
		}
		if !conns {
			continue
		}
		if n, err := reuse.OpenConns(g.pid, s.listeners[i].port); err != nil || n > 0 {
			return false
		}
	}
	return true
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
