package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// upgradeSignal asks hotswap to upgrade itself: `kill -s RTMIN+2 PID`
// (signal 36 with glibc's numbering). SIGUSR1, SIGUSR2 and SIGWINCH are
// forwarded to the generation; SIGPWR shuts containers down under LXC;
// SIGTTIN and SIGTTOU are sent by the terminal driver. A real-time signal
// is never sent by the kernel, so it cannot trigger an upgrade by accident.
var upgradeSignal = syscall.Signal(34 + 2)

// errUpgraded is why an old hotswap stops once its successor is ready.
var errUpgraded = errors.New("upgraded: the new hotswap serves")

// Self-upgrade with cloudflare/tableflip: the running hotswap starts its own
// binary again (os.Args, the same flags) with every listening socket; the
// new hotswap takes them with tableflip (socketSet.listen), starts and gates
// its own first generation on the same sockets, writes the pidfile and tells
// the old one; the old one then stops its generations exactly as on a
// SIGTERM (stop signal, drain timeout, SIGKILL) and exits 0. Both sides
// keep a descriptor of every socket throughout, so its queue is never
// closed. tableflip's own descriptors (its two pipes, fds 3 and 4 of the
// new hotswap, then a copy of each socket from fd 5) are close-on-exec
// in hotswap: main marks every inherited fd CLOEXEC before tableflip.New
// reads them, which only keeps them from generations; tableflip uses them
// in-process and re-numbers them for its own child explicitly.
type upgrader struct {
	once    sync.Once
	timeout time.Duration // bound of an upgrade; set before first use
	upg     *tableflip.Upgrader
	err     error

	mu sync.Mutex // serializes upgrades; guards stop and log
	// stop asks this hotswap to stop; set by start.
	stop func(error)
	log  hclog.Logger
	sup  *supervisor.Supervisor // hands reuseport groups over; set by start

	ready atomic.Bool // the first generation is ready: tableflip told
	away  atomic.Bool // a new hotswap took over
	wg    sync.WaitGroup
}

// self is the process's one upgrader: tableflip allows one per process.
var self upgrader

// selfUpgrader returns the tableflip upgrader, made on first use; a new
// hotswap reads its parent's sockets there.
func selfUpgrader() (*tableflip.Upgrader, error) {
	self.once.Do(func() {
		self.upg, self.err = tableflip.New(tableflip.Options{UpgradeTimeout: self.timeout})
		if self.err != nil {
			self.err = fmt.Errorf("self-upgrade: %w", self.err)
		}
	})
	return self.upg, self.err
}

// upgradeSelf starts a new hotswap from the binary at hotswap's own path
// and returns once it serves (nil: this hotswap now drains and exits) or
// failed (this hotswap keeps serving). The control socket's `upgrade`
// command calls it.
func upgradeSelf(ctx context.Context) error {
	up, err := selfUpgrader()
	if err != nil {
		return err
	}
	if !self.ready.Load() {
		return errors.New("self-upgrade: the first generation is not ready yet")
	}
	self.mu.Lock()
	defer self.mu.Unlock()
	if self.away.Load() {
		return errors.New("self-upgrade: already upgraded")
	}
	keys, err := handOver(ctx, up, self.sup)
	if err != nil {
		return fmt.Errorf("self-upgrade: %w", err)
	}
	done := make(chan error, 1)
	sup, log, stop := self.sup, self.log, self.stop
	go func() { done <- upgrade(up, keys, sup, log, stop) }() // bounded by tableflip's UpgradeTimeout
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the upgrade goes on and settles by itself
	}
}

// upgrade runs tableflip's upgrade and settles the outcome: on failure the
// handed-over groups come back (takeBack); on success this hotswap drains
// its generations and stops.
func upgrade(up *tableflip.Upgrader, keys []string, sup *supervisor.Supervisor, log hclog.Logger, stop func(error)) error {
	if err := up.Upgrade(); err != nil {
		takeBack(up, sup, keys, log)
		return fmt.Errorf("self-upgrade: %w", err)
	}
	if sup != nil {
		if err := sup.CommitHandoff(context.Background()); err != nil && log != nil {
			log.Warn("self-upgrade: drain on stop", "error", err)
		}
	}
	self.away.Store(true)
	if log != nil {
		log.Info("upgraded, stopping", "pid", os.Getpid())
	}
	if stop != nil {
		stop(errUpgraded)
	}
	return nil
}

// start ties self-upgrade to the running supervisor: once the first
// generation is ready it writes the pidfile and, in a new hotswap, tells
// the old one; upgradeSignal upgrades.
func (h *hardeningOptions) start(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger, stop func(error)) error {
	up, err := selfUpgrader()
	if err != nil {
		return err
	}
	self.mu.Lock()
	self.stop, self.log, self.sup = stop, log, sup
	self.mu.Unlock()
	if up.HasParent() {
		self.wg.Go(func() { syncAfterParent(ctx, up, sup, log) })
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, upgradeSignal)
	self.wg.Go(func() {
		defer signal.Stop(sigc)
		select {
		case <-sup.Ready():
		case <-ctx.Done():
			return
		case <-sup.Done():
			return
		}
		if err := h.announce(up); err != nil {
			log.Error("self-upgrade: tell the old hotswap", "error", err)
			stop(err)
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-sup.Done():
				return
			case <-sigc:
				self.wg.Go(func() { upgradeOnSignal(ctx, log) })
			}
		}
	})
	return nil
}

// announce runs once the first generation is ready: the pidfile names
// this hotswap, then the old hotswap, if any, learns it can stop.
// tableflip's own PIDFile option writes a 0600 file without a newline;
// writePidfile keeps the one format hotswap documents.
func (h *hardeningOptions) announce(up *tableflip.Upgrader) error {
	if p := h.pidfile(); p != "" && up.HasParent() {
		if err := writePidfile(p); err != nil {
			return err
		}
	}
	if err := up.Ready(); err != nil {
		return err
	}
	self.ready.Store(true)
	return nil
}

func upgradeOnSignal(ctx context.Context, log hclog.Logger) {
	if err := upgradeSelf(ctx); err != nil {
		log.Error("self-upgrade failed, still serving", "error", err)
	}
}

// finish runs after the supervisor has returned: it removes the unix
// socket files unless a new hotswap serves them, or this hotswap was a new
// one that never became ready (its parent still serves).
func (h *hardeningOptions) finish() {
	self.wg.Wait()
	up, err := selfUpgrader()
	if err != nil || self.away.Load() {
		return
	}
	up.Stop()
	if up.HasParent() && !self.ready.Load() {
		return
	}
	h.sockets.removeFiles()
}

// upgradedAway reports whether a new hotswap took over; hotswap then exits
// 0 whatever its stopped generations returned.
func (h *hardeningOptions) upgradedAway() bool { return self.away.Load() }

// upgrading reports whether this hotswap was started by a self-upgrade:
// its pidfile is written once it is ready (announce), not at start.
func (h *hardeningOptions) upgrading() bool {
	up, err := selfUpgrader()
	return err == nil && up.HasParent()
}

func (h *hardeningOptions) pidfile() string {
	if h.fs == nil || h.fs.Lookup("pidfile") == nil {
		return ""
	}
	p, _ := h.fs.GetString("pidfile")
	return p
}

// removePidfileIfOurs removes path if it still names this process: after a
// self-upgrade it names the new hotswap and must stay.
func removePidfileIfOurs(path string) {
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
