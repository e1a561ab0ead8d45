package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/upgrade"
	"github.com/spf13/pflag"
)

// idlePoll is how often the idle wait looks for new connections.
const idlePoll = 10 * time.Millisecond

// stopOptions are the flags of a stop that waits for the load balancers.
type stopOptions struct {
	idle     time.Duration // --stop-when-idle; 0 stops at once
	timeout  time.Duration // --stop-timeout
	health   string        // --stop-health ADDR
	stopping atomic.Bool   // SIGTERM arrived
	networks []string      // of each --listen, in order
}

func (s *stopOptions) addFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&s.idle, "stop-when-idle", 0, "on SIGTERM, keep serving until no new connection has arrived for this long (the endpoint has left every load balancer), then stop; 0 stops at once")
	fs.DurationVar(&s.timeout, "stop-timeout", time.Minute, "bound on the --stop-when-idle wait; the drain (--drain-timeout) comes after it")
	fs.StringVar(&s.health, "stop-health", "", "serve http://`ADDR`/ (HOST:PORT): 200 while a generation that passed its gate serves, 503 from SIGTERM on")
}

func (s *stopOptions) validate() error {
	if s.idle < 0 || s.timeout <= 0 {
		return errors.New("--stop-when-idle must not be negative and --stop-timeout must be positive")
	}
	return nil
}

// waits reports whether SIGTERM starts an idle wait.
func (s *stopOptions) waits() bool { return s.idle > 0 }

// startHealth serves --stop-health until ctx is done. Its socket passes
// to the new hotswap of a self-upgrade, as the metrics socket does.
func (s *stopOptions) startHealth(ctx context.Context, wg *sync.WaitGroup, sup *supervisor.Supervisor, up *upgrade.Upgrader, log hclog.Logger) error {
	if s.health == "" {
		return nil
	}
	f, _, err := up.Carry("stop-health:"+s.health, func() (*os.File, error) { return listenTCPFile("--stop-health", s.health) })
	if err != nil {
		return err
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("--stop-health: %w", err)
	}
	log.Info("stop health listening", "address", ln.Addr().String())
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			code, msg := http.StatusOK, "serving"
			if s.stopping.Load() {
				code, msg = http.StatusServiceUnavailable, "stopping"
			} else {
				sctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
				st, err := sup.Status(sctx)
				cancel()
				if err != nil || !serving(&st) {
					code, msg = http.StatusServiceUnavailable, "no generation serves"
				}
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(code)
			fmt.Fprintln(w, msg)
		}),
	}
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve stop health", "error", err)
		}
	})
	wg.Go(func() { <-ctx.Done(); srv.Close() })
	return nil
}

// waitIdle runs after SIGTERM: hotswap keeps serving and looks for new
// connections on its TCP listeners every idlePoll, and returns once none
// has arrived for s.idle, or after s.timeout, or when ctx is done.
//
// A new connection is a socket cookie that sock_diag (filtered by port in
// the kernel) did not list in the previous look, in any state from
// SYN_RECV to TIME_WAIT, on a listener's port. It is the same in both
// socket modes and needs no privilege; a connection that opens and closes
// entirely between two looks (10ms) can go unseen, which over a real
// network path (a handshake and a request take round trips) or under any
// sustained traffic does not happen.
func (s *stopOptions) waitIdle(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger) {
	start := time.Now()
	network, ports := s.tcpPorts(ctx, sup)
	log.Info("stop: serving until no new connection arrives", "idle", s.idle, "timeout", s.timeout, "ports", ports)
	if len(ports) == 0 {
		return
	}
	seen, err := reuse.ConnCookies(network, ports)
	if err != nil {
		log.Warn("stop: cannot see new connections; stopping now", "error", err)
		return
	}
	last, arrived := start, 0
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur, err := reuse.ConnCookies(network, ports)
		if err != nil {
			log.Warn("stop: cannot see new connections; stopping now", "error", err)
			return
		}
		// A connection in this dump arrived before it ended: the time
		// after the dump, not the tick's, is when it was last seen new.
		now := time.Now()
		for c := range cur {
			if !seen[c] {
				arrived++
				last = now
			}
		}
		seen = cur
		switch {
		case now.Sub(last) >= s.idle:
			log.Info("stop: no new connection for the idle time; stopping", "idle", s.idle, "waited", now.Sub(start).Round(time.Millisecond), "new_connections", arrived)
			return
		case now.Sub(start) >= s.timeout:
			log.Warn("stop: connections still arriving at --stop-timeout; stopping", "timeout", s.timeout, "new_connections", arrived, "last_new_ago", now.Sub(last).Round(time.Millisecond))
			return
		}
	}
}

// tcpPorts returns the ports of sup's TCP listeners and the network that
// covers their families.
func (s *stopOptions) tcpPorts(ctx context.Context, sup *supervisor.Supervisor) (string, []int) {
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := sup.Status(sctx)
	if err != nil {
		return "", nil
	}
	var ports []int
	v4, v6 := false, false
	for i, l := range st.Listeners {
		if i >= len(s.networks) || !strings.HasPrefix(s.networks[i], "tcp") {
			continue // UDP or a unix socket
		}
		host, port, err := net.SplitHostPort(l.Address)
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
		ports = append(ports, n)
	}
	network := "tcp"
	switch {
	case v4 && !v6:
		network = "tcp4"
	case v6 && !v4:
		network = "tcp6"
	}
	return network, ports
}
