package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
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
	metrics *http.Server    // nil without --metrics
	wg      sync.WaitGroup
	once    sync.Once
}

// start serves the control plane for sup until Close; stop asks hotswap to
// stop gracefully.
func (c *controlOptions) start(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger, stop func(error)) (_ io.Closer, retErr error) {
	p := &controlPlane{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if c.path != controlOff {
		path := c.path
		if path == "" {
			var err error
			if path, err = control.MakeDefaultPath(os.Getpid()); err != nil {
				return nil, err
			}
		}
		ctl, err := control.Listen(control.Config{Path: path, Target: sup, Stop: stop, Logger: log})
		if err != nil {
			return nil, err
		}
		p.ctl = ctl
		log.Info("control socket", "path", path)
	}
	if c.metrics != "" {
		if err := p.serveMetrics(c.metrics, newMetricsHandler(sup, c.obs), log); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *controlPlane) serveMetrics(addr string, h http.Handler, log hclog.Logger) error {
	ln, err := net.Listen("tcp", addr)
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
