//go:build !linux

package reuse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/bpf"
)

var errGroupUnsupported = fmt.Errorf("reuse: %w", errors.ErrUnsupported)

func bindSibling(string, string) (*os.File, uint64, int, error) {
	return nil, 0, 0, errGroupUnsupported
}

func attachProgram(*os.File, []bpf.RawInstruction) error { return errGroupUnsupported }

func reserveProbe(string, string) (*os.File, netip.AddrPort, error) {
	return nil, netip.AddrPort{}, errGroupUnsupported
}

func censusDump(map[string]bool, map[int]bool) ([]Listener, error) {
	return nil, errGroupUnsupported
}

func inspectListener(*os.File) (uint64, int, error) { return 0, 0, errGroupUnsupported }

func listenSibling(*os.File) error { return errGroupUnsupported }

func acceptQueue(*os.File) (uint32, error) { return 0, errGroupUnsupported }

func reclaim(*os.File) (bool, error) { return false, errGroupUnsupported }

func shutDown(*os.File) bool { return false }

func pollEmpty([]int) (bool, error) { return false, errGroupUnsupported }

// DialProbe connects to the group's port from [Group.ProbeAddr].
func (g *Group) DialProbe(context.Context) (*net.TCPConn, error) { return nil, errGroupUnsupported }

// Dup returns a CLOEXEC duplicate of the supervisor's copy of m.
func (m *Member) Dup() (*os.File, error) { return nil, errGroupUnsupported }

// InUse is not supported on this platform.
func InUse(string, string) (bool, error) { return false, errGroupUnsupported }

// Listeners is not supported on this platform.
func Listeners(string, int) ([]Listener, error) { return nil, errGroupUnsupported }

// Listen is not supported on this platform.
func Listen(network, address string, opts Options) (*os.File, error) {
	return nil, &net.OpError{Op: "listen", Net: network, Err: errGroupUnsupported}
}

// ListenFile is not supported on this platform.
func ListenFile(*os.File, int) error { return errGroupUnsupported }

// Bind is not supported on this platform.
func Bind(network, address string, opts Options) (*os.File, error) {
	return nil, &net.OpError{Op: "bind", Net: network, Err: errGroupUnsupported}
}

// Addr is not supported on this platform.
func Addr(*os.File) (net.Addr, error) { return nil, errGroupUnsupported }

// QueueLen is not supported on this platform.
func QueueLen(*os.File) (queued, backlog uint32, err error) { return 0, 0, errGroupUnsupported }

// Somaxconn is the listen() backlog cap Linux uses by default.
func Somaxconn() int { return 4096 }

// MigrateReq is not supported on this platform.
func MigrateReq() (int, error) { return 0, errGroupUnsupported }

// ConnCookies returns the cookies of the TCP connections on ports.
func ConnCookies(string, []int) (map[uint64]bool, error) { return nil, errGroupUnsupported }

// Port is a local TCP port in the address family of its listener.
type Port struct {
	Family uint8
	Port   int
}

// PortOf is not supported on this platform.
func PortOf(string) (Port, error) { return Port{}, errGroupUnsupported }

// ConnSet is not supported on this platform.
type ConnSet struct{}

// Snapshot is not supported on this platform.
func Snapshot(int, []Port, map[uint64]bool) (*ConnSet, error) { return nil, errGroupUnsupported }

// MaxRTT is not supported on this platform.
func (*ConnSet) MaxRTT() time.Duration { return 0 }

// Refresh is not supported on this platform.
func (*ConnSet) Refresh() error { return errGroupUnsupported }

// Busy is not supported on this platform.
func (*ConnSet) Busy() int { return 0 }

// OpenConns is not supported on this platform.
func OpenConns(string, []int, []int) (map[int]int, error) { return nil, errGroupUnsupported }
