package reuse

import "sync"

// Census is one read of the kernel's listening TCP sockets for many
// groups: one sock_diag dump per address family covering every group's
// port, where each group on its own dumps once per look for its own port.
// The kernel walks every listening socket of the namespace for each dump,
// so 1,000 groups looking one by one cost 1,000 walks of 3,000 sockets.
//
// The census is read at its first use, so that what happened before (a
// pass of closes, say) is in it. A group whose membership changed since
// (a listen or close of its own, by this pass or by another goroutine)
// no longer trusts it and dumps its own port, as it does without a
// census: the census never gives a group a view older than its model.
// A census is for one pass over the groups; make a new one for the next.
type Census struct {
	ports    map[int]bool    // the groups' ports when the census was made
	networks map[string]bool // and their networks
	groups   map[*Group]bool

	mu     sync.Mutex
	read   bool
	err    error
	socks  map[int][]Listener // by port
	epochs map[*Group]uint64  // each group's changes before the read
}

// NewCensus prepares a census of the ports of gs. It reads nothing yet.
func NewCensus(gs []*Group) *Census {
	c := &Census{ports: map[int]bool{}, networks: map[string]bool{}, groups: map[*Group]bool{}}
	for _, g := range gs {
		g.mu.Lock()
		if g.port != 0 && !g.closed {
			c.ports[g.port] = true
			c.networks[g.network] = true
			c.groups[g] = true
		}
		g.mu.Unlock()
	}
	return c
}

// listenersLocked returns the listening sockets on g's port, from the
// census when it covers g and g has not changed since the read, else from
// a dump of its own; g.mu is held. A nil census always dumps.
func (c *Census) listenersLocked(g *Group) ([]Listener, error) {
	if c == nil || !c.groups[g] {
		return Listeners(g.network, g.port)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read {
		c.read = true
		c.epochs = make(map[*Group]uint64, len(c.groups))
		for o := range c.groups {
			c.epochs[o] = o.changes.Load()
		}
		var ls []Listener
		if ls, c.err = censusDump(c.networks, c.ports); c.err == nil {
			c.socks = map[int][]Listener{}
			for _, l := range ls {
				p := int(l.Addr.Port())
				c.socks[p] = append(c.socks[p], l)
			}
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	if g.changes.Load() != c.epochs[g] {
		return Listeners(g.network, g.port)
	}
	var out []Listener
	for _, l := range c.socks[g.port] {
		if g.network == "tcp" || (g.network == "tcp4") == l.Addr.Addr().Is4() {
			out = append(out, l)
		}
	}
	return out, nil
}

// Audit is [Group.Audit] through the census.
func (c *Census) Audit(g *Group) (Audit, error) { return g.audit(c) }

// Sync is [Group.Sync] through the census.
func (c *Census) Sync(g *Group) error { return g.sync(c) }

// Take is [Group.Take] through the census.
func (c *Census) Take(g *Group) (*Member, error) { return g.take(c) }

// Steer is [Group.Steer] through the census.
func (c *Census) Steer(g *Group, p Policy) error { return g.steer(c, p) }

// Remove is [Group.Remove] without its last step, the look at whether
// the socket left the group: call [Census.Sync] on the group after the
// last Remove of the pass, so that one read of the kernel sees every
// close.
func (c *Census) Remove(g *Group, m *Member) error { return g.remove(c, m, false) }
