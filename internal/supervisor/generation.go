package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// State is where a generation is in its life.
type State string

const (
	StateStarting State = "starting" // started, not yet ready
	StateReady    State = "ready"    // serving; the current generation
	StateDraining State = "draining" // stop signal sent or about to be
	StateExited   State = "exited"
)

// gen is one running instance of the command. Only the run loop touches
// its mutable fields; exited and ps are written once by the waiter before
// exited is closed.
type gen struct {
	id      int
	worker  int // its slot in a worker pool, 0 without one (workers.go)
	cpu     int // the CPU it is pinned to with --cpu-affinity, else -1
	gated   bool
	pid     int
	cmd     *exec.Cmd
	started time.Time
	readyAt time.Time
	state   State
	log     hclog.Logger
	ready   readiness // what its gate needs; closed once it exits
	// members are its reuseport sockets, per listener (nil for shared
	// ones); the supervisor's copies are released before it is stopped.
	members []*reuse.Member
	// leave runs once, on the first way out of the generation: the stop
	// releasing its members, or its exit releasing them or handing them
	// to the restart (leaveMembers).
	leave sync.Once
	watch *outputWatch // its stderr, without --intercept (hint.go)
	// files are the {file:PATH} values it was started with; a crash
	// restart of it starts the same ones (argfile.go).
	files argFiles
	argv  []string // the command it runs, placeholders expanded
	// ctr is set when the command is `podman run` (podman.go).
	ctr *container
	// udp is set when it has sockets of its own in UDP groups (quic.go);
	// udpProbe is where its readiness probes over UDP come from.
	udp      bool
	udpProbe netip.AddrPort

	// ctx is cancelled, with the reason, when the process exits.
	ctx    context.Context
	cancel context.CancelCauseFunc

	exited chan struct{} // closed when the process has been reaped
	ps     *os.ProcessState
}

// genKey names a live process: its generation and its worker.
type genKey struct{ id, worker int }

func (g *gen) key() genKey { return genKey{g.id, g.worker} }

// startGen starts worker w of generation id with every listener and
// LISTEN_PID set to its pid: exec'd directly (startDirect), else through
// an exec shim. values are the {file:PATH} values to use; nil reads the
// files.
func (s *Supervisor) startGen(id, w int, values argFiles) (_ *gen, retErr error) {
	if _, err := exec.LookPath(s.cfg.Command[0]); err != nil {
		return nil, fmt.Errorf("start generation %d: command %s: %w", id, s.cfg.Command[0], unwrapExec(err))
	}
	if values == nil {
		var err error
		if values, err = readArgFiles(s.cfg.Command); err != nil {
			return nil, fmt.Errorf("start generation %d: %w", id, err)
		}
	}
	ready, argv, env, err := s.prepareReady(id, w, values)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			ready.close()
		}
	}()
	sl := s.slots[w]
	files, members, err := s.members(sl, id)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.dropMembers(sl, members)
		} else {
			s.takeOrphans(sl, members)
		}
	}()
	if s.cfg.Workers > 0 {
		env = append(env, fdpass.Worker+"="+strconv.Itoa(w), fdpass.Workers+"="+strconv.Itoa(s.cfg.Workers))
	}
	files, names := ready.handOut(files, s.names)
	if s.podman != nil {
		argv = s.podman.args(id, argv)
	}
	env = fdpass.ChildEnv(s.cfg.Env, names, id, env...)
	direct := s.directPath(argv)
	path, args, cenv := direct, argv, append([]string{listenPIDSlot}, env...)
	if direct == "" {
		path, args, cenv = s.shim(argv, env)
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       args,
		Env:        cenv,
		Stdin:      os.Stdin,
		Stdout:     s.output(id, s.cfg.Stdout),
		Stderr:     s.output(id, s.cfg.Stderr),
		ExtraFiles: files,
		// Its own process group: a terminal's ^C reaches hotswap only, and
		// hotswap decides when each generation stops.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	for i, h := range s.hooks {
		if err := h.before(id, cmd); err != nil {
			for _, h := range s.hooks[:i] {
				h.abort(id)
			}
			return nil, fmt.Errorf("start generation %d: %w", id, err)
		}
	}
	if s.cfg.OutputPrefix != "" {
		// Output goes through a pipe copied by os/exec; a grandchild that
		// keeps it open must not hold up the generation's reaping.
		cmd.WaitDelay = time.Second
	}
	cpu := s.cpuOf(w)
	start := cmd.Start
	if direct != "" {
		start = func() error {
			err := startDirect(cmd)
			if !errors.Is(err, errNoDirect) {
				return err
			}
			if errors.Is(err, errNoTrace) {
				s.noDirect = true
				s.log.Warn("could not start a generation without an exec shim; they start through one from now on", "gen", id, "reason", err)
			} else {
				s.log.Debug("generation starts through an exec shim", "gen", id, "reason", err)
			}
			cmd = s.shimCmd(cmd, argv)
			return cmd.Start()
		}
	}
	if err := startPinned(cpu, start); err != nil {
		for _, h := range s.hooks {
			h.abort(id)
		}
		return nil, fmt.Errorf("start generation %d: %w", id, err)
	}
	g := &gen{
		id:      id,
		worker:  w,
		cpu:     cpu,
		pid:     cmd.Process.Pid,
		cmd:     cmd,
		started: time.Now(),
		state:   StateStarting,
		log:     s.genLog(id, w, cmd.Process.Pid),
		ready:   ready,
		members: members,
		files:   values,
		argv:    argv,
		exited:  make(chan struct{}),
	}
	if ready.notify != nil {
		if err := ready.notify.Attach(g.pid); err != nil {
			g.log.Warn("attach notify socket", "error", err)
		}
	}
	g.ctx, g.cancel = context.WithCancelCause(context.Background())
	for _, h := range s.hooks {
		h.after(g)
	}
	s.wg.Go(func() { s.wait(g) })
	g.log.Info("generation started", "command", s.cfg.Command[0])
	return g, nil
}

// genLog is the logger of worker w of generation id.
func (s *Supervisor) genLog(id, w, pid int) hclog.Logger {
	if s.pool() {
		return s.log.With("gen", id, "worker", w, "pid", pid)
	}
	return s.log.With("gen", id, "pid", pid)
}

// shShim is the exec shim in POSIX sh: LISTEN_PID is the shell's own pid,
// which the command keeps across exec.
const shShim = `LISTEN_PID=$$; export LISTEN_PID; `

// binSh is /bin/sh if it can be run, else "".
func binSh() string {
	if fi, err := os.Stat("/bin/sh"); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return "/bin/sh"
	}
	return ""
}

// shellShim returns how to start argv with LISTEN_PID set to its own pid
// without hotswap's own binary as the shim, whose second Go runtime start
// costs milliseconds per reload: a command that is already `sh -c SCRIPT`
// gets the assignment in front of its script (no extra exec at all);
// another one runs under `/bin/sh -c`, which execs it in place. The Go
// shim stays for --intercept and --user, whose preparation must run on the
// thread that execs, and where there is no /bin/sh.
func (s *Supervisor) shellShim(argv []string) (path string, args []string, ok bool) {
	if s.cfg.Intercept || s.cfg.Credential != nil {
		return "", nil, false
	}
	if isShellCommand(argv) {
		if p, err := exec.LookPath(argv[0]); err == nil {
			return p, append([]string{argv[0], "-c", shShim + argv[2]}, argv[3:]...), true
		}
	}
	sh := binSh()
	if sh == "" {
		return "", nil, false
	}
	return sh, append([]string{"sh", "-c", shShim + `exec "$0" "$@"`}, argv...), true
}

// directPath is the executable to exec argv with directly, hotswap
// writing LISTEN_PID into it (execpid_linux.go), or "" to start it through
// a shim. A `sh -c` command is its own shim (shellShim).
func (s *Supervisor) directPath(argv []string) string {
	if isShellCommand(argv) {
		return ""
	}
	p, err := exec.LookPath(argv[0])
	if err != nil || !s.directExec(p) {
		return ""
	}
	return p
}

// shim is how to start argv with env through a shim that sets LISTEN_PID:
// /bin/sh (shellShim), else hotswap's own binary.
func (s *Supervisor) shim(argv, env []string) (path string, args, cenv []string) {
	if path, args, ok := s.shellShim(argv); ok {
		return path, args, env
	}
	return s.cfg.Executable, fdpass.ShimArgs(argv), append(slices.Clip(env), fdpass.ShimEnv+"=1")
}

// shimCmd is cmd, which could not be started directly, to be started
// through a shim instead: the same descriptors, output, attributes and
// environment (what the hooks added included), without the LISTEN_PID
// slot.
func (s *Supervisor) shimCmd(cmd *exec.Cmd, argv []string) *exec.Cmd {
	path, args, cenv := s.shim(argv, cmd.Env[1:])
	var attr *syscall.SysProcAttr
	if cmd.SysProcAttr != nil {
		a := *cmd.SysProcAttr
		a.Ptrace = false
		attr = &a
	}
	return &exec.Cmd{
		Path: path, Args: args, Env: cenv,
		Stdin: cmd.Stdin, Stdout: cmd.Stdout, Stderr: cmd.Stderr,
		ExtraFiles: cmd.ExtraFiles, SysProcAttr: attr, WaitDelay: cmd.WaitDelay,
	}
}

// errNoDirect marks a start that must be retried through a shim
// (startDirect); errNoTrace, wrapped with it, says that the later ones
// must start through one too: ptrace is refused here, or did not do what
// the start needs.
var (
	errNoDirect = errors.New("direct exec")
	errNoTrace  = errors.New("ptrace unusable")
)

// isShellCommand reports whether argv is `sh -c SCRIPT ...`.
func isShellCommand(argv []string) bool {
	return len(argv) >= 3 && (argv[0] == "sh" || argv[0] == "/bin/sh") && argv[1] == "-c"
}

// output is where generation id writes w's stream: w itself, or a
// prefixing writer with --output-prefix.
func (s *Supervisor) output(id int, w io.Writer) io.Writer {
	if s.cfg.OutputPrefix == "" {
		return w
	}
	return &prefixWriter{w: w, prefix: []byte(outputPrefix(s.cfg.OutputPrefix, id))}
}

// wait reaps g and reports its exit to the run loop.
func (s *Supervisor) wait(g *gen) {
	awaitExit(g.cmd.Process.Pid)
	err := g.cmd.Wait()
	for _, w := range []io.Writer{g.cmd.Stdout, g.cmd.Stderr} {
		if p, ok := w.(*prefixWriter); ok {
			p.Flush()
		}
	}
	g.ps = g.cmd.ProcessState
	if g.ctr != nil {
		killed, lingered := g.ctr.cleanup()
		if killed {
			g.log.Warn("podman exited before its container; killed the container", "image", g.ctr.image)
		}
		if lingered {
			g.log.Warn("conmon still runs; its copy of the listeners stays in the reuseport group until it exits", "image", g.ctr.image, "waited", containerExitWait)
		}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // exited; a descendant still holds its output pipe
	}
	var ee *exec.ExitError
	if g.ps == nil || (err != nil && !errors.As(err, &ee)) {
		s.reaped(g, fmt.Errorf("wait: %w", err))
	} else {
		s.reaped(g, exitedCause(g))
	}
}

// stop stops g: with drain, first waits until its reuseport sockets are
// drained; then releases the supervisor's copies of them, sends the stop
// signal and, after the drain timeout, SIGKILL to its whole process group.
// It returns once g has been reaped.
func (s *Supervisor) stop(g *gen, drain bool) {
	cutover := time.Now()
	if drain && g.members != nil && !s.cfg.SkipDrain {
		d, ok := s.drainWait(g)
		g.log.Info("drained", "after", d.Round(time.Millisecond), "complete", ok)
	}
	if drain && g.udp && !s.cfg.SkipDrain {
		d := s.udpDrainWait(g, cutover)
		g.log.Info("kept its quic connections", "for", d.Round(time.Millisecond))
	}
	// The copies are kept until g's exit, and what queued on them then is
	// relayed (closeKept); the naive restart SkipDrain measures closes
	// them now, so that g's own exit resets its queue.
	s.leaveMembers(g, !s.cfg.SkipDrain, nil)
	sig := s.cfg.StopSignal
	g.log.Info("stopping generation", "signal", signalName(sig))
	t0 := time.Now()
	defer func() { s.cfg.Observer.Stopped(g.id, time.Since(t0)) }()
	if err := g.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		g.log.Warn("signal generation", "error", err)
	}
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-g.exited:
		return
	case <-t.C:
	}
	g.log.Warn("generation did not stop in time, killing it", "drain_timeout", s.cfg.DrainTimeout, "hint", stopHint(g, sig))
	if g.ctr != nil && g.ctr.kill() {
		// podman removes a --rm container once it is dead, then exits.
		select {
		case <-g.exited:
			return
		case <-time.After(containerExitWait):
		}
	}
	// The group first, for workers the process may have left behind; the
	// process itself in case it changed its group.
	_ = syscall.Kill(-g.pid, syscall.SIGKILL)
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

// exitCode maps a process state to a shell's exit status: the code, or
// 128+signal.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func describeExit(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal " + signalName(ws.Signal())
	}
	return fmt.Sprintf("status %d", ps.ExitCode())
}
