package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// Hints: a failure that has a known fix says it, in the user's terms.

// exitCause is why a generation's context ended: it exited, with a hint
// when its exit points to a fix. The hint is read when first needed, not
// when the context ends: the gate must see the exit at once, while what
// the generation said may still be on its way through the tee.
type exitCause struct {
	status string // "status 1", "signal SIGKILL"
	code   int    // the shell's exit status
	watch  *outputWatch

	once sync.Once
	hint string
}

func (e *exitCause) Error() string { return "exited with " + e.status + e.suffix() }

// Hint returns the hint, waiting briefly for the generation's stderr.
func (e *exitCause) Hint() string {
	e.once.Do(func() {
		if e.watch != nil {
			e.hint = e.watch.bindHint(e.code)
		}
	})
	return e.hint
}

func (e *exitCause) suffix() string {
	if h := e.Hint(); h != "" {
		return ": " + h
	}
	return ""
}

// firstNotReady is the error hotswap ends with when its first generation
// g is not ready, gateErr being the gate's error (nil when g's exit is
// seen first). An exit reads the same whichever of the exit and the gate's
// result the run loop sees first: the gate reports an exit as soon as g's
// context is cancelled, before g.exited is closed.
func firstNotReady(g *gen, gateErr error) error {
	if g.ctx.Err() != nil {
		return &earlyExit{gen: g.id, pid: g.pid, cause: context.Cause(g.ctx)}
	}
	return fmt.Errorf("generation %d (pid %d) %w", g.id, g.pid, gateErr)
}

// earlyExit is a first generation that exited before it was ready.
type earlyExit struct {
	gen, pid int
	cause    error
}

func (e *earlyExit) Error() string {
	if c, ok := e.cause.(*exitCause); ok {
		return fmt.Sprintf("generation %d (pid %d) exited with %s before it was ready%s", e.gen, e.pid, c.status, c.suffix())
	}
	return fmt.Sprintf("generation %d (pid %d) %v before it was ready", e.gen, e.pid, e.cause)
}

func (e *earlyExit) Unwrap() error { return e.cause }

// exitedCause is the cause g's context ends with once it was reaped.
func exitedCause(g *gen) error {
	return &exitCause{status: describeExit(g.ps), code: exitCode(g.ps), watch: g.watch}
}

// causeHint is the hint of g's exit, if any.
func causeHint(g *gen) string {
	if c, ok := context.Cause(g.ctx).(*exitCause); ok {
		return c.Hint()
	}
	return ""
}

// The bind watch: without --intercept, a server that binds a --listen
// address itself finds it taken by hotswap and usually exits at once,
// saying "address already in use". Each generation's stderr goes through
// a pipe copied to hotswap's stderr by the stderr relay (tee.go), or with
// --output-prefix by hotswap itself, watching for that.

// A sign is something a generation said on stderr that points to a fix.
type sign byte

const (
	signInUse      sign = 1 << iota // it could not bind an address: hotswap's
	signUwsgiProto                  // uWSGI speaks its own protocol on the socket
)

// signWords are the words, lower case, of each sign: EADDRINUSE as glibc's
// strerror says it (Python, nginx, HAProxy, uWSGI, Go) or by name (Node,
// Ruby); uWSGI reading an HTTP request as a uwsgi packet header.
func signWords() []signWord {
	return []signWord{
		{signInUse, []byte("address already in use")},
		{signInUse, []byte("eaddrinuse")},
		{signUwsgiProto, []byte("invalid request block size")},
	}
}

type signWord struct {
	sign  sign
	words []byte
}

// watchLimit bounds how much of a generation's stderr is searched: a
// bind fails at start, not after megabytes of logs.
const watchLimit = 1 << 20

type bindWatchHook struct {
	s       *Supervisor
	pending map[int]*outputWatch // between before and after or abort; run loop only
	relay   *stderrRelay         // with Config.TeeStderr
}

func newBindWatchHook(s *Supervisor) *bindWatchHook {
	h := &bindWatchHook{s: s, pending: map[int]*outputWatch{}}
	if s.cfg.TeeStderr {
		h.relay = newStderrRelay(s.cfg.Executable)
	}
	return h
}

type outputWatch struct {
	w     *os.File      // the child's stderr; hotswap's copy is closed once it started
	done  chan struct{} // closed when every writer has closed the pipe
	signs atomic.Uint32 // the signs seen
	held  []string      // the addresses hotswap holds, for the hint
	fds   int           // how many sockets the generation inherits, from fd 3
}

func (h *bindWatchHook) before(id int, cmd *exec.Cmd) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	ow := &outputWatch{w: w, done: make(chan struct{}), fds: len(h.s.listeners)}
	for _, l := range h.s.listeners {
		if l.spec.Network != "unix" {
			ow.held = append(ow.held, l.addr())
		}
	}
	// The {port} socket follows the listeners (readiness.handOut): a
	// server that binds 127.0.0.1:{port} itself instead of serving it
	// fails the same way, and it is one more inherited fd.
	if n := len(h.s.listeners); h.s.cfg.Ready.UsesPort() && len(cmd.ExtraFiles) > n {
		if a, err := reuse.Addr(cmd.ExtraFiles[n]); err == nil {
			ow.held = append(ow.held, a.String())
			ow.fds++
		}
	}
	dst := cmd.Stderr
	cmd.Stderr = w
	if f, ok := dst.(*os.File); ok && h.relay != nil {
		if err := h.relay.add(ow, r, f); err != nil {
			w.Close()
			return fmt.Errorf("stderr relay: %w", err)
		}
	} else {
		// Not owned by s.wg: a descendant of the generation may hold
		// the pipe open after it exited, and hotswap must not wait.
		go ow.copy(dst, r)
	}
	h.pending[id] = ow
	return nil
}

func (h *bindWatchHook) after(g *gen) {
	ow := h.pending[g.id]
	delete(h.pending, g.id)
	ow.w.Close()
	g.watch = ow
}

func (h *bindWatchHook) abort(id int) {
	if ow := h.pending[id]; ow != nil {
		ow.w.Close()
		delete(h.pending, id)
	}
}

func (ow *outputWatch) copy(dst io.Writer, r *os.File) {
	defer close(ow.done)
	defer r.Close()
	copyScanning(dst, r, ow.saw)
	if f, ok := dst.(interface{ Flush() }); ok {
		f.Flush()
	}
}

func (ow *outputWatch) saw(s sign) { ow.signs.Or(uint32(s)) }

func (ow *outputWatch) seen(s sign) bool { return ow.signs.Load()&uint32(s) != 0 }

// protocolHint returns the hint for a generation that was not ready in
// time, when its output says why.
func (ow *outputWatch) protocolHint() string {
	if ow.seen(signUwsgiProto) {
		return `uWSGI read HTTP as its own uwsgi protocol ("invalid request block size"): serve HTTP on the inherited socket with --protocol http --socket fd://3, not --http-socket`
	}
	return ""
}

// bindHint returns the hint for a generation that exited with code: it
// could not bind an address hotswap holds, when it said so on stderr or
// exited with EADDRINUSE's number.
func (ow *outputWatch) bindHint(code int) string {
	select {
	case <-ow.done:
	case <-time.After(100 * time.Millisecond): // a descendant holds the pipe; take what was read
	}
	if len(ow.held) == 0 || !ow.seen(signInUse) && code != int(syscall.EADDRINUSE) {
		return ""
	}
	fds := "fd 3"
	if ow.fds > 1 {
		fds = fmt.Sprintf("fds 3-%d", 2+ow.fds)
	}
	what := ow.held[0] + ", which hotswap holds"
	if len(ow.held) > 1 {
		what = "an address hotswap holds (" + strings.Join(ow.held, ", ") + ")"
	}
	return fmt.Sprintf("it could not bind %s; let it take the inherited socket (%s, LISTEN_FDS) or add --intercept", what, fds)
}

// Stop hints: a generation still running when the drain timeout ends
// ignored the stop signal, or took it as something else (uWSGI reloads
// itself on SIGTERM). For servers whose graceful signal is known, name it.

// gracefulSignal returns, for a server's executable name, the signal that
// stops it without dropping what it serves and the hint that names it.
func gracefulSignal(exe string) (sig, hint string, ok bool) {
	switch exe {
	case "nginx":
		return "SIGQUIT", "nginx stops gracefully on SIGQUIT: add --stop-signal QUIT", true
	case "uwsgi", "uwsgi-core":
		return "SIGINT", "uWSGI stops on SIGINT (SIGTERM makes it reload itself): add --stop-signal INT", true
	case "haproxy":
		return "SIGUSR1", "HAProxy stops gracefully on SIGUSR1: add --stop-signal USR1", true
	}
	return "", "", false
}

// stopHint says what to do about g, which did not stop within the drain
// timeout after sig: the server's graceful signal when it is known and
// not sig, else a generic line.
func stopHint(g *gen, sig syscall.Signal) string {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", g.pid))
	if gsig, hint, ok := gracefulSignal(filepath.Base(exe)); ok && gsig != signalName(sig) {
		return hint
	}
	return fmt.Sprintf("it did not exit on %s: give --stop-signal the server's graceful stop signal, or a longer --drain-timeout", signalName(sig))
}

// warnStopSignal warns at the start when the command is a server whose
// stop signal is known and --stop-signal is another that will lose
// requests or time: uWSGI's SIGTERM (it reloads itself, so every old
// generation waits out the drain timeout) unless --die-on-term; nginx's
// and HAProxy's fast stop where a socket is shared, so that hotswap cannot
// drain the old generation before it stops.
func (s *Supervisor) warnStopSignal() {
	sig, hint, ok := gracefulSignal(filepath.Base(s.cfg.Command[0]))
	if !ok || sig == signalName(s.cfg.StopSignal) {
		return
	}
	switch filepath.Base(s.cfg.Command[0]) {
	case "uwsgi", "uwsgi-core":
		if s.cfg.StopSignal != syscall.SIGTERM || slices.Contains(s.cfg.Command, "--die-on-term") {
			return
		}
	default:
		shared := s.cfg.Mode != ModeReusePort
		for _, l := range s.cfg.Listeners {
			shared = shared || !strings.HasPrefix(l.Network, "tcp")
		}
		if !shared {
			return // drained before its stop signal: nothing in flight
		}
	}
	s.log.Warn("stop signal "+signalName(s.cfg.StopSignal)+" will not stop "+s.cfg.Command[0]+" gracefully", "hint", hint)
}
