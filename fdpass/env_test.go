package fdpass

import (
	"slices"
	"testing"
)

// TestChildEnvDropsInherited: the hand-off variables hotswap itself
// inherited never reach a child, tableflip's sentinel included (issue 15,
// item 8: after a self-upgrade it made a nested tableflip program read its
// listeners as tableflip's pipes).
func TestChildEnvDropsInherited(t *testing.T) {
	base := []string{"PATH=/bin", "LISTEN_FDS=2", "NOTIFY_SOCKET=/run/x", "HOTSWAP_GENERATION=7", "TABLEFLIP_HAS_PARENT_7DIU3=1", "EINHORN_FD_0=3", "HOME=/root"}
	got := ChildEnv(base, []string{"http"}, 2)
	want := []string{"PATH=/bin", "HOME=/root", "EINHORN_FD_0=3", "LISTEN_FDS=1", "LISTEN_FDNAMES=http", "NGINX=3;", "EINHORN_FD_COUNT=1", "HOTSWAP_GENERATION=2"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
