package healthgate

import (
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
