package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Hints: a failure that has a known fix says it, in the user's terms.

// exitCause is why a generation's context ended: it exited, with a hint
// when its exit points to a fix.
type exitCause struct {
	status string // "status 1", "signal SIGKILL"
	code   int    // the shell's exit status
	hint   string
}

func (e *exitCause) Error() string { return "exited with " + e.status + e.suffix() }

func (e *exitCause) suffix() string {
	if e.hint == "" {
		return ""
	}
	return ": " + e.hint
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
	c := &exitCause{status: describeExit(g.ps), code: exitCode(g.ps)}
	if g.watch != nil {
		c.hint = g.watch.bindHint(c.code)
	}
	return c
}

// The bind watch: without --intercept, a server that binds a --listen
// address itself finds it taken by hotswap and usually exits at once,
// saying "address already in use". Each generation's stderr goes through
// a pipe that hotswap copies to its own stderr, watching for that.

// inUseWords are how servers report EADDRINUSE: "Address already in use"
// (glibc's strerror, Python, nginx, HAProxy, uWSGI, Go), "EADDRINUSE"
// (Node, Ruby).
func inUseWords() [][]byte { return [][]byte{[]byte("address already in use"), []byte("eaddrinuse")} }

// watchLimit bounds how much of a generation's stderr is searched: a
// bind fails at start, not after megabytes of logs.
const watchLimit = 1 << 20

type bindWatchHook struct {
	s       *Supervisor
	pending map[int]*outputWatch // between before and after or abort; run loop only
}

func newBindWatchHook(s *Supervisor) *bindWatchHook {
	return &bindWatchHook{s: s, pending: map[int]*outputWatch{}}
}

type outputWatch struct {
	w     *os.File      // the child's stderr; hotswap's copy is closed once it started
	done  chan struct{} // closed when every writer has closed the pipe
	inUse atomic.Bool
	held  []string // the addresses hotswap holds, for the hint
}

func (h *bindWatchHook) before(id int, cmd *exec.Cmd) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	ow := &outputWatch{w: w, done: make(chan struct{})}
	for _, l := range h.s.listeners {
		if l.spec.Network != "unix" {
			ow.held = append(ow.held, l.addr())
		}
	}
	dst := cmd.Stderr
	cmd.Stderr = w
	// Not owned by s.wg: a descendant of the generation may hold the pipe
	// open after it exited, and hotswap must not wait for it.
	go ow.copy(dst, r)
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
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous read, for words cut in two
	seen := 0
	for {
		n, err := r.Read(buf)
		if n > 0 {
			dst.Write(buf[:n])
			if seen < watchLimit && !ow.inUse.Load() {
				text := bytes.ToLower(append(tail, buf[:n]...))
				for _, w := range inUseWords() {
					if bytes.Contains(text, w) {
						ow.inUse.Store(true)
					}
				}
				tail = append(tail[:0], text[max(0, len(text)-32):]...)
				seen += n
			}
		}
		if err != nil {
			break
		}
	}
	if f, ok := dst.(interface{ Flush() }); ok {
		f.Flush()
	}
}

// bindHint returns the hint for a generation that exited with code: it
// could not bind an address hotswap holds, when it said so on stderr or
// exited with EADDRINUSE's number.
func (ow *outputWatch) bindHint(code int) string {
	select {
	case <-ow.done:
	case <-time.After(100 * time.Millisecond): // a descendant holds the pipe; take what was read
	}
	if len(ow.held) == 0 || !ow.inUse.Load() && code != int(syscall.EADDRINUSE) {
		return ""
	}
	fds := "fd 3"
	what := ow.held[0] + ", which hotswap holds"
	if len(ow.held) > 1 {
		fds = fmt.Sprintf("fds 3-%d", 2+len(ow.held))
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
