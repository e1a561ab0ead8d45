package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/healthgate"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/spf13/pflag"
)

const usageHead = `hotswap runs a server as its child, owns its listening sockets, and replaces
it with a new generation on SIGHUP without refusing a single connection.

Usage:
  hotswap [flags] -- COMMAND [ARG...]
  hotswap reload | status [--json] | stop | signal SIG  [--control PATH | --pidfile PATH]
          (talk to a running hotswap over its control socket; see hotswap reload --help)

Reload:  hotswap reload   (waits: exit 0 once the new generation serves, 1 when it
         was rolled back and the old one still serves), or kill -HUP $(cat PIDFILE)
Status:  hotswap status [--json]   (listeners, generations, reload counts)
Stop:    hotswap stop, or kill -TERM $(cat PIDFILE)   (stop signal to every
         generation, then exit with the current generation's status; 128+N
         for signal N). With --stop-when-idle DUR, SIGTERM first keeps serving
         until no new connection has arrived for DUR.
Watch:   --watch PATH reloads when PATH changes (certbot's live/ links, a
         Kubernetes ConfigMap or Secret volume, an edited file, a new binary).
Signals: hotswap signal SIG; SIGUSR1, SIGUSR2 and SIGWINCH sent to hotswap are
         forwarded to the current generation. kill -s RTMIN+2 upgrades hotswap
         itself: a new hotswap binary inherits the sockets and takes over.

Each generation gets the listeners as fds 3, 4, ... in --listen order, with
LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID (systemd), NGINX="3;4;" (nginx),
EINHORN_FD_COUNT/EINHORN_FD_n (einhorn) and HOTSWAP_GENERATION.

Socket modes (--mode; reuseport is the default for TCP and UDP listeners):
  shared     Every generation accepts from the same socket, so the kernel never
             refuses or resets a queued connection. A new generation takes
             clients as soon as it calls accept(), before it is ready: the
             readiness gate only guarantees that the old generation is not
             stopped too early, and a server that does not drain by itself
             loses what it had accepted when it stops. A probe of the public
             port may be answered by the old generation and proves nothing:
             use notify, {port} (a socket per generation, handed over as fd "health", also expanded in
             the command's arguments), or exec.
  reuseport  TCP and UDP (unix listeners stay shared). Each generation gets
             its own SO_REUSEPORT socket, steered by a BPF program: no client
             reaches it before it is ready (an http:// or tcp:// probe of the
             public port reaches exactly the new generation), and the old one
             keeps accepting until its queue is empty and every connection
             it holds is idle (everything it received has been answered),
             then gets its stop signal. Servers with no graceful shutdown
             lose nothing. UDP: datagrams go to the current generation,
             except QUIC packets whose connection ID carries an older
             generation's prefix (HOTSWAP_QUIC_CID), which keep reaching it
             until it has exited.

Flags:
`

type options struct {
	listen       []string
	pidfile      string
	stopSignal   string
	drainTimeout time.Duration
	maxDraining  int
	connWait     time.Duration
	backoffMax   time.Duration
	mode         string
	skipDrain    bool
	ready        string
	readyTimeout time.Duration
	logFormat    string
	logLevel     string
	outputPrefix string
	workers      string
	rollout      string
	cpuAffinity  bool
	version      bool
	command      []string

	control   controlOptions
	watch     watchOptions
	stop      stopOptions
	intercept interceptOptions
	hardening hardeningOptions
}

func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("hotswap", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringArrayVarP(&o.listen, "listen", "l", nil, "`[NAME=]URL` to listen on: tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, udp://, udp4://, udp6://, unix:///PATH[?mode=0660&owner=U&group=G] (repeatable)")
	fs.StringVar(&o.mode, "mode", string(supervisor.ModeReusePort), "socket `MODE` for TCP and UDP listeners: reuseport or shared (see above); unix listeners are always shared")
	fs.BoolVar(&o.skipDrain, "unsafe-skip-drain", false, "reuseport mode without the drain: the naive SO_REUSEPORT restart, for measurements only")
	_ = fs.MarkHidden("unsafe-skip-drain")
	fs.StringVar(&o.pidfile, "pidfile", "", "write hotswap's pid to `PATH` (atomically; removed on exit); PATH.lock is held for hotswap's life, so a second hotswap on it refuses")
	fs.StringVar(&o.stopSignal, "stop-signal", "TERM", "`SIG` that stops an old generation (TERM, SIGQUIT, 3, ...); nginx wants QUIT, uWSGI INT, HAProxy USR1 (docs/servers.md)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", supervisor.DefaultDrainTimeout, "after the stop signal, wait this long, then SIGKILL")
	fs.DurationVar(&o.connWait, "drain-conn-wait", supervisor.DefaultDrainConnWait, "reuseport mode: before the stop signal, wait at most this long for the old generation's busy connections (a request unanswered) to become idle")
	fs.DurationVar(&o.backoffMax, "restart-backoff-max", supervisor.DefaultBackoffMax, "a generation that dies on its own is restarted after a backoff that doubles from 100ms up to this, while clients wait in the queue")
	fs.IntVar(&o.maxDraining, "max-draining", supervisor.DefaultMaxDraining, "at most `N` old generations draining at once; a reload beyond that fails at once (reuseport mode: a reload waits until the previous old generation has exited)")
	fs.StringVar(&o.workers, "workers", "", "run each generation as `N` processes (auto: one per CPU hotswap may run on); in reuseport mode each worker gets its own socket per TCP listener, HOTSWAP_WORKER (0..N-1) and HOTSWAP_WORKERS; {worker} expands in the command and --ready")
	fs.StringVar(&o.rollout, "rollout", string(supervisor.RolloutRolling), "with --workers, how a reload replaces the pool: rolling (worker i of the new generation starts, is gated and takes slot i; the old worker i drains and stops; then i+1) or all (the whole pool at once)")
	fs.BoolVar(&o.cpuAffinity, "cpu-affinity", false, "with --workers, pin worker i to the i-th CPU hotswap may run on and steer each new connection to the worker of the CPU that handled its SYN")
	fs.StringVar(&o.ready, "ready", supervisor.DefaultReady, "readiness `SPEC`: DURATION (stayed up), notify (READY=1 over sd_notify), http://HOST:PORT/PATH or https:// (2xx), tcp://HOST:PORT (accepts), exec:COMMAND (exits 0); {gen}, {worker}, {pid} and {port} are expanded ({port}: a socket hotswap binds on 127.0.0.1 and hands over as the fd named health)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", supervisor.DefaultReadyTimeout, "a generation not ready after this long is stopped and rolled back")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	fs.StringVar(&o.outputPrefix, "output-prefix", "", "put `TEMPLATE` before every line a generation writes ({gen} is its number, e.g. '[gen {gen}] '); default: output passes through untouched")
	o.control.addFlags(fs)
	o.watch.addFlags(fs)
	o.stop.addFlags(fs)
	o.intercept.addFlags(fs)
	addHardeningFlags(fs, &o.hardening)
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.Usage = func() {} // errors are one line; --help prints usage
	return fs
}

var errHelp = errors.New("help requested")

// parseArgs parses flags and the command after "--".
func parseArgs(args []string) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(discard{})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(os.Stdout, usageHead+fs.FlagUsages())
			return nil, errHelp
		}
		return nil, err
	}
	if o.version {
		return o, nil
	}
	dash := fs.ArgsLenAtDash()
	rest := fs.Args()
	switch {
	case dash < 0 && len(rest) > 0:
		return nil, fmt.Errorf("missing -- before the command %q (usage: hotswap [flags] -- COMMAND [ARG...])", strings.Join(rest, " "))
	case dash < 0:
		return nil, errors.New("missing -- COMMAND (usage: hotswap [flags] -- COMMAND [ARG...])")
	case dash > 0:
		return nil, fmt.Errorf("unexpected argument %q before -- (usage: hotswap [flags] -- COMMAND [ARG...])", rest[0])
	case len(rest) == 0:
		return nil, errors.New("no command after -- (usage: hotswap [flags] -- COMMAND [ARG...])")
	}
	o.command = rest
	return o, nil
}

// config turns options into a supervisor configuration.
func (o *options) config(log hclog.Logger) (supervisor.Config, error) {
	cfg := supervisor.Config{
		Command:       o.command,
		DrainTimeout:  o.drainTimeout,
		MaxDraining:   o.maxDraining,
		DrainConnWait: o.connWait,
		BackoffMax:    o.backoffMax,
		ReadyTimeout:  o.readyTimeout,
		Logger:        log,
		OutputPrefix:  o.outputPrefix,
		TeeStderr:     true, // main runs supervisor.RunTee
	}
	for _, l := range o.listen {
		spec, err := supervisor.ParseListen(l)
		if err != nil {
			return cfg, err
		}
		cfg.Listeners = append(cfg.Listeners, spec)
		o.stop.networks = append(o.stop.networks, spec.Network)
	}
	mode, err := supervisor.ParseMode(o.mode)
	if err != nil {
		return cfg, fmt.Errorf("--mode: %w", err)
	}
	cfg.Mode = mode
	cfg.SkipDrain = o.skipDrain
	if err := o.applyWorkers(&cfg); err != nil {
		return cfg, err
	}
	sig, err := supervisor.ParseSignal(o.stopSignal)
	if err != nil {
		return cfg, fmt.Errorf("--stop-signal: %w", err)
	}
	cfg.StopSignal = sig
	if cfg.Ready, err = healthgate.Parse(o.ready); err != nil {
		return cfg, fmt.Errorf("--ready %w", err)
	}
	o.control.apply(&cfg)
	if err := o.intercept.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := o.hardening.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := o.stop.validate(); err != nil {
		return cfg, err
	}
	if o.watch.debounce <= 0 {
		return cfg, errors.New("--watch-debounce must be positive")
	}
	if o.drainTimeout <= 0 || o.readyTimeout <= 0 {
		return cfg, errors.New("--drain-timeout and --ready-timeout must be positive")
	}
	if o.backoffMax < supervisor.DefaultBackoffMin {
		return cfg, fmt.Errorf("--restart-backoff-max %s: want at least %s, the first backoff", o.backoffMax, supervisor.DefaultBackoffMin)
	}
	return cfg, nil
}

// applyWorkers sets the worker pool of cfg from --workers, --rollout and
// --cpu-affinity.
func (o *options) applyWorkers(cfg *supervisor.Config) error {
	rollout, err := supervisor.ParseRollout(o.rollout)
	if err != nil {
		return fmt.Errorf("--rollout: %w", err)
	}
	cfg.Rollout, cfg.CPUAffinity = rollout, o.cpuAffinity
	switch o.workers {
	case "":
		if o.cpuAffinity {
			return errors.New("--cpu-affinity needs --workers")
		}
		return nil
	case "auto":
		if cfg.Workers, err = supervisor.AutoWorkers(); err != nil {
			return fmt.Errorf("--workers auto: %w", err)
		}
		return nil
	}
	n, err := strconv.Atoi(o.workers)
	if err != nil || n < 1 || n > 1024 {
		return fmt.Errorf("--workers %q: want a number from 1 to 1024, or auto", o.workers)
	}
	cfg.Workers = n
	return nil
}

func newLogger(o *options) (hclog.Logger, error) {
	level := hclog.LevelFromString(o.logLevel)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", o.logLevel)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "hotswap",
		Level:      level,
		JSONFormat: o.logFormat == "json",
		Output:     os.Stderr,
	}), nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
