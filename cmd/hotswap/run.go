package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
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
	// A hotswap started by a self-upgrade writes the pidfile once it
	// serves; after an upgrade the file names the new hotswap and stays.
	announce := func() error { return nil }
	if o.pidfile != "" {
		announce = func() error { return writePidfile(o.pidfile) }
	}
	up, err := upgrade.New(upgrade.Options{ReadyTimeout: cfg.ReadyTimeout, Announce: announce, Logger: log})
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	cfg.Listen, cfg.Adopt = up.Listen, up.Adopt
	sup, err := supervisor.New(cfg)
	if err != nil {
		up.Finish()
		return fail(supervisor.ExitCode(err, exitUsage), "%v", err)
	}
	if !up.HasParent() {
		if err := announce(); err != nil {
			up.Finish()
			return fail(exitFailure, "%v", err)
		}
	}
	defer removePidfileIfOurs(o.pidfile)
	return serve(sup, up, o, log)
}

// serve runs sup and maps signals onto it: SIGHUP reloads, SIGTERM, SIGINT
// and SIGQUIT stop, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded.
func serve(sup *supervisor.Supervisor, up *upgrade.Upgrader, o *options, log hclog.Logger) int {
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
	ctl, err := o.control.start(ctx, sup, log, stop)
	if err != nil {
		stop(err)
		<-runErr
		return fail(exitFailure, "%v; nothing is serving", err)
	}
	defer ctl.Close()
	if err := up.Start(ctx, sup, stop); err != nil {
		stop(err)
		<-runErr
		return fail(exitFailure, "%v; nothing is serving", err)
	}
	defer up.Finish()
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

// writePidfile writes the pid to a temporary file beside path and renames
// it into place, so a reader never sees a partial file.
func writePidfile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hotswap-pid-*")
	if err != nil {
		return fmt.Errorf("write pidfile %s: %w", path, err)
	}
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write pidfile %s: %w", path, err)
	}
	return nil
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
