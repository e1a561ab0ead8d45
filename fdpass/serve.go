package fdpass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// newConnGrace is how long a connection may sit in [http.StateNew] before
// the drain stops waiting for its first request. http.Server.Shutdown
// treats such a connection as idle, and closes it, once it is more than 5
// whole seconds old (golang/go#22682); one more second makes sure Shutdown
// closes what the drain gave up on instead of reading a request it would
// then drop.
const newConnGrace = 6 * time.Second

// IdleGrace is how long ServeHTTP's drain leaves a keep-alive connection
// that sends nothing open, from the start of the drain or from its last
// response, whichever is later. A client may be writing its next request
// at any moment, and one that does not retry would lose a request on a
// connection closed under it; so the drain closes a connection only right
// after a response that said Connection: close, or once it has been silent
// this long. The trade-off: a client that pauses longer than this between
// two requests meets a closed connection (as it would at any server's idle
// timeout), and a generation with such clients takes up to this long to
// exit.
const IdleGrace = time.Second

// ServeHTTP serves srv on ln until ctx is done, then drains srv and returns.
//
// http.Server.Shutdown alone closes, unanswered, a connection whose first
// request it reads after shutdown began (golang/go#65802), and closes idle
// keep-alive connections at once, racing with the next request a client
// may be sending on them. Under hotswap, where the old and the new
// generation accept from one shared queue until the old one is told to
// stop, that loses requests on every restart. So ServeHTTP drains in this
// order:
//
//  1. close ln, so nothing more is accepted (the queue stays with the
//     supervisor and the next generation);
//  2. answer every request from now on with Connection: close, and close
//     its connection after the response;
//  3. wait until no connection is new (its first request not read yet,
//     for up to 6 seconds), active, or idle for less than [IdleGrace]:
//     each is read and answered as usual, because shutdown has not begun;
//  4. call srv.Shutdown, which now finds only connections silent for the
//     grace (it closes them) and sends HTTP/2 clients GOAWAY.
//
// The drain is bounded by drainTimeout: then srv is closed and the error
// wraps [context.DeadlineExceeded]. Hijacked connections are not waited
// for. ServeHTTP sets srv.ConnState to its own hook, which calls the one
// already set, and wraps srv.Handler. If srv.TLSConfig holds a certificate
// (Certificates, GetCertificate or GetConfigForClient), srv serves TLS. A
// srv may be served by ServeHTTP only once. It returns nil after a
// complete drain that ctx started.
func ServeHTTP(ctx context.Context, srv *http.Server, ln net.Listener, drainTimeout time.Duration) error {
	t := &tracker{conns: map[net.Conn]connState{}, changed: make(chan struct{}, 1)}
	srv.ConnState = t.hook(srv.ConnState)
	srv.Handler = t.closing(srv.Handler)
	served := make(chan error, 1)
	go func() { served <- serve(srv, ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
		ln.Close()
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			serveErr = err
		}
	case serveErr = <-served:
		ln.Close()
		serveErr = fmt.Errorf("serve http on %s: %w", ln.Addr(), serveErr)
	}
	return errors.Join(serveErr, drain(context.WithoutCancel(ctx), srv, t, drainTimeout))
}

func serve(srv *http.Server, ln net.Listener) error {
	if c := srv.TLSConfig; c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil) {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// drain answers what srv has accepted, then shuts it down.
func drain(ctx context.Context, srv *http.Server, t *tracker, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t.startDrain()
	werr := t.wait(ctx)
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
		if werr == nil {
			werr = fmt.Errorf("shut down http server: %w", err)
		}
	}
	return werr
}

type connState struct {
	state http.ConnState
	since time.Time
}

// tracker follows every connection of one server through its states.
type tracker struct {
	changed  chan struct{} // capacity 1: a state changed since the last look
	draining atomic.Bool   // every response says Connection: close

	mu         sync.Mutex // guards the fields below
	conns      map[net.Conn]connState
	drainStart time.Time
}

// closing wraps h so that, once the drain began, every HTTP/1 response
// says Connection: close and its connection is closed after it.
func (t *tracker) closing(h http.Handler) http.Handler {
	if h == nil {
		h = http.DefaultServeMux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t.draining.Load() && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (t *tracker) startDrain() {
	t.mu.Lock()
	t.drainStart = time.Now()
	t.mu.Unlock()
	t.draining.Store(true)
}

// hook returns an http.Server.ConnState hook that records the state and
// then calls next, if any.
func (t *tracker) hook(next func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		t.set(c, s)
		if next != nil {
			next(c, s)
		}
	}
}

func (t *tracker) set(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	switch s {
	case http.StateHijacked, http.StateClosed:
		delete(t.conns, c)
	default:
		t.conns[c] = connState{s, time.Now()}
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// busy counts the connections that may still carry a request to answer,
// and says when the first new or idle one among them stops counting.
func (t *tracker) busy(now time.Time) (n int, recheck time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, cs := range t.conns {
		switch cs.state {
		case http.StateActive:
			n++
		case http.StateNew, http.StateIdle:
			end := cs.since.Add(newConnGrace)
			if cs.state == http.StateIdle {
				end = later(cs.since, t.drainStart).Add(IdleGrace)
			}
			if now.Before(end) {
				n++
				if recheck.IsZero() || end.Before(recheck) {
					recheck = end
				}
			}
		}
	}
	return n, recheck
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// wait returns once no connection is busy, or when ctx is done.
func (t *tracker) wait(ctx context.Context) error {
	for {
		n, recheck := t.busy(time.Now())
		if n == 0 {
			return nil
		}
		if err := t.sleep(ctx, recheck); err != nil {
			return fmt.Errorf("drain http server: %d connections unanswered: %w", n, err)
		}
	}
}

// sleep waits for a state change, for the time until (if not zero), or for
// ctx.
func (t *tracker) sleep(ctx context.Context, until time.Time) error {
	var timeout <-chan time.Time
	if !until.IsZero() {
		tm := time.NewTimer(time.Until(until))
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.changed:
	case <-timeout:
	}
	return nil
}
