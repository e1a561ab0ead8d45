package healthgate

import (
	"context"
	"net"
)

// tcpProbe is ready when a connection to addr is accepted.
type tcpProbe struct {
	addr string
	opts Options
}

func (p tcpProbe) attempt(ctx context.Context) error {
	c, err := dial(p.opts)(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok && p.opts.LocalAddr != nil && p.opts.LocalAddr.Port != 0 {
		// Reset instead of FIN, so that the fixed source port does not sit
		// in TIME_WAIT towards this address when the next probe needs it.
		tc.SetLinger(0)
	}
	return c.Close()
}
