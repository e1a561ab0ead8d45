package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/pflag"
)

// --on-term values.
const (
	onTermDrain = "drain"
	onTermExit  = "exit"
)

type config struct {
	version, listen, name, healthListen string
	healthStatus, status                int
	notify                              bool
	startDelay, crashAfter              time.Duration
	exitAtStart                         int // -1: off
	onTerm                              string
	ignoreTerm                          bool
	stallOn                             time.Duration
	tlsCert, tlsKey                     string
	spawnGrandchild                     bool
	drainTimeout                        time.Duration
	idleTimeout                         time.Duration
	plainShutdown                       bool
	reportSignals                       string
	sleep                               time.Duration // hidden: the grandchild's mode
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := pflag.NewFlagSet("goapp", pflag.ContinueOnError)
	fs.StringVar(&c.version, "version", "v1", "version to report in X-Version and the body")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "address to listen on when not started by hotswap")
	fs.StringVar(&c.name, "name", "http", "name of the inherited listener (LISTEN_FDNAMES)")
	fs.StringVar(&c.healthListen, "health-listen", "", "also serve /healthz on this address: on the inherited socket named health (hotswap's {port}) if there is one, else bound by goapp itself")
	fs.IntVar(&c.healthStatus, "health-status", http.StatusOK, "status of /healthz")
	fs.IntVar(&c.status, "status", http.StatusOK, "status of every other path")
	fs.BoolVar(&c.notify, "notify", false, "send READY=1 to $NOTIFY_SOCKET once serving")
	fs.DurationVar(&c.startDelay, "start-delay", 0, "sleep this long before accepting")
	fs.IntVar(&c.exitAtStart, "exit-at-start", -1, "exit at once with this status")
	fs.DurationVar(&c.crashAfter, "crash-after", 0, "exit with status 3 this long after accepting began")
	fs.StringVar(&c.onTerm, "on-term", onTermDrain, "on SIGTERM, SIGQUIT or SIGINT: drain, or exit at once with 128+signal")
	fs.BoolVar(&c.ignoreTerm, "ignore-term", false, "ignore SIGTERM and SIGQUIT")
	fs.DurationVar(&c.stallOn, "stall-on", 0, "on SIGUSR1, stop accepting for this long")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate file")
	fs.StringVar(&c.tlsKey, "tls-key", "", "serve HTTPS with this key file")
	fs.BoolVar(&c.spawnGrandchild, "spawn-grandchild", false, "start a sleeping grandchild that outlives goapp")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "bound on the drain after a stop signal")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 0, "close a keep-alive connection idle this long (0: never)")
	fs.BoolVar(&c.plainShutdown, "plain-shutdown", false, "drain with http.Server.Shutdown alone instead of fdpass.ServeHTTP (the control of the drain tests)")
	fs.StringVar(&c.reportSignals, "report-signals", "", "append the name of every SIGUSR1, SIGUSR2 and SIGWINCH to this file")
	fs.DurationVar(&c.sleep, "sleep", 0, "sleep this long and exit")
	if err := fs.MarkHidden("sleep"); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	return c, c.validate(fs)
}

func (c *config) validate(fs *pflag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	case c.onTerm != onTermDrain && c.onTerm != onTermExit:
		return fmt.Errorf("--on-term %q: want %s or %s", c.onTerm, onTermDrain, onTermExit)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return fmt.Errorf("--tls-cert and --tls-key go together")
	case fs.Changed("exit-at-start") && (c.exitAtStart < 0 || c.exitAtStart > 255):
		return fmt.Errorf("--exit-at-start %d: want 0 to 255", c.exitAtStart)
	case c.healthStatus < 100 || c.healthStatus > 999 || c.status < 100 || c.status > 999:
		return fmt.Errorf("--status and --health-status take an HTTP status code")
	case c.drainTimeout <= 0:
		return fmt.Errorf("--drain-timeout %v: want more than 0", c.drainTimeout)
	}
	return nil
}

// tlsConfig loads the key pair, or returns nil for plain HTTP.
func (c *config) tlsConfig() (*tls.Config, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
}
