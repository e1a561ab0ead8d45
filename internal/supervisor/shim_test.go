package supervisor

import (
	"slices"
	"testing"
)

// TestShellShim: a `sh -c` command gets LISTEN_PID in front of its own
// script (no extra exec), another one runs under /bin/sh, and
// --intercept or --user keep hotswap's own binary as the shim.
func TestShellShim(t *testing.T) {
	s := &Supervisor{}
	path, args, ok := s.shellShim([]string{"sh", "-c", `exec "$0" "$@"`, "goapp", "--v"})
	if !ok || path == "" || !slices.Equal(args, []string{"sh", "-c", shShim + `exec "$0" "$@"`, "goapp", "--v"}) {
		t.Errorf("sh -c: %q %q %v", path, args, ok)
	}
	path, args, ok = s.shellShim([]string{"/usr/bin/goapp", "a b"})
	if binSh() != "" && (!ok || path != "/bin/sh" || !slices.Equal(args, []string{"sh", "-c", shShim + `exec "$0" "$@"`, "/usr/bin/goapp", "a b"})) {
		t.Errorf("direct: %q %q %v", path, args, ok)
	}
	s.cfg.Intercept = true
	if _, _, ok := s.shellShim([]string{"sh", "-c", "true"}); ok {
		t.Error("--intercept: want hotswap's own shim")
	}
}
