package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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

// maxResponse bounds an answer line (a status lists every generation).
const maxResponse = 1 << 20

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
running as this user is used (` + defaultControlHelp + `).

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
	case supervisor.OpReload, supervisor.OpStatus, supervisor.OpStop, supervisor.OpSignal,
		supervisor.OpWeight, supervisor.OpPromote, supervisor.OpRollback:
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
	case supervisor.OpStatus:
		fs.BoolVar(&o.json, "json", false, "print the status as JSON")
	case supervisor.OpReload:
		fs.BoolVar(&hold, "hold", false, "reuseport mode: keep the new generation as a canary beside the current one (weight 0)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(os.Stdout, clientUsage+fs.FlagUsages())
			return exitOK
		}
		return fail(exitUsage, "%s: %v", op, err)
	}
	req := supervisor.Request{V: supervisor.ControlVersion, Op: op, Hold: hold}
	rest := fs.Args()
	if op == supervisor.OpWeight {
		if len(rest) != 1 {
			return fail(exitUsage, "weight: want one percentage (usage: hotswap weight PCT)")
		}
		pct, err := strconv.Atoi(strings.TrimSuffix(rest[0], "%"))
		if err != nil || pct < 0 || pct > 100 {
			return fail(exitUsage, "weight: %q is not a percentage from 0 to 100", rest[0])
		}
		req.Percent, rest = &pct, nil
	}
	if op == supervisor.OpSignal {
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
	path, err := resolveControl(o.control, o.pidfile)
	if err != nil {
		return fail(exitUsage, "%s: %v", op, err)
	}
	return o.do(path, req)
}

// do sends req, waits for the answer and reports it.
func (o *clientOptions) do(path string, req supervisor.Request) int {
	op := req.Op
	conn, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return fail(exitUnreachable, "%s: cannot reach hotswap: %v; nothing was changed", op, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(o.timeout))
	r := bufio.NewReader(io.LimitReader(conn, maxResponse))
	resp, err := exchange(conn, r, req)
	if err != nil {
		return fail(exitUnreachable, "%s: %s", op, unreachable(op, err, o.timeout))
	}
	if !resp.OK {
		return reportFailure(op, resp)
	}
	switch op {
	case supervisor.OpReload:
		if req.Hold {
			fmt.Printf("hotswap: canary ready: generation %d (pid %d) at weight 0\n", resp.Gen, resp.PID)
			break
		}
		fmt.Printf("hotswap: reload succeeded: serving generation %d (pid %d)\n", resp.Gen, resp.PID)
	case supervisor.OpWeight:
		fmt.Printf("hotswap: canary weight %d%%\n", *req.Percent)
	case supervisor.OpPromote, supervisor.OpRollback:
		fmt.Printf("hotswap: %s done\n", op)
	case supervisor.OpStatus:
		if code := printStatus(os.Stdout, resp.Status, o.json); code != exitOK || serving(resp.Status) {
			return code
		}
		// A readiness probe can run this: no ready generation, not ready.
		return exitFailure
	case supervisor.OpStop:
		// The server closes the connection once every generation stopped.
		if _, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
			return fail(exitUnreachable, "stop: %s", unreachable(op, err, o.timeout))
		}
		fmt.Println("hotswap: stopped")
	}
	return exitOK
}

func exchange(conn net.Conn, r *bufio.Reader, req supervisor.Request) (supervisor.Response, error) {
	var resp supervisor.Response
	b, err := supervisor.EncodeLine(req)
	if err != nil {
		return resp, err
	}
	_, werr := conn.Write(b)
	// Even when the write failed, the server may have answered first:
	// it refuses a peer of another uid before reading its request.
	line, err := r.ReadBytes('\n')
	if err != nil && werr != nil {
		return resp, fmt.Errorf("send request: %w", werr)
	}
	if err != nil {
		return resp, fmt.Errorf("read answer: %w", err)
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("read answer: %w", err)
	}
	return resp, nil
}

// unreachable says what a lost answer means for op.
func unreachable(op string, err error, timeout time.Duration) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("no answer within %v", timeout)
	}
	switch op {
	case supervisor.OpReload:
		return fmt.Sprintf("%v; the outcome is unknown: see hotswap status", err)
	case supervisor.OpStop:
		return fmt.Sprintf("%v; hotswap may still be stopping", err)
	}
	return err.Error()
}

func reportFailure(op string, resp supervisor.Response) int {
	msg := resp.Error
	if resp.StillServing != "" {
		msg += "; " + resp.StillServing
	}
	switch op {
	case supervisor.OpReload:
		return fail(exitFailure, "reload failed: %s", msg)
	case supervisor.OpStop:
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
	fmt.Fprintln(tw, "\nGEN\tPID\tSTATE\tSTARTED\tREADY AFTER\tQUEUE")
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
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", g.ID, g.PID, g.State, g.Started.Format(time.DateTime), ready, queue)
	}
	tw.Flush()
	return exitOK
}
