//go:build !linux

package supervisor

// awaitExit returns at once: cmd.Wait waits for the child itself.
func awaitExit(pid int) {}

// treeGone reports false: without Linux's reuseport groups nothing is
// recycled.
func (g *gen) treeGone() bool { return false }
