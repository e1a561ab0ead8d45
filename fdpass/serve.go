package fdpass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// newConnGrace is how long a connection may sit in [http.StateNew] before
// the drain stops waiting for its first request. http.Server.Shutdown
// treats such a connection as idle, and closes it, once it is more than 5
// whole seconds old (golang/go#22682); one more second makes sure Shutdown
// closes what the drain gave up on instead of reading a request it would
// then drop.
const newConnGrace = 6 * time.Second

// ServeHTTP serves srv on ln until ctx is done, then drains srv and returns.
//
// http.Server.Shutdown alone closes, unanswered, a connection whose first
// request it reads after shutdown began (golang/go#65802). Under hotswap,
// where the old and the new generation accept from one shared queue until
// the old one is told to stop, that loses requests on every restart. So
// ServeHTTP drains in this order:
//
//  1. close ln, so nothing more is accepted (the queue stays with the
//     supervisor and the next generation);
//  2. disable keep-alives, so every connection closes after its current
//     response;
//  3. wait until no connection is new (its first request not read yet) or
//     active: each is read and answered as usual, because shutdown has not
//     begun;
//  4. call srv.Shutdown, which now finds only idle connections.
//
// The drain is bounded by drainTimeout: then srv is closed and the error
// wraps [context.DeadlineExceeded]. A connection that sends nothing for
// 6 seconds is closed without an answer, as Shutdown does. Hijacked
// connections are not waited for. ServeHTTP sets srv.ConnState to its own
// hook, which calls the one already set. If srv.TLSConfig holds a
// certificate (Certificates, GetCertificate or GetConfigForClient), srv
// serves TLS. A srv may be served by ServeHTTP only once. It returns nil
// after a complete drain that ctx started.
func ServeHTTP(ctx context.Context, srv *http.Server, ln net.Listener, drainTimeout time.Duration) error {
	t := &tracker{conns: map[net.Conn]connState{}, changed: make(chan struct{}, 1)}
	srv.ConnState = t.hook(srv.ConnState)
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
	srv.SetKeepAlivesEnabled(false)
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
	changed chan struct{} // capacity 1: a state changed since the last look

	mu    sync.Mutex // guards the fields below
	conns map[net.Conn]connState
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
// and says when the oldest new one among them stops counting.
func (t *tracker) busy(now time.Time) (n int, recheck time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, cs := range t.conns {
		switch cs.state {
		case http.StateActive:
			n++
		case http.StateNew:
			end := cs.since.Add(newConnGrace)
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
