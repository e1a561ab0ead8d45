package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"github.com/hotswap-dev/hotswap/internal/upgrade"
)

// run is the supervisor command: flags, then the supervisor until a stop
// signal. It returns the process exit status.
func run(args []string) int {
	if code, ok := subcommand(args); ok {
		return code
	}
	o, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if o.version {
		fmt.Println("hotswap", version)
		return exitOK
	}
	log, err := newLogger(o)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	cfg, err := o.config(log)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	// The pidfile names a hotswap that listens: written once every
	// listener is bound, or, by a hotswap started by a self-upgrade, once
	// its first generation serves; after an upgrade the file names the new
	// hotswap and stays.
	var locks *instanceLocks
	announce := func() error {
		locks.announce()
		if o.pidfile == "" {
			return nil
		}
		return writePidfile(o.pidfile)
	}
	up, err := upgrade.New(upgrade.Options{ReadyTimeout: cfg.ReadyTimeout, Announce: announce, Logger: log})
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	// Before anything is bound or written: a second hotswap on the same
	// pidfile or control socket leaves the first one's alone.
	locks, err = lockInstance(up, lockedPath{"--pidfile", o.pidfile}, lockedPath{"--control", o.control.explicitPath()})
	if err != nil {
		up.Finish()
		return fail(exitFailure, "%v; this hotswap changed nothing", err)
	}
	defer locks.Close()
	cfg.Listen, cfg.Adopt = up.Listen, up.Adopt
	sup, err := supervisor.New(cfg)
	if err != nil {
		up.Finish()
		return fail(supervisor.ExitCode(err, exitUsage), "%v", err)
	}
	defer removePidfileIfOurs(o.pidfile)
	return serve(sup, up, o, log, announce)
}

// serve runs sup and maps signals onto it: SIGHUP reloads, SIGTERM, SIGINT
// and SIGQUIT stop, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded.
func serve(sup *supervisor.Supervisor, up *upgrade.Upgrader, o *options, log hclog.Logger, announce func() error) int {
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigc)
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)

	var wg sync.WaitGroup
	defer wg.Wait()
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- sup.Run(ctx) })
	// The control socket comes after the listeners, so that a port in use
	// is the only thing said.
	select {
	case <-sup.Listening():
	case err := <-runErr:
		return fail(exitFailure, "%v; this hotswap started nothing", err)
	}
	if !up.HasParent() {
		if err := announce(); err != nil {
			stop(err)
			<-runErr
			return fail(exitFailure, "%v; nothing is serving", err)
		}
	}
	ctl, err := o.control.start(ctx, sup, up, log, stop)
	if err != nil {
		stop(err)
		<-runErr
		return fail(exitFailure, "%v; nothing is serving", err)
	}
	defer func() {
		if up.Shared() {
			ctl.handOff() // the other hotswap serves the control socket file
		}
		ctl.Close()
	}()
	wg.Go(func() {
		<-ctx.Done()
		if up.Away() {
			ctl.handOff() // while this hotswap drains, the new one answers
		}
	})
	if err := up.Start(ctx, sup, stop); err != nil {
		stop(err)
		<-runErr
		return fail(exitFailure, "%v; nothing is serving", err)
	}
	// Finish waits for the upgrader's goroutines, which end with ctx: it
	// is cancelled first, or a new hotswap whose generation failed would
	// wait for its parent until the upgrade timeout killed it.
	defer func() {
		stop(nil)
		up.Finish()
	}()
	wg.Go(func() { releaseStartupPages(ctx, sup, log) })
	for _, start := range []func() error{
		func() error { return o.watch.start(ctx, &wg, sup, log) },
		func() error { return o.stop.startHealth(ctx, &wg, sup, up, log) },
	} {
		if err := start(); err != nil {
			stop(err)
			<-runErr
			return fail(exitFailure, "%v; nothing is serving", err)
		}
	}
	for {
		select {
		case err := <-runErr:
			if err != nil {
				return fail(supervisor.ExitCode(err, exitFailure), "%v; nothing is serving", err)
			}
			if up.Away() {
				return exitOK
			}
			return sup.ExitCode()
		case sig := <-sigc:
			switch sig {
			case syscall.SIGHUP:
				wg.Go(func() { reloadOnSignal(ctx, sup, log) })
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				// The first SIGTERM with --stop-when-idle waits for the
				// load balancers; anything else stops at once.
				if sig == syscall.SIGTERM && o.stop.waits() && !o.stop.stopping.Swap(true) {
					wg.Go(func() {
						o.stop.waitIdle(ctx, sup, log)
						stop(fmt.Errorf("received %v", sig))
					})
					continue
				}
				o.stop.stopping.Store(true)
				stop(fmt.Errorf("received %v", sig))
			default:
				if err := sup.Signal(ctx, sig.(syscall.Signal)); err != nil {
					log.Warn("forward signal", "signal", sig, "error", err)
				}
			}
		}
	}
}

func reloadOnSignal(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger) {
	err := sup.Reload(ctx)
	var re *supervisor.ReloadError
	switch {
	case err == nil:
	case errors.As(err, &re):
		fmt.Fprintf(os.Stderr, "hotswap: reload failed: %v; %s\n", re, re.StillServing())
	case !errors.Is(err, supervisor.ErrStopped) && !errors.Is(err, context.Canceled):
		log.Error("reload", "error", err)
	}
}

// releaseStartupPages unmaps the pages of hotswap's binary that only its
// start used (flag parsing, init, TLS setup) once the first generation
// serves; what reloads run comes back on its first use (see
// docs/architecture.md, "hotswap's own footprint").
func releaseStartupPages(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger) {
	select {
	case <-sup.Ready():
	case <-ctx.Done():
		return
	}
	kib, err := sys.ReleaseExecutablePages()
	if err != nil {
		log.Debug("release the start-up pages of hotswap's binary", "error", err)
		return
	}
	log.Debug("released the start-up pages of hotswap's binary", "kib", kib)
}
