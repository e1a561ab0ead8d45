package main

import (
	"os"
	"os/exec"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// ready tells the supervisor that goapp serves, if --notify is set.
func (a *app) ready() {
	if a.cfg.notify {
		a.notify("READY=1")
	}
}

// notify sends one sd_notify(3) datagram to $NOTIFY_SOCKET when --notify
// is set.
func (a *app) notify(state string) {
	if !a.cfg.notify {
		return
	}
	if os.Getenv(fdpass.NotifySocket) == "" {
		a.logf("notify %s: %s not set", state, fdpass.NotifySocket)
		return
	}
	if err := fdpass.Notify(state); err != nil {
		a.logf("notify %s: %v", state, err)
	}
}

// spawnGrandchild starts goapp in its sleep mode and does not wait for it,
// so it outlives goapp and must be reaped by whoever inherits it.
func (a *app) spawnGrandchild() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "--sleep", "300s")
	if err := cmd.Start(); err != nil {
		return err
	}
	a.logf("spawned grandchild pid %d", cmd.Process.Pid)
	return cmd.Process.Release()
}
