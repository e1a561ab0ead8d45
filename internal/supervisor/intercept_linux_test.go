package supervisor

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/intercept"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"golang.org/x/sys/unix"
)

func openFDs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestInterceptHookBeforeAbort: before puts the shim's end after the
// listeners and names it in the environment; abort closes what before made.
func TestInterceptHookBeforeAbort(t *testing.T) {
	err := intercept.Supported()
	proctest.RequireCI(t, err == nil, fmt.Sprintf("seccomp bind interception (%v)", err))
	ln, err := reuse.Listen("tcp", "127.0.0.1:0", reuse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Supervisor{cfg: Config{Listeners: []ListenSpec{{Name: "a", Network: "tcp4", Address: "127.0.0.1:0"}}}}
	h, err := newInterceptHook(s)
	if err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	cmd := &exec.Cmd{ExtraFiles: []*os.File{ln, ln}, SysProcAttr: &syscall.SysProcAttr{}}
	if err := h.before(7, cmd); err != nil {
		t.Fatal(err)
	}
	if len(cmd.ExtraFiles) != 3 || cmd.ExtraFiles[0] != ln || cmd.ExtraFiles[1] != ln {
		t.Fatalf("ExtraFiles %v: want the listeners first, then the shim's end", cmd.ExtraFiles)
	}
	if want := fdpass.InterceptFDEnv + "=5"; !slices.Contains(cmd.Env, want) {
		t.Errorf("env %q, want %s", cmd.Env, want)
	}
	if cmd.SysProcAttr.Pdeathsig != syscall.SIGKILL {
		t.Errorf("Pdeathsig %v, want SIGKILL", cmd.SysProcAttr.Pdeathsig)
	}
	typ, err := unix.GetsockoptInt(int(cmd.ExtraFiles[2].Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		t.Errorf("shim end: SO_TYPE %d, %v; want SOCK_SEQPACKET", typ, err)
	}
	h.abort(7)
	h.abort(7) // idempotent
	if after := openFDs(t); !slices.Equal(before, after) {
		t.Errorf("fds before %v, after abort %v", before, after)
	}
}

// TestInterceptRefusesUnix: a unix listener cannot be intercepted.
func TestInterceptRefusesUnix(t *testing.T) {
	err := intercept.Supported()
	proctest.RequireCI(t, err == nil, fmt.Sprintf("seccomp bind interception (%v)", err))
	s := &Supervisor{cfg: Config{Listeners: []ListenSpec{{Name: "u", Network: "unix", Address: "/run/x.sock"}}}}
	if _, err := newInterceptHook(s); err == nil {
		t.Fatal("got nil, want an error for a unix listener")
	}
}

func TestInterceptNetwork(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tcp", "tcp"}, {"tcp4", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"}, {"unix", ""},
	} {
		got, err := interceptNetwork(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("interceptNetwork(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestInterceptTableAddr: the table carries the port the kernel chose for
// a listener given port 0.
func TestInterceptTableAddr(t *testing.T) {
	ln, err := reuse.Listen("tcp", "127.0.0.1:0", reuse.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := reuse.Addr(ln)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := addrPort(a)
	s := &Supervisor{cfg: Config{Listeners: []ListenSpec{{Name: "a", Network: "tcp", Address: "127.0.0.1:0"}}}}
	h := &interceptHook{s: s, starting: map[int]*intercept.Handshake{}}
	table, err := h.table(&gen{id: 1, cmd: &exec.Cmd{ExtraFiles: []*os.File{ln}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != 1 || table[0].Addr != want || table[0].Addr.Port() == 0 || table[0].Network != "tcp" || table[0].File != ln {
		t.Fatalf("table %+v, want one tcp entry at %v", table, want)
	}
	if f, ok := table.Lookup("tcp", netip.AddrPortFrom(netip.IPv4Unspecified(), want.Port())); !ok || f != ln {
		t.Errorf("a bind of 0.0.0.0:%d does not get the listener", want.Port())
	}
}
