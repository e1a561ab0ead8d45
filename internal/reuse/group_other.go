//go:build !linux

package reuse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

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

func listeningInodes(string, int) (map[uint64]bool, error) { return nil, errGroupUnsupported }

func inspectListener(*os.File) (uint64, int, error) { return 0, 0, errGroupUnsupported }

func listenSibling(*os.File) error { return errGroupUnsupported }

func acceptQueue(*os.File) (uint32, error) { return 0, errGroupUnsupported }

// DialProbe connects to the group's port from [Group.ProbeAddr].
func (g *Group) DialProbe(context.Context) (*net.TCPConn, error) { return nil, errGroupUnsupported }

// OpenConns counts the TCP connections on port that pid's process tree holds.
func OpenConns(pid int, port int) (int, error) { return 0, errGroupUnsupported }

// Dup returns a CLOEXEC duplicate of the supervisor's copy of m.
func (m *Member) Dup() (*os.File, error) { return nil, errGroupUnsupported }

// InUse is not supported on this platform.
func InUse(string, string) (bool, error) { return false, errGroupUnsupported }

// Listeners is not supported on this platform.
func Listeners(string, int) ([]Listener, error) { return nil, errGroupUnsupported }
