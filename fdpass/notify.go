package fdpass

import (
	"fmt"
	"net"
	"os"
)

// Notify sends state (such as "READY=1") to the supervisor as one
// sd_notify(3) datagram on $NOTIFY_SOCKET, which hotswap sets for --ready
// notify. Go's net package maps a leading '@' to the abstract namespace.
func Notify(state string) error {
	path := os.Getenv(NotifySocket)
	if path == "" {
		return fmt.Errorf("notify %s: %s not set", state, NotifySocket)
	}
	return NotifyTo(path, state)
}

// NotifyTo sends state to the notify socket at path.
func NotifyTo(path, state string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	return nil
}
