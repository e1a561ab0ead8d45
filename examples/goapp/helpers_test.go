package main

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func dialRaw(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }

// waitRefused waits up to d until a connection to addr is refused: its
// listener is closed.
func waitRefused(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections %v after SIGTERM (last dial: %v)", addr, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
