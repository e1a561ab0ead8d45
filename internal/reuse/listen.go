package reuse

import "errors"

// ErrInUse reports that the address is already bound by someone else.
var ErrInUse = errors.New("reuse: address already in use")

// Options tunes a socket made by [Listen] or [Bind].
type Options struct {
	// ReusePort sets SO_REUSEPORT before bind, so siblings can join one group.
	ReusePort bool
	// Backlog is the listen() backlog; 0 means net.core.somaxconn.
	Backlog int
}
