package main

import (
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Waiting on hotswap's state: the tests ask the control API for the
// status, as `hotswap status --json` does, with internal/proctest/ctltest,
// instead of waiting for a log line, so that rewording a log message
// breaks no test that does not assert that message.

// waitServing waits until generation n of a serves.
func (a *app) waitServing(n int, d time.Duration) supervisor.Status {
	a.t.Helper()
	return ctltest.WaitServing(a.hs, n, d)
}

// waitGone waits until generation n of a has exited and been reaped.
func (a *app) waitGone(n int, d time.Duration) supervisor.Status {
	a.t.Helper()
	return ctltest.WaitGone(a.hs, n, d)
}
