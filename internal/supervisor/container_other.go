//go:build !linux

package supervisor

import (
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// containerExitWait is as on Linux; podman generations are Linux only
// (container_linux.go), so nothing below ever has a container to act on.
const containerExitWait = 10 * time.Second

type container struct {
	image, name string
	cidfile     string
	conmonfile  string
	pidfile     string
}

func (c *container) discover(<-chan struct{}) {}

func (c *container) known() (string, int) { return "", 0 }

func (c *container) kill() bool { return false }

func (c *container) cleanup() (killed, lingered bool) { return false, false }

func (g *gen) snapshot(ports []reuse.Port, skip map[uint64]bool) (*reuse.ConnSet, error) {
	return reuse.Snapshot(g.pid, ports, skip)
}
