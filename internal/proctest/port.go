package proctest

import (
	"net"
	"testing"
)

// FreePort returns a port that was free a moment ago on 127.0.0.1, for a
// server that must be told its port (in its arguments, environment or
// configuration) before hotswap exists to bind it. Everything else binds
// 127.0.0.1:0 and reads the port back.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
