package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/upgrade"
	"github.com/spf13/pflag"
)

// controlOff is the --control value that disables the control socket.
const controlOff = "none"

// controlOptions are the flags of the control socket and metrics.
type controlOptions struct {
	path    string // --control; "" means defaultControlPath
	metrics string // --metrics ADDR; "" means off
	obs     *metricsObserver
}

func (c *controlOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.path, "control", "", "control socket `PATH` for hotswap reload, status, stop and signal (default "+control.DefaultPathHelp+"; "+controlOff+" disables it)")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (HOST:PORT; off by default)")
}

// explicitPath is the --control PATH given, or "" (the default path
// names this pid, and none is shared).
func (c *controlOptions) explicitPath() string {
	if c.path == controlOff {
		return ""
	}
	return c.path
}

// apply sets the supervisor's observer when metrics are on.
func (c *controlOptions) apply(cfg *supervisor.Config) {
	if c.metrics != "" {
		c.obs = newMetricsObserver()
		cfg.Observer = c.obs
	}
}

// controlPlane is the control socket and the metrics server of one run.
type controlPlane struct {
	ctl     *control.Server // nil with --control none
	carried bool            // ctl's socket passes from hotswap to hotswap (--control PATH)
	metrics *http.Server    // nil without --metrics
	wg      sync.WaitGroup
	once    sync.Once
}

// start serves the control plane for sup until Close; stop asks hotswap to
// stop gracefully. An explicit --control socket and the --metrics socket
// pass to the new hotswap of a self-upgrade (up.Carry), which serves them
// at once; the old one stops serving them when it has upgraded away
// (handOff). The default control socket names this pid, and each hotswap
// has its own.
func (c *controlOptions) start(ctx context.Context, sup *supervisor.Supervisor, up *upgrade.Upgrader, log hclog.Logger, stop func(error)) (_ *controlPlane, retErr error) {
	p := &controlPlane{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if c.path != controlOff {
		cfg := control.Config{Path: c.path, Target: sup, Stop: stop, Logger: log}
		if c.path == "" {
			var err error
			if cfg.Path, err = control.MakeDefaultPath(os.Getpid()); err != nil {
				return nil, err
			}
		} else {
			f, _, err := up.Carry("control:"+c.path, func() (*os.File, error) { return control.Bind(c.path) })
			if err != nil {
				return nil, err
			}
			defer f.Close()
			cfg.File, p.carried = f, true
		}
		ctl, err := control.Listen(cfg)
		if err != nil {
			return nil, err
		}
		p.ctl = ctl
		log.Info("control socket", "path", cfg.Path)
	}
	if c.metrics != "" {
		f, _, err := up.Carry("metrics:"+c.metrics, func() (*os.File, error) { return listenTCPFile("--metrics", c.metrics) })
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := p.serveMetrics(f, newMetricsHandler(sup, c.obs), log); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// listenTCPFile binds addr, the value of flag (--metrics, --stop-health),
// and returns the listening socket as a file, which a self-upgrade carries
// to the new hotswap.
func listenTCPFile(flag, addr string) (*os.File, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // "listen tcp ADDR: ..." says what the flag says
		}
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	defer ln.Close()
	return ln.(*net.TCPListener).File()
}

// handOff stops serving once another hotswap serves the control and
// metrics sockets: a carried control socket's file stays for it (the
// default one names this pid and is this hotswap's alone).
func (p *controlPlane) handOff() {
	if p.ctl != nil && p.carried {
		p.ctl.Keep()
	}
	p.Close()
}

func (p *controlPlane) serveMetrics(f *os.File, h http.Handler, log hclog.Logger) error {
	ln, err := net.FileListener(f)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	log.Info("metrics listening", "address", ln.Addr().String())
	p.metrics = newMetricsServer(h, log)
	p.wg.Go(func() {
		if err := p.metrics.Serve(newCapListener(ln, metricsMaxConns, log)); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve metrics", "error", err)
		}
	})
	return nil
}

// Close closes the control socket and the metrics server and waits for
// their goroutines. It is idempotent.
func (p *controlPlane) Close() error {
	p.once.Do(func() {
		if p.ctl != nil {
			p.ctl.Close()
		}
		if p.metrics != nil {
			p.metrics.Close()
		}
		p.wg.Wait()
	})
	return nil
}
