package reuse

import (
	"cmp"
	"slices"
	"sync"
)

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
	socks  []Listener         // sorted by port
	at     map[int][2]int     // a port's range in socks
	added  map[int][]Listener // listened since the read, by port
	epochs map[*Group]uint64  // each group's changes before the read
}

// NewCensus prepares a census of the ports of gs. It reads nothing yet.
func NewCensus(gs []*Group) *Census {
	c := &Census{ports: map[int]bool{}, networks: map[string]bool{}, groups: map[*Group]bool{}}
	for _, g := range gs {
		g.mu.Lock()
		if g.port != 0 && !g.closed {
			c.ports[g.port] = true
			c.networks[g.diagNetworkLocked()] = true
			c.groups[g] = true
		}
		g.mu.Unlock()
	}
	return c
}

// listenersLocked returns the sockets of g's group: those listening on
// g's port at g's address, from the census when it covers g and g has not
// changed since the read, else from a dump of its own; g.mu is held. A nil
// census always dumps. fromCensus says which.
func (c *Census) listenersLocked(g *Group) (ls []Listener, fromCensus bool, err error) {
	ls, fromCensus, err = c.portListenersLocked(g)
	if err != nil {
		return nil, false, err
	}
	return inGroup(ls, g.bound), fromCensus, nil
}

// portListenersLocked is listenersLocked before the match on g's address:
// every listener on g's port of the families g dumps.
func (c *Census) portListenersLocked(g *Group) (ls []Listener, fromCensus bool, err error) {
	if c == nil || !c.groups[g] {
		ls, err = Listeners(g.diagNetworkLocked(), g.port)
		return ls, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read {
		c.read = true
		c.epochs = make(map[*Group]uint64, len(c.groups))
		for o := range c.groups {
			c.epochs[o] = o.changes.Load()
		}
		if c.socks, c.err = censusDump(c.networks, c.ports); c.err == nil {
			slices.SortStableFunc(c.socks, func(a, b Listener) int { return cmp.Compare(a.Addr.Port(), b.Addr.Port()) })
			c.at = make(map[int][2]int, len(c.ports))
			c.added = map[int][]Listener{}
			for i := 0; i < len(c.socks); {
				p, j := c.socks[i].Addr.Port(), i+1
				for j < len(c.socks) && c.socks[j].Addr.Port() == p {
					j++
				}
				c.at[int(p)] = [2]int{i, j}
				i = j
			}
		}
	}
	if c.err != nil {
		return nil, false, c.err
	}
	network := g.diagNetworkLocked()
	if g.changes.Load() != c.epochs[g] {
		ls, err = Listeners(network, g.port)
		return ls, false, err
	}
	r := c.at[g.port]
	ls = c.socks[r[0]:r[1]:r[1]] // shared: callers only read it
	if more := c.added[g.port]; len(more) > 0 {
		ls = append(ls, more...) // a copy: ls has no room
	}
	return ls, true, nil // the other family's sockets go with the address match
}

// agreeLocked records that g's model now follows from the census (it
// applied the departures and foreign sockets the census showed), so the
// census still holds for g; g.mu is held.
func (c *Census) agreeLocked(g *Group) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read && c.err == nil {
		c.epochs[g] = g.changes.Load()
	}
}

// listenedLocked records in the census a socket g has just listened,
// after a look through the census, so the census still holds for g; g.mu
// is held.
func (c *Census) listenedLocked(g *Group, l Listener) {
	if c == nil || !c.groups[g] {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read && c.err == nil && c.epochs[g]+1 == g.changes.Load() {
		c.added[g.port] = append(c.added[g.port], l)
		c.epochs[g]++
	}
}

// Fresh reports whether the census has been read and still holds for
// every group it covers: none changed since, but by applying what it
// showed. A pass that follows another on the same goroutine can then use
// it instead of reading the kernel again.
func (c *Census) Fresh() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read || c.err != nil {
		return false
	}
	for g := range c.groups {
		if g.changes.Load() != c.epochs[g] {
			return false
		}
	}
	return true
}

// Audit is [Group.Audit] through the census.
func (c *Census) Audit(g *Group) (Audit, error) { return g.audit(c) }

// Sync is [Group.Sync] through the census.
func (c *Census) Sync(g *Group) error { return g.sync(c) }

// Take is [Group.Take] through the census.
func (c *Census) Take(g *Group) (*Member, error) { return g.take(c) }

// Steer is [Group.Steer] through the census.
func (c *Census) Steer(g *Group, p Policy) error { return g.steer(c, p) }

// Remove is [Group.Remove] without its close and its look at the kernel:
// the program no longer names m, and the supervisor's copy is kept, so
// the socket stays in the group whatever its children do, until
// [Group.Release], once they have exited. Then [Census.Sync] applies the
// departures, in the order of the releases.
func (c *Census) Remove(g *Group, m *Member) error { return g.remove(c, m, false) }
