package proctest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// WaitLine waits up to d for an output line starting with prefix.
func (p *Proc) WaitLine(prefix string, d time.Duration) string {
	p.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range p.Lines() {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
	}
	p.t.Fatalf("no output line starting with %q within %s", prefix, d)
	return ""
}

// Version sends GET / to addr on a new connection and returns the answer's
// X-Version.
func Version(t testing.TB, addr string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Version")
}

// WaitVersion polls addr with [Version] until version answers, up to d.
func WaitVersion(t testing.TB, addr, version string, d time.Duration) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = Version(t, addr); got == version {
			return
		}
	}
	t.Fatalf("%s answered by %q, want %q", addr, got, version)
}

// RepairMessage is what hotswap logs when a reuseport group's model did
// not match the kernel and it repaired it.
const RepairMessage = "reuseport group does not match the kernel: repaired"

// failOnRepairs fails the test for every steering repair the process
// logged: a repair is a bug the invariant check papered over.
func (p *Proc) failOnRepairs() {
	for _, e := range p.Events(RepairMessage) {
		p.t.Errorf("hotswap repaired a reuseport group: %v", e)
	}
}
