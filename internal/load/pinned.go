package load

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hotswap-dev/hotswap/internal/sys"
)

// FromCPU sends n requests to addr, each on a new connection dialled from
// a thread pinned to cpu, one at a time, and counts the answers by
// X-Version. On loopback the kernel handles a SYN on the CPU of the thread
// that sent it, so this is how a test or benchmark knows which CPU a
// reuseport group's steering program saw (SKF_AD_CPU).
func FromCPU(addr string, cpu, n int) (map[string]int, error) {
	got := map[string]int{}
	err := sys.OnCPU(cpu, func() error {
		for range n {
			v, err := getOnThread(addr)
			if err != nil {
				return fmt.Errorf("from CPU %d: %w", cpu, err)
			}
			got[v]++
		}
		return nil
	})
	return got, err
}

// getOnThread sends GET / over a connection whose connect() runs on the
// calling (locked) thread, and returns X-Version: net.Dial connects on the
// calling goroutine, http.Client would dial on another.
func getOnThread(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("X-Version"), nil
}
