package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
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

// waitAccepted waits up to d until the listener on addr (127.0.0.1) has
// accepted every connection made to it: its accept queue, the rx_queue of
// its LISTEN line in /proc/net/tcp, is empty. A connection still queued
// when the listener closes is reset, not drained.
func waitAccepted(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", n)
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		queued := ""
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && f[1] == local && f[3] == "0A" {
				queued = f[4][strings.IndexByte(f[4], ':')+1:]
			}
		}
		if queued == "" {
			t.Fatalf("no listener %s in /proc/net/tcp", local)
		}
		if q, err := strconv.ParseUint(queued, 16, 64); err == nil && q == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %s connections not accepted after %v", addr, queued, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
