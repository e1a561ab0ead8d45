package healthgate

import (
	"context"
	"fmt"
	"net"
)

// dialer returns the net.Dialer of http and tcp probes: from
// opts.LocalAddr, through opts.Control, never reusing a connection.
func dialer(opts Options) *net.Dialer {
	d := &net.Dialer{Control: opts.Control, KeepAlive: -1}
	if opts.LocalAddr != nil {
		d.LocalAddr = opts.LocalAddr
		if opts.LocalAddr.Port != 0 {
			// A fixed source port must be bindable again while the last
			// attempt's connection is in TIME_WAIT.
			d.Control = reuseAddrControl(opts.Control)
		}
	}
	return d
}

// dial connects as dialer(opts) does, then runs opts.Verify.
func dial(opts Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := dialer(opts)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil || opts.Verify == nil {
			return c, err
		}
		if err := opts.Verify(c); err != nil {
			c.Close()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return c, nil
	}
}
