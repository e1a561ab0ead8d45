// Package ctltest waits on a running hotswap's state through its control
// socket, with the request `hotswap status --json` sends, instead of on
// its log wording: rewording a log line breaks no test but the one that
// asserts that line. It is imported only by _test.go files.
//
// It is a package of its own because internal/proctest cannot import the
// supervisor: the supervisor's, reuse's and intercept's own tests import
// proctest.
package ctltest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Cond is a condition on hotswap's status.
type Cond func(supervisor.Status) bool

// Path returns the control socket of the hotswap p runs: the value of its
// --control flag, or the default socket of its pid (for its user and
// environment). Only hotswap's own flags count, not the command's after
// "--". A hotswap run with --control none fails the test: there is
// nothing to ask.
func Path(p *proctest.Proc) string {
	args := p.Cmd.Args[1:]
	for i, a := range args {
		if a == "--" {
			break
		}
		v, ok := strings.CutPrefix(a, "--control=")
		if a == "--control" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		switch {
		case ok && v == "none":
			p.T().Helper()
			p.T().Fatalf("hotswap runs with --control none: no status to ask (give it --control PATH in t.TempDir())")
		case ok:
			return v
		}
	}
	uid := os.Geteuid()
	if c := credential(p); c != nil {
		uid = int(c.Uid)
	}
	return filepath.Join(control.DirOf(uid, getenv(p.Cmd.Env)), strconv.Itoa(p.Cmd.Process.Pid)+".sock")
}

// credential is the user p runs as, if not the test's.
func credential(p *proctest.Proc) *syscall.Credential {
	if a := p.Cmd.SysProcAttr; a != nil && a.Credential != nil && int(a.Credential.Uid) != os.Geteuid() {
		return a.Credential
	}
	return nil
}

// getenv reads env as a process started with it sees it (nil: this
// process's environment).
func getenv(env []string) func(string) string {
	if env == nil {
		return os.Getenv
	}
	return func(key string) string {
		var v string
		for _, e := range env {
			if k, val, ok := strings.Cut(e, "="); ok && k == key {
				v = val // the last one wins
			}
		}
		return v
	}
}

// asker returns how to ask p's hotswap, at path, for its status: over the
// control socket; or, when hotswap runs as another user (a control client
// talks only to a server of its own uid or root), with `hotswap status
// --json` run as that user.
func asker(p *proctest.Proc, path string) func() (supervisor.Status, error) {
	cred := credential(p)
	if cred == nil {
		return func() (supervisor.Status, error) { return Ask(path) }
	}
	return func() (supervisor.Status, error) {
		cmd := exec.Command(p.Cmd.Path, "status", "--json", "--control", path)
		cmd.Env = p.Cmd.Env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return supervisor.Status{}, fmt.Errorf("hotswap status --json as uid %d: %v: %s", cred.Uid, err, strings.TrimSpace(stderr.String()))
		}
		var st supervisor.Status
		err = json.Unmarshal(out, &st)
		return st, err
	}
}

// Ask asks the hotswap whose control socket is path for its status once.
func Ask(path string) (supervisor.Status, error) {
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

// Status asks p's hotswap for its status once; it fails the test when it
// does not answer.
func Status(p *proctest.Proc) supervisor.Status {
	p.T().Helper()
	st, err := asker(p, Path(p))()
	if err != nil {
		p.T().Fatalf("status of hotswap (pid %d): %v; output:\n%s", p.Cmd.Process.Pid, err, strings.Join(p.Lines(), "\n"))
	}
	return st
}

// Wait polls the status of p's hotswap until ok accepts it, for at most
// d, and returns it. It fails the test, with the last status or error and
// hotswap's output, when d passes, or when p has exited and the socket
// does not answer; what names the state waited for in that message.
func Wait(p *proctest.Proc, d time.Duration, what string, ok Cond) supervisor.Status {
	p.T().Helper()
	return WaitAt(p, Path(p), d, what, ok)
}

// WaitAt is [Wait] on the control socket at path, for a hotswap that is
// not p itself (one that took p's place in a self-upgrade, logging to
// p's stderr).
func WaitAt(p *proctest.Proc, path string, d time.Duration, what string, ok Cond) supervisor.Status {
	p.T().Helper()
	return WaitOn(p, d, what, asker(p, path), ok)
}

// WaitOn is [Wait] on the status that ask returns, for a control socket
// that is found only once p runs (in a container p started).
func WaitOn(p *proctest.Proc, d time.Duration, what string, ask func() (supervisor.Status, error), ok Cond) supervisor.Status {
	t := p.T()
	t.Helper()
	var last string
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		st, err := ask()
		if err == nil && ok(st) {
			return st
		}
		if err != nil {
			last = fmt.Sprintf("error %v", err)
		} else {
			last = fmt.Sprintf("status %+v", st)
		}
		switch {
		case err != nil && p.Exited():
			t.Fatalf("hotswap exited before %s; last %s; output:\n%s", what, last, strings.Join(p.Lines(), "\n"))
		case time.Now().After(deadline):
			t.Fatalf("not %s within %v; last %s; output:\n%s", what, d, last, strings.Join(p.Lines(), "\n"))
		}
	}
}

// Gen returns generation n of st, if st lists it.
func Gen(st supervisor.Status, n int) (supervisor.GenerationStatus, bool) {
	for _, g := range st.Generations {
		if g.ID == n {
			return g, true
		}
	}
	return supervisor.GenerationStatus{}, false
}

// Serving accepts a status in which generation n is current and has
// passed its gate.
func Serving(n int) Cond {
	return func(st supervisor.Status) bool {
		g, ok := Gen(st, n)
		return ok && st.Current == n && g.State == supervisor.StateReady
	}
}

// Started accepts a status that lists generation n, in any state: it has
// been started and not yet reaped.
func Started(n int) Cond {
	return func(st supervisor.Status) bool {
		_, ok := Gen(st, n)
		return ok
	}
}

// Gone accepts a status that does not list generation n: it exited and
// was reaped, or never started (wait for it only once it was seen).
func Gone(n int) Cond {
	return func(st supervisor.Status) bool { return !Started(n)(st) }
}

// Settled accepts a status in which only the current generation is live
// and it has passed its gate: no reload or old generation is left.
func Settled(st supervisor.Status) bool {
	return len(st.Generations) == 1 && Serving(st.Current)(st) && !st.Reloading
}

// Listening accepts a status that lists a listener.
func Listening(st supervisor.Status) bool { return len(st.Listeners) > 0 }

// WaitServing waits up to d until generation n of p serves.
func WaitServing(p *proctest.Proc, n int, d time.Duration) supervisor.Status {
	p.T().Helper()
	return Wait(p, d, fmt.Sprintf("serving generation %d", n), Serving(n))
}

// WaitGone waits up to d until generation n of p has exited and been
// reaped.
func WaitGone(p *proctest.Proc, n int, d time.Duration) supervisor.Status {
	p.T().Helper()
	return Wait(p, d, fmt.Sprintf("rid of generation %d", n), Gone(n))
}

// WaitStarted waits up to d until p has started generation n and returns
// it (its pid).
func WaitStarted(p *proctest.Proc, n int, d time.Duration) supervisor.GenerationStatus {
	p.T().Helper()
	g, _ := Gen(Wait(p, d, fmt.Sprintf("started generation %d", n), Started(n)), n)
	return g
}

// Addr waits up to d until p listens and returns the address of its first
// listener (the first -l), port resolved.
func Addr(p *proctest.Proc, d time.Duration) string {
	p.T().Helper()
	return Wait(p, d, "listening", Listening).Listeners[0].Address
}

// Reload calls trigger (a SIGHUP, a `hotswap reload`, a changed file) and
// waits up to d until the reload to generation n is done, on the counts
// of reloads in the status: generation n serves after one more reload
// succeeded, or one more reload failed (its reason is the status's
// LastFailure). It returns the status and whether the reload succeeded.
func Reload(p *proctest.Proc, n int, d time.Duration, trigger func()) (supervisor.Status, bool) {
	p.T().Helper()
	return ReloadAt(p, Path(p), n, d, trigger)
}

// ReloadAt is [Reload] on the control socket at path (see [WaitAt]).
func ReloadAt(p *proctest.Proc, path string, n int, d time.Duration, trigger func()) (supervisor.Status, bool) {
	t := p.T()
	t.Helper()
	before, err := asker(p, path)()
	if err != nil {
		t.Fatalf("status at %s before the reload to generation %d: %v", path, n, err)
	}
	trigger()
	st := WaitAt(p, path, d, fmt.Sprintf("done with the reload to generation %d", n), func(st supervisor.Status) bool {
		return st.Reloads.Failed > before.Reloads.Failed || (st.Reloads.OK > before.Reloads.OK && Serving(n)(st))
	})
	return st, st.Reloads.Failed == before.Reloads.Failed
}

// Reason returns why the reload to generation n failed, from the last
// failure of st: without the "generation N (pid P) " it begins with when
// the generation started.
func Reason(st supervisor.Status, n int) string {
	prefix := regexp.MustCompile(fmt.Sprintf(`^generation %d \(pid \d+\) `, n))
	return prefix.ReplaceAllString(st.LastFailure, "")
}

// Replace calls trigger and waits up to d until the reload to generation
// n succeeded and generation n-1 is gone. It fails the test when the
// reload failed, or when n-1's process is still alive once hotswap
// reaped it. It returns the status once n-1 is gone.
func Replace(p *proctest.Proc, n int, d time.Duration, trigger func()) supervisor.Status {
	t := p.T()
	t.Helper()
	old, _ := Gen(Status(p), n-1)
	if st, ok := Reload(p, n, d, trigger); !ok {
		t.Fatalf("reload to generation %d failed: %s", n, st.LastFailure)
	}
	st := WaitGone(p, n-1, d)
	if old.PID != 0 && proctest.Alive(old.PID) {
		t.Errorf("generation %d (pid %d) still running after hotswap reaped it", n-1, old.PID)
	}
	return st
}
