package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/internal/healthgate"
	"golang.org/x/sys/unix"
)

// DefaultReady is the readiness gate when none is configured: the
// generation has stayed up for a second.
var DefaultReady = mustParse("1s")

func mustParse(spec string) healthgate.Check {
	c, err := healthgate.Parse(spec)
	if err != nil {
		panic(err)
	}
	return c
}

// readiness is what a generation needs for its gate: a free port for
// {port}, and a notify socket for --ready notify.
type readiness struct {
	port   int
	notify *healthgate.NotifySocket
}

// prepareReady makes what generation id's gate needs, before it starts,
// and returns the child's argv and extra environment.
func (s *Supervisor) prepareReady(id int, files argFiles) (readiness, []string, []string, error) {
	var r readiness
	var env []string
	if s.cfg.Ready.UsesPort() {
		port, err := healthgate.FreePort()
		if err != nil {
			return r, nil, nil, fmt.Errorf("choose {port} for generation %d: %w", id, err)
		}
		r.port = port
	}
	if s.cfg.Ready.NeedsNotify() {
		ns, err := healthgate.ListenNotify(filepath.Join(s.runDir, "notify-"+strconv.Itoa(id)+".sock"))
		if err != nil {
			return r, nil, nil, fmt.Errorf("notify socket for generation %d: %w", id, err)
		}
		r.notify = ns
		env = append(env, healthgate.NOTIFY_SOCKET+"="+ns.Path())
	}
	argv := healthgate.ExpandArgs(files.expand(s.cfg.Command), healthgate.Vars{Gen: id, Port: r.port})
	return r, argv, env, nil
}

func (r readiness) close() {
	if r.notify != nil {
		r.notify.Close()
	}
}

// waitReady runs g's readiness gate. ctx is cancelled with a cause when g
// exits.
func (s *Supervisor) waitReady(ctx context.Context, g *gen) error {
	c := s.cfg.Ready.Expand(healthgate.Vars{Gen: g.id, PID: g.pid, Port: g.ready.port})
	opts := healthgate.Options{Timeout: s.cfg.ReadyTimeout}
	if src, ok := s.probeFor(probeAddr(c)); ok && g.members != nil {
		// A probe of the public port from the group's probe address is
		// steered to g's own socket: it tests exactly g. (healthgate sets
		// SO_REUSEADDR on a fixed source port itself.)
		opts.LocalAddr = net.TCPAddrFromAddrPort(src)
	}
	return healthgate.Wait(ctx, c, healthgate.Target{PID: g.pid, Notify: g.ready.notify, Options: opts})
}

// probeAddr is the host:port an http or tcp check connects to, or "".
func probeAddr(c healthgate.Check) string {
	switch c.Kind() {
	case healthgate.KindHTTP:
		if u, err := url.Parse(c.String()); err == nil {
			if u.Port() == "" {
				return net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
			}
			return u.Host
		}
	case healthgate.KindTCP:
		return strings.TrimPrefix(c.String(), "tcp://")
	}
	return ""
}

// notifyUp tells a service manager above hotswap (systemd Type=notify)
// about hotswap's own state; it does nothing without NOTIFY_SOCKET.
func (s *Supervisor) notifyUp(state string) {
	if s.upstream == "" {
		return
	}
	if err := healthgate.NotifyTo(s.upstream, state); err != nil {
		s.log.Warn("notify service manager", "error", err)
	}
}

// reloadingState is sd_notify's RELOADING=1 with the MONOTONIC_USEC that
// Type=notify-reload units require.
func reloadingState() string {
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10)
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
