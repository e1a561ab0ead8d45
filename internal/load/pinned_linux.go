package load

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// FromCPU sends n requests to addr, each on a new connection dialled from
// a thread pinned to cpu, one at a time, and counts the answers by
// X-Version. On loopback the kernel handles a SYN on the CPU of the thread
// that sent it, so this is how a test or benchmark knows which CPU a
// reuseport group's steering program saw (SKF_AD_CPU).
func FromCPU(addr string, cpu, n int) (map[string]int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, os.NewSyscallError("sched_getaffinity", err)
	}
	defer unix.SchedSetaffinity(0, &old)
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, os.NewSyscallError("sched_setaffinity", err))
	}
	got := map[string]int{}
	for range n {
		v, err := getOnThread(addr)
		if err != nil {
			return got, fmt.Errorf("from CPU %d: %w", cpu, err)
		}
		got[v]++
	}
	return got, nil
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
