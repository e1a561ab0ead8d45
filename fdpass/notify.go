package fdpass

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notify sends state, newline-separated KEY=VALUE assignments such as
// "READY=1" or "STATUS=loading\nEXTEND_TIMEOUT_USEC=5000000", to the socket
// named by $NOTIFY_SOCKET ([NotifySocket]), as sd_notify(3) does. It does nothing and
// returns nil when the variable is unset or empty. A path starting with
// "@" is an abstract address. A Go server run by hotswap with --ready
// notify calls Notify("READY=1") once it serves; hotswap itself uses it to
// tell its own service manager READY=1, RELOADING=1 and STOPPING=1.
func Notify(state string) error { return NotifyTo(os.Getenv(NotifySocket), state) }

// NotifyTo sends state to the notify socket at addr, a path or an @abstract
// name; it does nothing when addr is empty.
func NotifyTo(addr, state string) error {
	if addr == "" {
		return nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return fmt.Errorf("fdpass: notify %s: unsupported address (want a path or @abstract)", addr)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("fdpass: notify %s: %w", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("fdpass: notify %s: %w", addr, err)
	}
	return nil
}
