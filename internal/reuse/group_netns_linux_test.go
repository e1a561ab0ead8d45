package reuse

import (
	"bufio"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// inNetns runs the calling top-level test inside a new network namespace
// with only lo up (proctest.InNetns), and checks tcp_migrate_req=0 there.
func inNetns(t *testing.T) bool {
	t.Helper()
	if !proctest.InNetns(t) {
		return false
	}
	if m, err := MigrateReq(); err != nil || m != 0 {
		t.Fatalf("got tcp_migrate_req %d (%v), want 0", m, err)
	}
	return true
}

// sink accepts on a dup of a member, as a child generation would, and
// records which sink each client port landed on.
type sink struct {
	ln   net.Listener
	name string
	seen *sync.Map // client port -> sink name
	wg   sync.WaitGroup
}

func newSink(t *testing.T, f *os.File, name string, seen *sync.Map) *sink {
	t.Helper()
	ln, err := net.FileListener(f) // a CLOEXEC dup: the child's copy
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, name: name, seen: seen}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.seen.Store(c.RemoteAddr().(*net.TCPAddr).Port, name)
			c.Close()
		}
	})
	t.Cleanup(s.close)
	return s
}

// close is the child's final close of its copy.
func (s *sink) close() {
	s.ln.Close()
	s.wg.Wait()
}

// landed dials addr count times (from source when it is non-nil) and
// returns how many connections each sink accepted.
func landed(t *testing.T, seen *sync.Map, count int, dial func() (net.Conn, error)) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range count {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.TCPAddr).Port
		deadline := time.Now().Add(2 * time.Second)
		for {
			if v, ok := seen.LoadAndDelete(port); ok {
				got[v.(string)]++
				break
			}
			if time.Now().After(deadline) {
				got["none"]++
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		c.Close()
	}
	return got
}

// lineServer answers one request line per connection with "OK <name>\n".
func serveLine(c net.Conn, name string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return
	}
	c.Write([]byte("OK " + name + "\n"))
}
