package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Waiting on hotswap's state: the tests ask the control API for the
// status, as `hotswap status --json` does, instead of waiting for a log
// line, so that rewording a log message breaks no test that does not
// assert that message.

// controlPath returns the control socket of the hotswap p started with
// flags: the --control value, or the default socket of its pid.
func controlPath(p *proctest.Proc, flags []string) string {
	for i, f := range flags {
		if v, ok := strings.CutPrefix(f, "--control="); ok {
			return v
		}
		if f == "--control" && i+1 < len(flags) {
			return flags[i+1]
		}
	}
	return control.DefaultPath(p.Cmd.Process.Pid)
}

// askStatus asks the hotswap at path for its status once.
func askStatus(path string) (supervisor.Status, error) {
	c, err := control.Dial(path, time.Now().Add(5*time.Second))
	if err != nil {
		return supervisor.Status{}, err
	}
	defer c.Close()
	resp, err := c.Do(control.Request{V: control.Version, Op: control.OpStatus})
	switch {
	case err != nil:
		return supervisor.Status{}, err
	case !resp.OK || resp.Status == nil:
		return supervisor.Status{}, errors.New(resp.Error)
	}
	return *resp.Status, nil
}

// waitState polls the status of p (control socket path) until ok accepts
// it, for at most d, and returns it; it fails the test when d passes or p
// exits first, with the last status or error seen.
func waitState(t *testing.T, p *proctest.Proc, path string, d time.Duration, what string, ok func(supervisor.Status) bool) supervisor.Status {
	t.Helper()
	var last string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st, err := askStatus(path)
		if err == nil && ok(st) {
			return st
		}
		last = fmt.Sprintf("status %+v, error %v", st, err)
		if p.Exited() {
			t.Fatalf("hotswap exited before %s; %s; output:\n%s", what, last, strings.Join(p.Lines(), "\n"))
		}
	}
	t.Fatalf("not %s within %v; %s", what, d, last)
	return supervisor.Status{}
}

// servingGen accepts a status in which generation n is current and has
// passed its gate.
func servingGen(n int) func(supervisor.Status) bool {
	return func(st supervisor.Status) bool {
		for _, g := range st.Generations {
			if g.ID == n {
				return st.Current == n && g.State == supervisor.StateReady
			}
		}
		return false
	}
}

// goneGen accepts a status that no longer lists generation n: it exited
// and was reaped.
func goneGen(n int) func(supervisor.Status) bool {
	return func(st supervisor.Status) bool {
		for _, g := range st.Generations {
			if g.ID == n {
				return false
			}
		}
		return true
	}
}

// waitServing waits until generation n of a serves.
func (a *app) waitServing(n int, d time.Duration) supervisor.Status {
	a.t.Helper()
	return waitState(a.t, a.hs, a.ctl, d, fmt.Sprintf("serving generation %d", n), servingGen(n))
}

// waitGone waits until generation n of a has exited and been reaped.
func (a *app) waitGone(n int, d time.Duration) supervisor.Status {
	a.t.Helper()
	return waitState(a.t, a.hs, a.ctl, d, fmt.Sprintf("rid of generation %d", n), goneGen(n))
}
