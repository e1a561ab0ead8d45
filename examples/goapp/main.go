// Command goapp is the example server of hotswap's end-to-end tests and of
// `make demo`: an HTTP server that takes its listener from hotswap through
// [fdpass.Listen], drains through [fdpass.ServeHTTP], and says which version,
// generation and process answered. Its flags make it a versatile test
// subject: slow, broken, crashing, stubborn or busy on demand.
//
// Every path except /healthz answers "version=<v> gen=<gen> pid=<pid>\n"
// with the header X-Version: <v> (in a worker pool "... worker=<i> ..." and
// X-Worker: <i>, from HOTSWAP_WORKER); /healthz answers "ok\n".
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitCrash   = 3 // --crash-after
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// app is one running goapp.
type app struct {
	cfg    config
	stderr io.Writer
	gen    string
	pid    int
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "goapp: %v\n", err)
		return exitUsage
	}
	if cfg.sleep > 0 { // the grandchild of --spawn-grandchild
		time.Sleep(cfg.sleep)
		return exitOK
	}
	a := &app{cfg: cfg, stderr: stderr, gen: os.Getenv(fdpass.Generation), pid: os.Getpid()}
	if a.gen == "" {
		a.gen = "0"
	}
	if cfg.exitAtStart >= 0 {
		a.logf("exiting at start with status %d", cfg.exitAtStart)
		return cfg.exitAtStart
	}
	return a.main()
}

func (a *app) logf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "goapp %s gen %s pid %d "+format+"\n", append([]any{a.cfg.version, a.gen, a.pid}, args...)...)
}

// fail logs a one-line startup error and returns the exit status.
func (a *app) fail(what string, err error) int {
	a.logf("exiting: %s: %v", what, err)
	return exitFailure
}

func (a *app) main() int {
	tlsConf, err := a.cfg.tlsConfig()
	if err != nil {
		return a.fail("load tls key pair", err)
	}
	stop := make(chan os.Signal, 3)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGINT)
	if a.cfg.ignoreTerm {
		signal.Ignore(syscall.SIGTERM, syscall.SIGQUIT)
	}
	user := make(chan os.Signal, 8)
	if a.cfg.reportSignals != "" || a.cfg.stallOn > 0 {
		signal.Notify(user, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	} else {
		// hotswap forwards them; with no use for them, ignoring is what
		// goapp did with them anyway, without a round trip to the
		// runtime's signal thread per signal before it can listen
		// (signal.Notify makes one; 0.1-0.4 ms for these three here).
		signal.Ignore(syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	}
	if a.cfg.spawnGrandchild {
		if err := a.spawnGrandchild(); err != nil {
			return a.fail("spawn grandchild", err)
		}
	}
	inherited, err := fdpass.Listeners()
	if err != nil {
		return a.fail("inherit listeners", err)
	}
	ln, err := fdpass.Listen(a.cfg.name, "tcp", a.cfg.listen)
	if err != nil {
		return a.fail("listen", err)
	}
	if sig, ok := a.delay(stop); ok {
		ln.Close()
		a.logf("exiting: %s during start delay", signalName(sig))
		return exitOK
	}
	st := newStallListener(ln)
	s := a.newServers(st, tlsConf)
	if err := s.start(); err != nil {
		st.Close()
		return a.fail("listen for health checks", err)
	}
	how := "listening"
	if len(inherited) > 0 {
		how = "inherited"
	}
	a.logf("serving %s on %s (%s)%s", s.scheme(), ln.Addr(), how, s.healthNote())
	a.ready()
	return a.loop(s, st, stop, user)
}

// delay sleeps --start-delay, unless a stop signal comes first.
func (a *app) delay(stop <-chan os.Signal) (os.Signal, bool) {
	if a.cfg.startDelay <= 0 {
		return nil, false
	}
	t := time.NewTimer(a.cfg.startDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, false
	case sig := <-stop:
		return sig, true
	}
}

// loop handles signals and timers until the servers are done.
func (a *app) loop(s *servers, st *stallListener, stop, user <-chan os.Signal) int {
	var crash <-chan time.Time
	if a.cfg.crashAfter > 0 {
		t := time.NewTimer(a.cfg.crashAfter)
		defer t.Stop()
		crash = t.C
	}
	for {
		select {
		case sig := <-stop:
			return a.stop(s, sig)
		case sig := <-user:
			a.user(sig, st)
		case <-crash:
			a.logf("exiting: crash after %v", a.cfg.crashAfter)
			return exitCrash
		case err := <-s.done:
			a.logf("exiting: serve: %v", err)
			s.n--
			s.cancel()
			s.wait()
			return exitFailure
		}
	}
}

// stop answers a stop signal: --on-term exit leaves at once, like a server
// with no graceful shutdown at all, with the shell's 128+signal status.
func (a *app) stop(s *servers, sig os.Signal) int {
	if a.cfg.onTerm == onTermExit {
		a.logf("exiting: %s, no drain", signalName(sig))
		return 128 + int(sig.(syscall.Signal))
	}
	a.notify("STOPPING=1")
	start := time.Now()
	s.cancel()
	if err := s.wait(); err != nil {
		a.logf("exiting: %s: %v", signalName(sig), err)
		return exitFailure
	}
	a.logf("exiting: %s, drained in %v", signalName(sig), time.Since(start).Round(time.Millisecond))
	return exitOK
}

// user answers SIGUSR1, SIGUSR2 and SIGWINCH.
func (a *app) user(sig os.Signal, st *stallListener) {
	if a.cfg.reportSignals != "" {
		if err := appendLine(a.cfg.reportSignals, signalName(sig)); err != nil {
			a.logf("report signal: %v", err)
		}
	}
	if sig == syscall.SIGUSR1 && a.cfg.stallOn > 0 {
		st.stall(a.cfg.stallOn)
		a.logf("not accepting for %v", a.cfg.stallOn)
	}
}

var signalNames = map[os.Signal]string{
	syscall.SIGTERM: "SIGTERM", syscall.SIGQUIT: "SIGQUIT", syscall.SIGINT: "SIGINT",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGWINCH: "SIGWINCH",
}

func signalName(sig os.Signal) string {
	if n, ok := signalNames[sig]; ok {
		return n
	}
	return sig.String()
}

func appendLine(path, line string) (retErr error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, f.Close()) }()
	_, err = io.WriteString(f, line+"\n")
	return err
}

// handler answers every request.
func (a *app) handler() http.Handler {
	body := fmt.Sprintf("version=%s gen=%s pid=%d\n", a.cfg.version, a.gen, a.pid)
	worker, pool := os.LookupEnv(fdpass.Worker)
	if pool {
		body = fmt.Sprintf("version=%s gen=%s worker=%s pid=%d\n", a.cfg.version, a.gen, worker, a.pid)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Version", a.cfg.version)
		if pool {
			w.Header().Set("X-Worker", worker)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.URL.Path == "/healthz" {
			w.WriteHeader(a.cfg.healthStatus)
			io.WriteString(w, "ok\n")
			return
		}
		w.WriteHeader(a.cfg.status)
		io.WriteString(w, body)
	})
}

// servers are the main server and the optional health server.
type servers struct {
	a      *app
	ctx    context.Context
	cancel context.CancelFunc
	main   *http.Server
	ln     net.Listener
	https  bool       // kept apart from main.TLSConfig, which Serve writes
	health net.Addr   // nil without --health-listen
	done   chan error // one per server that returns
	n      int
}

func (a *app) newServers(ln net.Listener, tlsConf *tls.Config) *servers {
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: a.handler(), TLSConfig: tlsConf, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: a.cfg.idleTimeout}
	return &servers{a: a, ctx: ctx, cancel: cancel, main: srv, ln: ln, https: tlsConf != nil, done: make(chan error, 2)}
}

func (s *servers) scheme() string {
	if s.https {
		return "https"
	}
	return "http"
}

func (s *servers) healthNote() string {
	if s.health == nil {
		return ""
	}
	return ", /healthz on " + s.health.String()
}

func (s *servers) start() error {
	if addr := s.a.cfg.healthListen; addr != "" {
		hln, err := s.healthListener(addr)
		if err != nil {
			return err
		}
		s.health = hln.Addr()
		s.go1(&http.Server{Handler: s.a.handler(), ReadHeaderTimeout: 30 * time.Second}, hln)
	}
	s.go1(s.main, s.ln)
	return nil
}

// healthListener is the socket hotswap bound for {port} (named "health")
// when there is one, so the port in --health-listen 127.0.0.1:{port} is
// served without binding it again; else goapp binds addr itself.
func (s *servers) healthListener(addr string) (net.Listener, error) {
	inherited, err := fdpass.Listeners()
	if err != nil {
		return nil, err
	}
	if ln, ok := inherited["health"]; ok {
		return ln, nil
	}
	return net.Listen("tcp", addr)
}

func (s *servers) go1(srv *http.Server, ln net.Listener) {
	s.n++
	if !s.a.cfg.plainShutdown {
		go func() { s.done <- fdpass.ServeHTTP(s.ctx, srv, ln, s.a.cfg.drainTimeout) }()
		return
	}
	// What most Go servers do: Shutdown closes idle keep-alive
	// connections at once, racing with their clients' next requests.
	go func() {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		<-s.ctx.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.a.cfg.drainTimeout)
		defer cancel()
		err := srv.Shutdown(ctx)
		<-served
		s.done <- err
	}()
}

// wait waits for every server after cancel.
func (s *servers) wait() error {
	var errs []error
	for range s.n {
		errs = append(errs, <-s.done)
	}
	s.n = 0
	return errors.Join(errs...)
}
