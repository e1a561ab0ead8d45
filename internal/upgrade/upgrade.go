// Package upgrade is hotswap's self-upgrade, on cloudflare/tableflip: the
// running hotswap starts its own binary again (os.Args, the same flags)
// with every listening socket; the new hotswap takes them ([Upgrader.Listen]),
// starts and gates its own first generation on the same sockets, announces
// itself (hotswap writes its pidfile) and tells the old one; the old one
// then stops its generations exactly as on a SIGTERM (stop signal, drain
// timeout, SIGKILL) and exits 0. Both sides keep a descriptor of every
// socket throughout, so its queue is never closed.
//
// tableflip's own descriptors (its two pipes, fds 3 and 4 of the new
// hotswap, then a copy of each registered file from fd 5) are close-on-exec
// in hotswap: main marks every inherited fd CLOEXEC before [New] reads
// them, which only keeps them from generations; tableflip uses them
// in-process and re-numbers them for its own child explicitly.
//
// In reuseport mode the old hotswap also hands over the serving
// generation's member of each reuseport group (internal/supervisor's
// handoff.go), and the new one adopts it as the first member of its own
// group. Those members never enter tableflip's registry: a copy it kept
// would hold the old generation's socket in the group after that
// generation exits (docs/kernel.md, SO_REUSEPORT groups). They travel
// over a socketpair of the upgrader's own instead, with SCM_RIGHTS, so
// that after the hand-over the new hotswap holds the only copy.
//
// tableflip allows one upgrader per process, so a process makes one
// [Upgrader] in main and passes it where it is needed.
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Signal asks hotswap to upgrade itself: `kill -s RTMIN+2 PID` (signal 36
// with glibc's numbering). SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to
// the generation; SIGPWR shuts containers down under LXC; SIGTTIN and
// SIGTTOU are sent by the terminal driver. A real-time signal is never sent
// by the kernel, so it cannot trigger an upgrade by accident.
const Signal = syscall.Signal(34 + 2)

// ErrUpgraded is why an old hotswap stops once its successor is ready.
var ErrUpgraded = errors.New("upgraded: the new hotswap serves")

// startSlack is what a new hotswap may take to start, beyond its first
// generation's --ready-timeout.
const startSlack = 10 * time.Second

// Options configure an [Upgrader].
type Options struct {
	// ReadyTimeout is the new hotswap's --ready-timeout: an upgrade fails
	// when the new hotswap is not ready after it plus a start allowance.
	// Default supervisor.DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Announce, if set, runs in a hotswap started by an upgrade once its
	// first generation is ready, before the old hotswap learns that it can
	// stop; hotswap writes its pidfile there. An error stops the new
	// hotswap, and the old one keeps serving.
	Announce func() error
	Logger   hclog.Logger
}

// Upgrader is the self-upgrade of one hotswap process: it creates the
// listeners or inherits them from the hotswap it replaces, and on [Signal]
// or [Upgrader.Upgrade] hands everything to a new hotswap.
type Upgrader struct {
	opts Options
	log  hclog.Logger
	tf   *tableflip.Upgrader
	pass *passer // carries reuseport members to the next hotswap

	// busy is held for the whole of an upgrade, which may outlast the
	// Upgrade call that started it.
	busy sync.Mutex
	mu   sync.Mutex // guards the fields below
	// adopted are the reuseport members the previous hotswap handed over,
	// by key, until the supervisor adopts them.
	adopted map[string]*os.File
	files   []reuse.UnixFile // unix socket files to remove on the final stop
	sup     *supervisor.Supervisor
	stop    func(error) // asks this hotswap to stop; set by Start

	ready atomic.Bool // the first generation is ready: tableflip told
	away  atomic.Bool // a new hotswap took over
	wg    sync.WaitGroup
}

// New makes the process's upgrader and, in a hotswap started by an
// upgrade, takes what the previous hotswap handed over.
func New(opts Options) (_ *Upgrader, retErr error) {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = supervisor.DefaultReadyTimeout
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.ReadyTimeout + startSlack})
	if err != nil {
		return nil, fmt.Errorf("self-upgrade: %w", err)
	}
	u := &Upgrader{opts: opts, log: opts.Logger, tf: tf, adopted: map[string]*os.File{}}
	defer func() {
		if retErr != nil {
			u.close()
		}
	}()
	if u.pass, err = newPasser(); err != nil {
		return nil, fmt.Errorf("self-upgrade: %w", err)
	}
	if err := tf.AddFile(passKey(os.Getpid()), u.pass.theirs); err != nil {
		return nil, fmt.Errorf("self-upgrade: register the hand-over socket: %w", err)
	}
	if !tf.HasParent() {
		return u, nil
	}
	f, err := tf.File(passKey(os.Getppid()))
	if err != nil {
		return nil, fmt.Errorf("self-upgrade: inherit the hand-over socket: %w", err)
	}
	if f != nil {
		defer f.Close()
		if u.adopted, err = receive(f); err != nil {
			return nil, fmt.Errorf("self-upgrade: receive the reuseport sockets: %w", err)
		}
	}
	return u, nil
}

// passKey names the hand-over socket of the hotswap with pid in
// tableflip's registry; each hotswap registers its own, so none is ever
// registered twice.
func passKey(pid int) string { return "handover:" + strconv.Itoa(pid) }

// HasParent reports whether this hotswap was started by an upgrade: it
// announces itself once ready, not at start.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Away reports whether a new hotswap took over; hotswap then exits 0
// whatever its stopped generations returned.
func (u *Upgrader) Away() bool { return u.away.Load() }

// Shared reports whether another hotswap serves the sockets this one
// carries: a new one took over (Away), or this one was started by an
// upgrade that failed before it was ready, and its parent serves on.
// Socket files must then stay in place.
func (u *Upgrader) Shared() bool {
	return u.away.Load() || u.tf.HasParent() && !u.ready.Load()
}

// key names a listener in tableflip's hand-over: the same flags give the
// same keys in the new hotswap.
func key(l supervisor.ListenSpec) string { return l.Name + "=" + l.String() }

// reuseportKey names the member handed over for a reuseport listener.
func reuseportKey(l supervisor.ListenSpec) string { return "reuseport:" + key(l) }

// Listen is supervisor.Config.Listen: the socket inherited from the
// previous hotswap if there is one, else a new one; either way registered
// for the next upgrade.
func (u *Upgrader) Listen(l supervisor.ListenSpec) (*os.File, error) {
	f, inherited, err := u.Carry(key(l), func() (*os.File, error) {
		if l.Network != "unix" {
			return reuse.Listen(l.Network, l.Address, reuse.Options{})
		}
		f, uf, err := reuse.ListenUnix(l.Address, l.Unix)
		if err == nil {
			u.remember(uf)
		}
		return f, err
	})
	if err != nil {
		return nil, err
	}
	if inherited && l.Network == "unix" {
		if uf, err := reuse.UnixFileAt(l.Address); err == nil {
			u.remember(uf)
		}
	}
	return f, nil
}

// Carry returns the file the previous hotswap registered under k, or, in
// a hotswap without one, what create makes; either way the file is
// registered for the next upgrade, so it passes from hotswap to hotswap
// for as long as they serve: listeners, and the lock a hotswap holds for
// its life (the same open file description, so the lock goes with it).
func (u *Upgrader) Carry(k string, create func() (*os.File, error)) (_ *os.File, inherited bool, _ error) {
	f, err := u.tf.File(k)
	if err != nil {
		return nil, false, fmt.Errorf("inherit %s from the previous hotswap: %w", k, err)
	}
	inherited = f != nil
	if f == nil {
		if f, err = create(); err != nil {
			return nil, false, err
		}
	}
	if err := u.tf.AddFile(k, f); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("register %s for self-upgrade: %w", k, err)
	}
	return f, inherited, nil
}

// Adopt is supervisor.Config.Adopt: the member the previous hotswap handed
// over for l, or nil. The caller owns it: no other copy stays here.
func (u *Upgrader) Adopt(l supervisor.ListenSpec) (*os.File, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := reuseportKey(l)
	f := u.adopted[k]
	delete(u.adopted, k)
	return f, nil
}

func (u *Upgrader) remember(f reuse.UnixFile) {
	u.mu.Lock()
	u.files = append(u.files, f)
	u.mu.Unlock()
}

// Start ties self-upgrade to the running supervisor, once it listens:
// once the first generation is ready it announces this hotswap and, in a
// new hotswap, tells the old one; [Signal] upgrades. stop asks this hotswap
// to stop gracefully. Every goroutine it starts ends by [Upgrader.Finish].
func (u *Upgrader) Start(ctx context.Context, sup *supervisor.Supervisor, stop func(error)) error {
	u.mu.Lock()
	u.sup, u.stop = sup, stop
	// A member handed over for a listener this hotswap does not have
	// (its flags changed) is not kept.
	for k, f := range u.adopted {
		f.Close()
		delete(u.adopted, k)
	}
	u.mu.Unlock()
	if u.tf.HasParent() {
		u.wg.Go(func() { u.syncAfterParent(ctx) })
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, Signal)
	u.wg.Go(func() {
		defer signal.Stop(sigc)
		select {
		case <-sup.Ready():
		case <-ctx.Done():
			return
		case <-sup.Done():
			return
		}
		if err := u.announce(); err != nil {
			u.log.Error("self-upgrade: tell the old hotswap", "error", err)
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
				u.wg.Go(func() {
					if err := u.Upgrade(ctx); err != nil {
						u.log.Error("self-upgrade failed, still serving", "error", err)
					}
				})
			}
		}
	})
	return nil
}

// announce runs once the first generation is ready: Announce, then the old
// hotswap, if any, learns it can stop.
func (u *Upgrader) announce() error {
	if u.opts.Announce != nil && u.tf.HasParent() {
		if err := u.opts.Announce(); err != nil {
			return err
		}
	}
	if err := u.tf.Ready(); err != nil {
		return err
	}
	u.ready.Store(true)
	return nil
}

// Upgrade starts a new hotswap from the binary at hotswap's own path and
// returns once it serves (nil: this hotswap now drains and exits) or
// failed (this hotswap keeps serving). When ctx ends first, the upgrade
// goes on and settles by itself, bounded by the upgrade timeout.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	if !u.ready.Load() {
		return errors.New("self-upgrade: the first generation is not ready yet")
	}
	u.busy.Lock()
	if u.away.Load() {
		u.busy.Unlock()
		return errors.New("self-upgrade: already upgraded")
	}
	if err := u.handOver(ctx); err != nil {
		u.busy.Unlock()
		return fmt.Errorf("self-upgrade: %w", err)
	}
	done := make(chan error, 1)
	u.wg.Go(func() {
		defer u.busy.Unlock()
		done <- u.upgrade()
	})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), ErrUpgraded) {
			return nil // it succeeded, and stopping this hotswap cancelled ctx
		}
		return ctx.Err()
	}
}

// upgrade runs tableflip's upgrade and settles the outcome: on failure the
// handed-over groups come back; on success this hotswap drains its
// generations and stops. The caller holds busy.
func (u *Upgrader) upgrade() error {
	if err := u.tf.Upgrade(); err != nil {
		u.takeBack()
		return fmt.Errorf("self-upgrade: %w", err)
	}
	if err := u.sup.CommitHandoff(context.Background()); err != nil {
		u.log.Warn("self-upgrade: drain on stop", "error", err)
	}
	u.away.Store(true)
	u.log.Info("upgraded, stopping", "pid", os.Getpid())
	u.stop(ErrUpgraded)
	return nil
}

// handOver freezes the reuseport groups and queues their serving members
// for the new hotswap. It refuses, changing nothing, unless the groups
// are quiet.
func (u *Upgrader) handOver(ctx context.Context) error {
	files, err := u.sup.PrepareHandoff(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			f.Close() // the queued message holds its own reference
		}
	}()
	for l, f := range files {
		if err := u.pass.send(reuseportKey(l), f); err != nil {
			u.takeBack()
			return fmt.Errorf("hand over %s: %w", l, err)
		}
	}
	return nil
}

// takeBack undoes handOver after a failed upgrade: members the new
// hotswap did not take are closed, and the groups thaw.
func (u *Upgrader) takeBack() {
	u.pass.drain()
	if err := u.sup.AbortHandoff(context.Background()); err != nil {
		u.log.Warn("self-upgrade: take the reuseport groups back", "error", err)
	}
}

// syncAfterParent runs in a new hotswap: once the old hotswap has exited,
// its generation's sockets have left the groups, and the groups' models
// and programs are updated.
func (u *Upgrader) syncAfterParent(ctx context.Context) {
	if err := u.tf.WaitForParent(ctx); err != nil && ctx.Err() == nil {
		u.log.Warn("self-upgrade: wait for the previous hotswap", "error", err)
	}
	if ctx.Err() != nil {
		return
	}
	if err := u.sup.Sync(ctx); err != nil {
		u.log.Warn("self-upgrade: sync reuseport groups", "error", err)
	}
}

// Finish runs after the supervisor has returned: it waits for the
// upgrader's goroutines and removes the unix socket files unless a new
// hotswap serves them, or this hotswap was a new one that never became
// ready (its parent still serves).
func (u *Upgrader) Finish() {
	u.wg.Wait()
	if u.away.Load() {
		return
	}
	u.close()
	if u.tf.HasParent() && !u.ready.Load() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, f := range u.files {
		f.Remove()
	}
	u.files = nil
}

// close stops tableflip and closes what the upgrader holds.
func (u *Upgrader) close() {
	u.tf.Stop()
	u.pass.close()
	u.mu.Lock()
	for k, f := range u.adopted {
		f.Close()
		delete(u.adopted, k)
	}
	u.mu.Unlock()
}
