package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/healthgate"
	"golang.org/x/sys/unix"
)

// DefaultReady is the readiness gate when none is configured: the
// generation has stayed up for a second.
const DefaultReady = "1s"

func mustParse(spec string) healthgate.Check {
	c, err := healthgate.Parse(spec)
	if err != nil {
		panic(err)
	}
	return c
}

// readiness is what a generation needs for its gate: the {port} socket,
// and a notify socket for --ready notify.
type readiness struct {
	health *healthgate.HealthSocket
	notify *healthgate.NotifySocket
}

// port is the value of {port}, 0 without a health socket.
func (r readiness) port() int {
	if r.health == nil {
		return 0
	}
	return r.health.Port()
}

// prepareReady makes what generation id's gate needs, before it starts,
// and returns the child's argv and extra environment. The {port} socket is
// bound here and handed to the generation after its listeners, named
// healthgate.HealthName; the supervisor's copy stays open until the
// generation exits, so nobody else can bind the port meanwhile.
func (s *Supervisor) prepareReady(id, w int, files argFiles) (_ readiness, _, _ []string, retErr error) {
	var r readiness
	var env []string
	defer func() {
		if retErr != nil {
			r.close()
		}
	}()
	if s.cfg.Ready.UsesPort() || slices.ContainsFunc(s.cfg.Command, func(a string) bool { return strings.Contains(a, "{port}") }) {
		h, err := healthgate.ListenHealth()
		if err != nil {
			return r, nil, nil, fmt.Errorf("bind {port} for generation %d: %w", id, err)
		}
		r.health = h
	}
	if s.cfg.Ready.NeedsNotify() {
		name := "notify-" + strconv.Itoa(id) + ".sock"
		if s.pool() {
			// A restarted worker keeps its generation's number.
			s.starts++
			name = fmt.Sprintf("notify-%d-%d-%d.sock", id, w, s.starts)
		}
		ns, err := healthgate.ListenNotify(filepath.Join(s.runDir, name))
		if err != nil {
			return r, nil, nil, fmt.Errorf("notify socket for generation %d: %w", id, err)
		}
		r.notify = ns
		env = append(env, fdpass.NotifySocket+"="+ns.Path())
	}
	argv := healthgate.ExpandArgs(files.expand(s.cfg.Command), healthgate.Vars{Gen: id, Worker: w, Port: r.port()})
	return r, argv, env, nil
}

// handOut adds the health socket, if any, after the listeners: files and
// names are what the generation receives.
func (r readiness) handOut(files []*os.File, names []string) ([]*os.File, []string) {
	if r.health == nil {
		return files, names
	}
	return append(files, r.health.File()), append(slices.Clip(names), healthgate.HealthName)
}

func (r readiness) close() {
	if r.notify != nil {
		r.notify.Close()
	}
	if r.health != nil {
		r.health.Close()
	}
}

// waitReady runs g's readiness gate. ctx is cancelled with a cause when g
// exits.
func (s *Supervisor) waitReady(ctx context.Context, g *gen) error {
	c := s.gateCheck(g)
	opts := healthgate.Options{Timeout: s.cfg.ReadyTimeout}
	if g.ready.health != nil {
		opts.Verify = g.ready.health.Verify
	}
	if src, ok := s.probeFor(probeAddr(c)); ok && g.members != nil {
		// A probe of the public port from the group's probe address is
		// steered to g's own socket: it tests exactly g. (healthgate sets
		// SO_REUSEADDR on a fixed source port itself.)
		opts.LocalAddr = net.TCPAddrFromAddrPort(src)
	}
	if g.udpProbe.IsValid() {
		opts.Env = append(opts.Env, fdpass.ProbeSource+"="+g.udpProbe.String())
	}
	return healthgate.Wait(ctx, c, healthgate.Target{PID: g.pid, Notify: g.ready.notify, Options: opts})
}

// gateCheck is g's readiness check, its variables expanded.
func (s *Supervisor) gateCheck(g *gen) healthgate.Check {
	return s.cfg.Ready.Expand(healthgate.Vars{Gen: g.id, Worker: g.worker, PID: g.pid, Port: g.ready.port()})
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
	if err := fdpass.NotifyTo(s.upstream, state); err != nil {
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
