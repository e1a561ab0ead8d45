package healthgate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Defaults for [Options].
const (
	DefaultInterval       = 100 * time.Millisecond // pause between probe attempts
	DefaultAttemptTimeout = 2 * time.Second        // limit of one probe attempt
)

// ErrNotReady is wrapped by the error [Wait] returns when the generation did
// not become ready in time.
var ErrNotReady = errors.New("healthgate: not ready")

// Options tune how [Wait] probes. The zero value uses the defaults.
type Options struct {
	// Interval is the pause between probe attempts (DefaultInterval).
	Interval time.Duration
	// AttemptTimeout limits one probe attempt (DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// Timeout, if positive, limits the whole wait. Unlike a ctx deadline it
	// can be extended by the generation with EXTEND_TIMEOUT_USEC=.
	Timeout time.Duration

	// LocalAddr, if set, is the source address of http and tcp probe
	// connections. With a fixed port, a reuseport group's steering program
	// can send the probe to the new generation's socket.
	LocalAddr *net.TCPAddr
	// Control, if set, runs on every http and tcp probe socket before
	// connect, as net.Dialer.Control.
	Control func(network, address string, c syscall.RawConn) error
	// Env is added to the environment of exec probes.
	Env []string
	// Verify, if set, runs on every http and tcp probe connection once it
	// is established; an error fails the attempt. [HealthSocket.Verify]
	// checks that a {port} probe reached the generation's own socket.
	Verify func(net.Conn) error
	// TLSConfig is used by https probes. When nil, the probe completes a
	// TLS handshake without verifying the certificate; see the package doc.
	TLSConfig *tls.Config
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	return o
}

// Target is the generation [Wait] waits for.
type Target struct {
	PID     int           // the generation's pid
	Notify  *NotifySocket // the generation's notify socket; needed by notify checks
	Options Options
	// OnMessage, if set, is installed with NotifySocket.OnMessage before
	// Wait attaches the socket, and stays installed after Wait returns.
	OnMessage func(Message)
}

// Wait blocks until the generation described by t is ready per c, or ctx
// is done, or t.Options.Timeout has passed. When not ready it returns an
// error wrapping [ErrNotReady], context.Cause(ctx) when that says more than
// "canceled", and the last probe failure. It returns promptly when ctx is
// cancelled. c must be expanded ([Check.Expand]) first.
func Wait(ctx context.Context, c Check, t Target) error {
	if p := c.unexpandedIn(); p != "" {
		return fmt.Errorf("healthgate: wait for %q: placeholder %s not expanded", c, p)
	}
	t.Options = t.Options.withDefaults()
	start := time.Now()
	var g gate
	switch c.kind {
	case KindNotify:
		return waitNotify(ctx, t, start)
	case KindDelay:
		return waitDelay(ctx, c.delay, t.Options, start)
	case KindHTTP:
		g = newHTTPProbe(c.target, t.Options)
	case KindTCP:
		g = tcpProbe{addr: c.target, opts: t.Options}
	case KindExec:
		g = execProbe{args: c.args, env: t.Options.Env}
	default:
		return fmt.Errorf("healthgate: wait for %q: invalid check", c)
	}
	return poll(ctx, g, t.Options, start)
}

// gate is one way of asking whether the generation is ready.
type gate interface {
	attempt(ctx context.Context) error
}

// poll runs g until it succeeds, pausing opts.Interval between attempts.
func poll(ctx context.Context, g gate, opts Options, start time.Time) error {
	ctx, cancel := withTimeout(ctx, opts.Timeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, opts.AttemptTimeout)
		err := g.attempt(actx)
		acancel()
		if err == nil {
			return nil
		}
		// An attempt cut short by the end of the wait says less than the
		// last one that finished ("500", "connection refused").
		if last == nil || ctx.Err() == nil {
			last = err
		}
		t := time.NewTimer(opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return notReady(ctx, start, last)
		case <-t.C:
		}
	}
}

// withTimeout is context.WithTimeout that treats d <= 0 as no timeout.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, timeoutError(d))
}

// timeoutError is the cause of a wait that ran out of Options.Timeout
// (as extended by EXTEND_TIMEOUT_USEC).
type timeoutError time.Duration

func (e timeoutError) Error() string { return fmt.Sprintf("timeout %s", time.Duration(e)) }

// waitDelay is ready once d has passed: the supervisor cancels ctx if the
// generation exits before.
func waitDelay(ctx context.Context, d time.Duration, opts Options, start time.Time) error {
	ctx, cancel := withTimeout(ctx, opts.Timeout)
	defer cancel()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return notReady(ctx, start, fmt.Errorf("up %s of %s", time.Since(start).Round(time.Millisecond), d))
	}
}

// notReadyError is the error of a gate that did not open.
type notReadyError struct {
	after time.Duration
	cause error // why waiting stopped; nil for a plain cancel
	last  error // the last probe failure
}

func notReady(ctx context.Context, start time.Time, last error) error {
	e := &notReadyError{after: time.Since(start).Round(time.Millisecond), last: last}
	if cause := context.Cause(ctx); cause != nil && cause != context.Canceled {
		e.cause = cause
	}
	return e
}

func (e *notReadyError) Error() string {
	s := fmt.Sprintf("not ready after %s", e.after)
	var te timeoutError
	switch {
	case errors.As(e.cause, &te):
		// The timeout says it better than the clock, which ran a little past it.
		s = fmt.Sprintf("not ready after %s", time.Duration(te))
	case e.cause != nil:
		s += " (" + e.cause.Error() + ")"
	}
	if e.last != nil {
		s += ": " + e.last.Error()
	}
	return s
}

func (e *notReadyError) Unwrap() []error {
	errs := []error{ErrNotReady}
	for _, err := range []error{e.cause, e.last} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
