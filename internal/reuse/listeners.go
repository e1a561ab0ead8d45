package reuse

import "net/netip"

// Listener is one listening TCP socket as sock_diag reports it.
type Listener struct {
	Addr  netip.AddrPort
	Inode uint64
	UID   uint32
	Queue uint32 // idiag_rqueue: the current accept-queue length
}
