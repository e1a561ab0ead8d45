package reuse

import (
	"net"
	"os"
	"os/exec"
	"testing"
)

// TestOpenConns: the connections this process accepted on a port and has
// not closed are counted, not the dialling ends (their local port is
// another) nor another process (sleep, which inherited none).
func TestOpenConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var accepted []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		accepted = append(accepted, a)
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	count := func() int {
		t.Helper()
		got, err := OpenConns("tcp", []int{port}, []int{os.Getpid(), other.Process.Pid})
		if err != nil {
			t.Fatal(err)
		}
		if got[other.Process.Pid] != 0 {
			t.Errorf("another process holds %d connections on port %d, want 0", got[other.Process.Pid], port)
		}
		return got[os.Getpid()]
	}
	if n := count(); n != 3 {
		t.Errorf("open connections %d, want the 3 accepted", n)
	}
	accepted[0].Close()
	if n := count(); n != 2 {
		t.Errorf("open connections after closing one %d, want 2", n)
	}
}
