package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hotswap-dev/hotswap/internal/control"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/spf13/pflag"
)

// Exit statuses of the control subcommands, beside exitOK, exitFailure (the
// reload was rolled back, the request failed) and exitUsage.
const (
	exitUnreachable = 3 // no answer from hotswap: not running, wrong socket, timed out
)

// DefaultClientTimeout bounds a control subcommand's wait for its answer.
const DefaultClientTimeout = 5 * time.Minute

const clientUsage = `Usage:
  hotswap reload [--control PATH | --pidfile PATH] [--timeout DUR]
      start a new generation and wait: exit 0 once it serves, 1 when it was
      rolled back (the old generation still serves), 3 when hotswap cannot
      be reached or did not answer in time
  hotswap status [--json] [--control PATH | --pidfile PATH]
      exit 0 while a generation that passed its gate serves, 1 while none
      does (the first one starting, or a crashed one restarting)
  hotswap stop   [--control PATH | --pidfile PATH] [--timeout DUR]
      stop every generation gracefully and wait until hotswap has stopped
  hotswap signal SIG [--control PATH | --pidfile PATH]
      send SIG (USR1, HUP, 10, ...) to the current generation

Blue/green (--mode reuseport):
  hotswap reload --hold     start a new generation and, once ready, keep it
                            beside the current one as a canary at weight 0
  hotswap weight PCT        send PCT percent of new connections to the canary
  hotswap promote           the canary becomes current; the old one drains
  hotswap rollback          everything back to the current generation; the
                            canary drains

Without --control or --pidfile, the control socket of the only hotswap
running as this user is used (` + control.DefaultPathHelp + `).

Flags:
`

// clientOptions are the flags every control subcommand takes.
type clientOptions struct {
	control, pidfile string
	timeout          time.Duration
	json             bool
}

// subcommand runs `hotswap NAME ...` when args[0] names a subcommand.
func subcommand(args []string) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case control.OpReload, control.OpStatus, control.OpStop, control.OpSignal,
		control.OpWeight, control.OpPromote, control.OpRollback:
		return runClient(args[0], args[1:]), true
	}
	return 0, false
}

func runClient(op string, args []string) int {
	var o clientOptions
	fs := pflag.NewFlagSet("hotswap "+op, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	fs.StringVar(&o.control, "control", "", "the control socket `PATH` of the hotswap to talk to")
	fs.StringVar(&o.pidfile, "pidfile", "", "talk to the hotswap whose pid is in `PATH` (its default control socket)")
	fs.DurationVar(&o.timeout, "timeout", DefaultClientTimeout, "give up waiting for the answer after this long")
	var hold bool
	switch op {
	case control.OpStatus:
		fs.BoolVar(&o.json, "json", false, "print the status as JSON")
	case control.OpReload:
		fs.BoolVar(&hold, "hold", false, "reuseport mode: keep the new generation as a canary beside the current one (weight 0)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(os.Stdout, clientUsage+fs.FlagUsages())
			return exitOK
		}
		return fail(exitUsage, "%s: %v", op, err)
	}
	req := control.Request{V: control.Version, Op: op, Hold: hold}
	rest := fs.Args()
	if op == control.OpWeight {
		if len(rest) != 1 {
			return fail(exitUsage, "weight: want one percentage (usage: hotswap weight PCT)")
		}
		pct, err := strconv.Atoi(strings.TrimSuffix(rest[0], "%"))
		if err != nil || pct < 0 || pct > 100 {
			return fail(exitUsage, "weight: %q is not a percentage from 0 to 100", rest[0])
		}
		req.Percent, rest = &pct, nil
	}
	if op == control.OpSignal {
		if len(rest) != 1 {
			return fail(exitUsage, "signal: want one signal (usage: hotswap signal SIG)")
		}
		if _, err := supervisor.ParseSignal(rest[0]); err != nil {
			return fail(exitUsage, "signal: %v", err)
		}
		req.Signal, rest = rest[0], nil
	}
	if len(rest) > 0 {
		return fail(exitUsage, "%s: unexpected argument %q", op, rest[0])
	}
	if o.timeout <= 0 {
		return fail(exitUsage, "%s: --timeout must be positive", op)
	}
	path, err := control.Resolve(o.control, o.pidfile)
	if err != nil {
		return fail(exitUsage, "%s: %v", op, err)
	}
	return o.do(path, req)
}

// do sends req, waits for the answer and reports it.
func (o *clientOptions) do(path string, req control.Request) int {
	op := req.Op
	c, err := control.Dial(path, time.Now().Add(o.timeout))
	if err != nil {
		return fail(exitUnreachable, "%s: cannot reach hotswap: %v; nothing was changed", op, err)
	}
	defer c.Close()
	resp, err := c.Do(req)
	if err != nil {
		return fail(exitUnreachable, "%s: %s", op, unreachable(op, err, o.timeout))
	}
	if !resp.OK {
		return reportFailure(op, resp)
	}
	switch op {
	case control.OpReload:
		if req.Hold {
			fmt.Printf("hotswap: canary ready: generation %d (pid %d) at weight 0\n", resp.Gen, resp.PID)
			break
		}
		fmt.Printf("hotswap: reload succeeded: serving generation %d (pid %d)\n", resp.Gen, resp.PID)
	case control.OpWeight:
		fmt.Printf("hotswap: canary weight %d%%\n", *req.Percent)
	case control.OpPromote, control.OpRollback:
		fmt.Printf("hotswap: %s done\n", op)
	case control.OpStatus:
		if code := printStatus(os.Stdout, resp.Status, o.json); code != exitOK || serving(resp.Status) {
			return code
		}
		// A readiness probe can run this: no ready generation, not ready.
		return exitFailure
	case control.OpStop:
		// The server closes the connection once every generation stopped.
		if err := c.WaitClosed(); err != nil {
			return fail(exitUnreachable, "stop: %s", unreachable(op, err, o.timeout))
		}
		fmt.Println("hotswap: stopped")
	}
	return exitOK
}

// unreachable says what a lost answer means for op.
func unreachable(op string, err error, timeout time.Duration) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("no answer within %v", timeout)
	}
	switch op {
	case control.OpReload:
		return fmt.Sprintf("%v; the outcome is unknown: see hotswap status", err)
	case control.OpStop:
		return fmt.Sprintf("%v; hotswap may still be stopping", err)
	}
	return err.Error()
}

func reportFailure(op string, resp control.Response) int {
	msg := resp.Error
	if resp.StillServing != "" {
		msg += "; " + resp.StillServing
	}
	switch op {
	case control.OpReload:
		return fail(exitFailure, "reload failed: %s", msg)
	case control.OpStop:
		return fail(exitFailure, "stop: %s; hotswap keeps serving", msg)
	}
	return fail(exitFailure, "%s: %s", op, msg)
}

// statusJSON is `hotswap status --json`: the supervisor's status and how
// long hotswap has run.
type statusJSON struct {
	*supervisor.Status
	UptimeSeconds float64 `json:"uptime_seconds"`
}

// serving reports whether a generation that passed its gate serves.
func serving(st *supervisor.Status) bool {
	for _, g := range st.Generations {
		if g.ID == st.Current && g.State == supervisor.StateReady {
			return true
		}
	}
	return false
}

func printStatus(w io.Writer, st *supervisor.Status, asJSON bool) int {
	if st == nil {
		return fail(exitFailure, "status: empty answer")
	}
	up := time.Since(st.Started)
	if asJSON {
		b, _ := json.MarshalIndent(statusJSON{st, up.Seconds()}, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return exitOK
	}
	fmt.Fprintf(w, "hotswap pid %d, up %v, serving generation %d\n", st.PID, up.Round(time.Second), st.Current)
	fmt.Fprintf(w, "reloads: %d ok, %d failed; restarts: %d\n", st.Reloads.OK, st.Reloads.Failed, st.Restarts)
	if st.SteeringRepairs != 0 || st.ForeignSockets != 0 {
		fmt.Fprintf(w, "reuseport groups: %d steering repairs, %d foreign sockets (see the log)\n", st.SteeringRepairs, st.ForeignSockets)
	}
	if st.LastFailure != "" {
		fmt.Fprintf(w, "last failure: %s\n", st.LastFailure)
	}
	if !st.NextRestart.IsZero() {
		fmt.Fprintf(w, "crashed: restarting in %v (backoff %v)\n", time.Until(st.NextRestart).Round(time.Millisecond), st.Backoff)
	}
	if st.Canary != 0 {
		fmt.Fprintf(w, "canary: generation %d at weight %d%%\n", st.Canary, st.Weight)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nLISTENER\tADDRESS\tMODE\tQUEUE")
	for _, l := range st.Listeners {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\n", l.Name, l.Address, l.Mode, l.Queue, l.Backlog)
	}
	if len(st.Workers) > 0 {
		fmt.Fprintln(tw, "\nWORKER\tGEN\tPID\tSTATE\tCPU\tQUEUE\tRESTARTS")
		for _, w := range st.Workers {
			state, cpu := string(w.State), "-"
			switch {
			case w.PID == 0 && !w.NextRestart.IsZero():
				state = fmt.Sprintf("restarting in %v", time.Until(w.NextRestart).Round(time.Millisecond))
			case w.Pending != 0:
				state += fmt.Sprintf(" (reload gating pid %d)", w.Pending)
			}
			if w.CPU != nil {
				cpu = strconv.Itoa(*w.CPU)
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\n", w.Worker, w.Gen, w.PID, state, cpu, w.Queue, w.Restarts)
		}
	}
	containers := slices.ContainsFunc(st.Generations, func(g supervisor.GenerationStatus) bool { return g.Container != nil })
	header := "\nGEN\tPID\tSTATE\tSTARTED\tREADY AFTER\tQUEUE"
	if containers {
		header += "\tIMAGE\tCONTAINER"
	}
	fmt.Fprintln(tw, header)
	for _, g := range st.Generations {
		ready := "-"
		if g.ReadyAfter > 0 {
			ready = g.ReadyAfter.Round(time.Millisecond).String()
		}
		queue := "-"
		for i, q := range g.Queues {
			if i == 0 {
				queue = ""
			} else {
				queue += " "
			}
			queue += fmt.Sprintf("%s:%d", q.Name, q.Queue)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s", g.ID, g.PID, g.State, g.Started.Format(time.DateTime), ready, queue)
		if containers {
			fmt.Fprintf(tw, "\t%s", containerColumns(g.Container))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return exitOK
}

// containerColumns are the IMAGE and CONTAINER columns of a generation:
// the image and the short container id (with its name, if any).
func containerColumns(c *supervisor.ContainerStatus) string {
	if c == nil {
		return "-\t-"
	}
	id := c.ID
	if len(id) > 12 {
		id = id[:12]
	}
	if id == "" {
		id = "-"
	}
	if c.Name != "" {
		id += " (" + c.Name + ")"
	}
	return c.Image + "\t" + id
}
