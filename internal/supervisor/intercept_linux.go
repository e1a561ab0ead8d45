package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/intercept"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// ReceiveTimeout bounds how long a generation's exec shim may take to send
// its seccomp notification fd; the Go shim needs about 5 ms.
const ReceiveTimeout = 10 * time.Second

// interceptHook hands each generation's bind() on a supervised address the
// supervisor's socket; see package intercept and docs/intercept.md.
//
// Every generation starts with Pdeathsig SIGKILL. Once nobody holds the
// notification fd, each trapped call of the child (bind, listen,
// shutdown(SHUT_RD)) fails with ENOSYS, so a child that outlived hotswap
// would serve on but could never bind again, and would keep the port from
// a restarted hotswap. The kernel delivers Pdeathsig when the thread that
// forked exits, not the process; Go ends a thread only when a goroutine
// returns while locked to it (runtime.LockOSThread), which hotswap never
// does on the goroutines that start generations, so here the signal means
// "hotswap died".
type interceptHook struct {
	s *Supervisor
	// Owned by the run loop (hooks run there).
	starting map[int]*intercept.Handshake
}

func newInterceptHook(s *Supervisor) (*interceptHook, error) {
	if err := intercept.Supported(); err != nil {
		return nil, fmt.Errorf("intercept binds: %w", err)
	}
	for _, l := range s.cfg.Listeners {
		if _, err := interceptNetwork(l.Network); err != nil {
			return nil, fmt.Errorf("intercept binds: listener %s: %w", l, err)
		}
	}
	return &interceptHook{s: s, starting: map[int]*intercept.Handshake{}}, nil
}

// interceptNetwork maps a listener's network to the one package intercept
// matches binds of.
func interceptNetwork(network string) (string, error) {
	switch n := strings.TrimRight(network, "46"); n {
	case "tcp", "udp":
		return n, nil
	}
	return "", fmt.Errorf("only tcp and udp addresses can be intercepted, not %s (a unix socket path is not bound through a port the child names)", network)
}

func (h *interceptHook) before(id int, cmd *exec.Cmd) error {
	hs, err := intercept.NewHandshake(cmd, strconv.Itoa(id))
	if err != nil {
		return err
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	h.starting[id] = hs
	return nil
}

func (h *interceptHook) abort(id int) {
	if hs, ok := h.starting[id]; ok {
		delete(h.starting, id)
		hs.Close()
	}
}

// after builds g's table from its listener files (the first ones in
// ExtraFiles, which in reuseport mode are g's own siblings) and serves its
// notifications until g exits.
func (h *interceptHook) after(g *gen) {
	hs, ok := h.starting[g.id]
	if !ok {
		return
	}
	delete(h.starting, g.id)
	hs.Started()
	table, err := h.table(g)
	if err != nil {
		g.log.Error("intercept binds: build table, killing generation", "error", err)
		hs.Close()
		_ = g.cmd.Process.Kill()
		return
	}
	h.s.wg.Go(func() {
		defer hs.Close()
		h.serve(g, hs, table)
	})
}

// serve receives g's notification fd and answers its binds until g exits.
// A shim that never sends it (it failed and exits 126, or hangs) is killed,
// so that the failure reaches the gate at once.
func (h *interceptHook) serve(g *gen, hs *intercept.Handshake, table intercept.Listeners) {
	errTimeout := fmt.Errorf("no notification fd from the exec shim within %s", ReceiveTimeout)
	ctx, cancel := context.WithTimeoutCause(g.ctx, ReceiveTimeout, errTimeout)
	notify, err := hs.Receive(ctx)
	if err != nil && errors.Is(context.Cause(ctx), errTimeout) {
		err = fmt.Errorf("%w: %w", err, errTimeout)
	}
	cancel()
	if err != nil {
		h.failed(g, err)
		return
	}
	defer notify.Close()
	st, err := intercept.Serve(g.ctx, notify, g.pid, table)
	if errors.Is(err, context.Cause(g.ctx)) {
		err = nil // g exited: the normal end
	}
	for _, e := range st.Errors {
		g.log.Warn("intercept binds: handling a notification", "error", e)
	}
	if err != nil {
		g.log.Warn("intercept binds: serve ended", "error", err)
	}
	g.log.Debug("intercept binds: stats", "binds", st.Binds, "swapped", st.Swapped,
		"listens", st.Listens, "shutdowns", st.Shutdowns, "continued", st.Continued,
		"gone", st.Gone, "failed", st.Failed)
}

// shimGrace is how long a shim that closed its socket without sending may
// take to exit: it is printing why (exit 126), and killing it at once
// would lose the message.
const shimGrace = 2 * time.Second

// failed handles a shim that did not send its notification fd. One that
// failed exits by itself and has said why on stderr; any other is killed,
// since its binds could never be answered.
func (h *interceptHook) failed(g *gen, err error) {
	t := time.NewTimer(shimGrace)
	defer t.Stop()
	select {
	case <-g.exited:
		return
	case <-t.C:
	}
	g.log.Error("intercept binds: killing generation", "error", err)
	_ = g.cmd.Process.Kill()
}

// table lists g's listeners with the address each is bound to; the port is
// the one the kernel chose when the user gave port 0.
func (h *interceptHook) table(g *gen) (intercept.Listeners, error) {
	specs := h.s.cfg.Listeners
	if len(g.cmd.ExtraFiles) < len(specs) {
		return nil, fmt.Errorf("generation %d has %d descriptors for %d listeners", g.id, len(g.cmd.ExtraFiles), len(specs))
	}
	t := make(intercept.Listeners, 0, len(specs))
	for i, l := range specs {
		network, err := interceptNetwork(l.Network)
		if err != nil {
			return nil, err
		}
		f := g.cmd.ExtraFiles[i]
		a, err := reuse.Addr(f)
		if err != nil {
			return nil, fmt.Errorf("address of listener %s: %w", l, err)
		}
		ap, ok := addrPort(a)
		if !ok {
			return nil, fmt.Errorf("address of listener %s: %v is not an IP address", l, a)
		}
		t = append(t, intercept.Listener{
			Network: network,
			Addr:    ap,
			File:    f,
		})
	}
	return t, nil
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), true
	case *net.UDPAddr:
		return a.AddrPort(), true
	}
	return netip.AddrPort{}, false
}
