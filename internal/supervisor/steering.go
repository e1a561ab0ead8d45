package supervisor

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// The kernel is the source of truth for reuseport groups. After every
// event of the run loop that can change a group (a generation added,
// gated, cut over, stopped, crashed, adopted, steered), checkGroups reads
// the sockets listening on each group's port from sock_diag and holds the
// model to the invariant: every socket in the group is either the
// listening socket of a live generation that accepts from it, or one the
// steering program never selects and whose queue is empty.
//
// A mismatch is logged once with both views, repaired and counted
// (Status.SteeringRepairs, hotswap_steering_repairs_total):
//
//   - a member only hotswap holds, of no live generation (leaked): it is
//     steered away from, the connections in its queue are handed to the
//     serving generation (handQueue), and it is closed;
//   - a member a generation shut down while hotswap held it (lost): it is
//     dropped from the model and the program re-attached;
//   - a socket held by a process hotswap no longer runs (a leftover of an
//     exited generation) with connections queued: it cannot be closed
//     from here; it is never steered to, and the log names it.
//
// A socket hotswap never owned (another process of the same user listening
// on the address with SO_REUSEPORT) is recorded where the kernel put it,
// so indices stay right, never steered to, warned about and counted
// (Status.ForeignSockets); it is not a repair.

// checkGroups audits every reuseport group; why names the event.
// One census serves every group: the one the event's last pass read
// when it still holds (members listened their spares into it, sync
// applied what it showed), else a new one.
func (s *Supervisor) checkGroups(why string) {
	c := s.lastCensus
	s.lastCensus = nil
	if c == nil || !c.Fresh() {
		c = s.census()
	}
	for i, l := range s.listeners {
		if l.reuseport() {
			s.checkGroup(c, i, l, why)
		}
	}
}

func (s *Supervisor) checkGroup(c *reuse.Census, i int, l *listener, why string) {
	a, err := c.Audit(l.group)
	if err != nil {
		if !errors.Is(err, reuse.ErrClosed) {
			s.log.Warn("read the reuseport group from the kernel", "listener", l.spec.Name, "error", err)
		}
		return
	}
	if a.Frozen {
		return // another hotswap steers it now
	}
	for _, f := range a.Foreign {
		s.stats.foreign++
		s.log.Warn("a socket hotswap does not own joined the reuseport group: it is never steered to; another process of this user listens on the address with SO_REUSEPORT",
			"listener", l.spec.Name, "address", f.Addr.String(), "inode", f.Inode, "uid", f.UID, "queue", f.Queue)
	}
	owners := s.owners(i)
	var problems []string
	for _, m := range a.Lost {
		problems = append(problems, fmt.Sprintf("inode %d (%s) was shut down while hotswap held it", m.Inode(), owners[m]))
	}
	var leaked []*reuse.Member
	for _, m := range l.group.Members() {
		if _, ok := owners[m]; !ok {
			q, _ := a.Queue(m)
			problems = append(problems, fmt.Sprintf("inode %d is held only by hotswap, no generation accepts from it (queue %d)", m.Inode(), q))
			leaked = append(leaked, m)
		}
	}
	for _, m := range a.QueuedSpares {
		q, _ := a.Queue(m)
		problems = append(problems, fmt.Sprintf("spare inode %d, never steered to, has %d connections queued", m.Inode(), q))
		leaked = append(leaked, m)
	}
	for _, ino := range a.Leaving {
		q, _ := a.QueueOf(ino)
		if _, relaying := s.relaying.Load(ino); q == 0 || relaying || s.leavingOfLive(i, ino) || s.previous[ino] || s.warnedStale[ino] {
			continue
		}
		problems = append(problems, fmt.Sprintf("inode %d has %d connections queued and is held by a process hotswap no longer runs", ino, q))
		s.warnedStale[ino] = true
	}
	if len(problems) == 0 {
		return
	}
	s.stats.repairs += len(problems)
	s.log.Error("reuseport group does not match the kernel: repaired", "listener", l.spec.Name, "after", why,
		"problems", strings.Join(problems, "; "), "kernel", kernelView(a), "model", a.Model.String(), "generations", s.ownerView(owners))
	for _, m := range leaked {
		s.handQueue(l, m)
	}
}

// leavingOfLive reports whether ino is a released member of a live
// generation (one that is draining and still accepts from it).
func (s *Supervisor) leavingOfLive(i int, ino uint64) bool {
	for _, g := range s.live {
		if m := member(g, i); m != nil && m.Inode() == ino {
			return true
		}
	}
	return false
}

// owners maps every member of listener i that is rightly held to who
// holds it: a live generation, the restart (orphans) or the first
// generation taking over from a previous hotswap (adopted). The names
// are made only for a log line: the check runs for every group after
// every event.
func (s *Supervisor) owners(i int) map[*reuse.Member]owner {
	o := map[*reuse.Member]owner{}
	for _, g := range s.live {
		if m := member(g, i); m != nil {
			o[m] = owner{gen: g}
		}
	}
	for _, sl := range s.slots {
		if i < len(sl.orphans) && sl.orphans[i] != nil && sl.current == nil {
			o[sl.orphans[i]] = owner{restart: sl.i, orphan: true}
		}
	}
	if i < len(s.adopted) && s.adopted[i] != nil {
		o[s.adopted[i]] = owner{}
	}
	return o
}

// owner is who rightly holds a member: a live generation, the restart of
// a slot, or (neither) the previous hotswap's generation.
type owner struct {
	gen     *gen
	restart int
	orphan  bool
}

func (o owner) String() string {
	switch {
	case o.gen != nil:
		return fmt.Sprintf("generation %d, %s", o.gen.id, o.gen.state)
	case o.orphan:
		return fmt.Sprintf("the next generation (restart of worker %d)", o.restart)
	}
	return "the previous hotswap's generation (adopted)"
}

func (s *Supervisor) ownerView(o map[*reuse.Member]owner) string {
	var b []string
	for m, who := range o {
		b = append(b, fmt.Sprintf("inode %d: %s", m.Inode(), who))
	}
	return strings.Join(b, "; ")
}

func kernelView(a reuse.Audit) string {
	var b []string
	for _, k := range a.Kernel {
		b = append(b, fmt.Sprintf("inode %d queue %d uid %d", k.Inode, k.Queue, k.UID))
	}
	return strings.Join(b, "; ")
}

// relayOrphans hands the queues of sl's orphaned members (a crashed
// current generation's, kept for a restart that a successful reload made
// unnecessary) to the serving generation, and closes them.
func (s *Supervisor) relayOrphans(sl *slot) {
	for i, m := range sl.orphans {
		if m != nil {
			sl.orphans[i] = nil
			s.handQueue(s.listeners[i], m)
		}
	}
}

// handQueue takes m out of its group without losing its queue: hotswap
// keeps a listener on a duplicate, removes m (the program no longer names
// it), accepts what is queued and what was in flight for DrainGrace, and
// relays each connection to the address the client dialled, where the
// program steers it to the serving generation. Then it closes the
// duplicate and syncs the group.
func (s *Supervisor) handQueue(l *listener, m *reuse.Member) {
	f, err := m.Dup()
	var ln net.Listener
	if err == nil {
		ln, err = net.FileListener(f)
		f.Close()
	}
	if rerr := l.group.Remove(m); rerr != nil && !errors.Is(rerr, reuse.ErrClosed) {
		s.log.Warn("remove a leaked reuseport member", "listener", l.spec.Name, "error", rerr)
	}
	s.releaseMember(l, m) // a stopped generation's kept copy: the duplicate holds it now
	if err != nil {
		s.log.Warn("hand a leaked member's queue over: its queue is lost", "listener", l.spec.Name, "error", err)
		l.group.Sync()
		return
	}
	s.relaying.Store(m.Inode(), true)
	s.wg.Go(func() {
		tl := ln.(*net.TCPListener)
		var relays sync.WaitGroup
		for {
			tl.SetDeadline(time.Now().Add(s.cfg.DrainGrace))
			c, err := tl.Accept()
			if err != nil {
				break // nothing more arrived within the grace
			}
			relays.Go(func() { s.relay(c) })
		}
		// The socket leaves the group now; the relays (a keep-alive
		// client's may last) do not hold it.
		ln.Close()
		l.group.Sync()
		s.relaying.Delete(m.Inode())
		relays.Wait()
	})
}

// relay copies c to and from a new connection to c's own local address,
// until either side is done or it is idle for the drain timeout.
func (s *Supervisor) relay(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", c.LocalAddr().String(), s.cfg.DrainTimeout)
	if err != nil {
		s.log.Warn("relay a queued connection to the serving generation", "error", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			src.SetReadDeadline(time.Now().Add(s.cfg.DrainTimeout))
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
