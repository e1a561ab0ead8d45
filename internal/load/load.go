// Package load is the closed-loop HTTP load generator of hotswap's tests and
// benchmarks. Each worker sends one request at a time, by default on a new
// TCP connection, and records every failure by phase and kind. Every run is
// bounded in requests and time and stops by itself.
package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config describes a load.
type Config struct {
	Network     string        // "tcp" (default) or "unix"
	Addr        string        // host:port, or a socket path
	Path        string        // default "/"
	Concurrency int           // workers, default 16
	Duration    time.Duration // hard bound, default 30s
	MaxRequests int           // hard bound, default 2,000,000
	Timeout     time.Duration // per request, default 2s
	KeepAlive   bool          // reuse connections (HTTP/1.1) instead of one per request
	// NoRetry, with KeepAlive, sends every request once on the worker's
	// one connection, as a client that never retries: any error is a
	// failure, and only a response saying Connection: close (or an error)
	// makes the next request open a new connection. Go's http.Client
	// instead resends an idempotent request whose reused connection was
	// closed under it.
	NoRetry bool
	TLS     *tls.Config // HTTPS when set
	// Pace, when set, is the pause between two requests of one worker.
	Pace time.Duration
}

// Sample is one request's outcome.
type Sample struct {
	Start   time.Time
	Dur     time.Duration
	Version string // X-Version of the answer
	Serial  string // the serial number of the server certificate, for TLS
	Err     string // "" for success, else "phase/kind"
}

// Result is what a load saw.
type Result struct {
	OK, Failed int
	Errors     map[string]int // failures by phase/kind
	Versions   map[string]int // successes by X-Version
	Samples    []Sample       // every request, in completion order
	Start, End time.Time
}

func (r Result) String() string { return Summary(r.OK, r.Failed, r.End.Sub(r.Start), r.Errors) }

// Summary is the one-line account of a load: "N ok, M failed in D; kind n; ...".
func Summary(ok, failed int, d time.Duration, errs map[string]int) string {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d ok, %d failed in %s", ok, failed, d.Round(time.Millisecond))
	for _, k := range keys {
		fmt.Fprintf(&b, "; %s %d", k, errs[k])
	}
	return b.String()
}

// Run is a load in progress.
type Run struct {
	cfg    Config
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards the fields below
	res    Result
	budget int
	end    time.Time // the Duration bound
}

// Start begins a load that runs until Stop, ctx is done, or a bound is reached.
func Start(ctx context.Context, cfg Config) *Run {
	if cfg.Network == "" {
		cfg.Network = "tcp"
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 30 * time.Second
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 2_000_000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	r := &Run{cfg: cfg, cancel: cancel, budget: cfg.MaxRequests, end: time.Now().Add(cfg.Duration)}
	r.res = Result{Errors: map[string]int{}, Versions: map[string]int{}, Start: time.Now()}
	for range cfg.Concurrency {
		r.wg.Go(func() { r.worker(ctx) })
	}
	return r
}

// Stop ends the load and returns what it saw.
func (r *Run) Stop() Result {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.End = time.Now()
	return r.res
}

// Count returns the successes and failures so far.
func (r *Run) Count() (ok, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.res.OK, r.res.Failed
}

// Last returns the most recent successful sample, if any.
func (r *Run) Last() (Sample, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.res.Samples) - 1; i >= 0; i-- {
		if r.res.Samples[i].Err == "" {
			return r.res.Samples[i], true
		}
	}
	return Sample{}, false
}

func (r *Run) take() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.budget == 0 {
		return false
	}
	r.budget--
	return true
}

func (r *Run) record(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Samples = append(r.res.Samples, s)
	if s.Err == "" {
		r.res.OK++
		r.res.Versions[s.Version]++
		return
	}
	r.res.Failed++
	r.res.Errors[s.Err]++
}

func (r *Run) worker(ctx context.Context) {
	var client *http.Client
	var raw *rawConn
	switch {
	case r.cfg.KeepAlive && r.cfg.NoRetry:
		raw = &rawConn{}
		defer raw.close()
	case r.cfg.KeepAlive:
		client = r.keepAliveClient()
		defer client.CloseIdleConnections()
	}
	for ctx.Err() == nil && r.take() {
		start := time.Now()
		var s Sample
		switch {
		case raw != nil:
			s = r.onConn(ctx, raw)
		case client != nil:
			s = r.viaClient(ctx, client)
		default:
			s = r.once(ctx)
		}
		if s.Err != "" && (ctx.Err() != nil || !time.Now().Before(r.end)) {
			return // cut off by the end of the run, not a failure
		}
		s.Start, s.Dur = start, time.Since(start)
		r.record(s)
		if r.cfg.Pace > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(r.cfg.Pace):
			}
		}
	}
}

// once sends one HTTP/1.0 request on a new connection and reads the whole
// answer: the status must be 200 and the body as long as Content-Length.
func (r *Run) once(ctx context.Context) Sample {
	deadline := time.Now().Add(r.cfg.Timeout)
	c, serial, fail := r.dial(ctx, deadline)
	if c == nil {
		return fail
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+r.cfg.Path+" HTTP/1.0\r\nHost: hotswap\r\n\r\n"); err != nil {
		return Sample{Err: "write/" + kind(err)}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return Sample{Err: "read/" + kind(err)}
	}
	s := check(resp)
	s.Serial = serial
	return s
}

// dial opens a connection (TLS too, when configured) with deadline set;
// on failure it returns a nil conn and the failed sample.
func (r *Run) dial(ctx context.Context, deadline time.Time) (net.Conn, string, Sample) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, r.cfg.Network, r.cfg.Addr)
	if err != nil {
		return nil, "", Sample{Err: "dial/" + kind(err)}
	}
	c.SetDeadline(deadline)
	var serial string
	if r.cfg.TLS != nil {
		tc := tls.Client(c, r.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, "", Sample{Err: "tls/" + kind(err)}
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			serial = certs[0].SerialNumber.String()
		}
		c = tc
	}
	return c, serial, Sample{}
}

// rawConn is a NoRetry worker's keep-alive connection.
type rawConn struct {
	c      net.Conn
	br     *bufio.Reader
	serial string
}

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
	}
}

// onConn sends one HTTP/1.1 request on the worker's connection, opening
// one first if it has none, and never sends it again: an error fails the
// request and drops the connection.
func (r *Run) onConn(ctx context.Context, rc *rawConn) Sample {
	deadline := time.Now().Add(r.cfg.Timeout)
	if rc.c == nil {
		c, serial, fail := r.dial(ctx, deadline)
		if c == nil {
			return fail
		}
		rc.c, rc.br, rc.serial = c, bufio.NewReader(c), serial
	}
	rc.c.SetDeadline(deadline)
	if _, err := io.WriteString(rc.c, "GET "+r.cfg.Path+" HTTP/1.1\r\nHost: hotswap\r\n\r\n"); err != nil {
		rc.close()
		return Sample{Err: "write/" + kind(err)}
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.close()
		return Sample{Err: "read/" + kind(err)}
	}
	s := check(resp)
	s.Serial = rc.serial
	if resp.Close || s.Err != "" {
		rc.close()
	}
	return s
}

func (r *Run) viaClient(ctx context.Context, client *http.Client) Sample {
	scheme := "http"
	if r.cfg.TLS != nil {
		scheme = "https"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+r.cfg.Addr+r.cfg.Path, nil)
	resp, err := client.Do(req)
	if err != nil {
		return Sample{Err: "request/" + kind(err)}
	}
	s := check(resp)
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		s.Serial = resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	return s
}

func (r *Run) keepAliveClient() *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: r.cfg.Timeout}).DialContext,
		TLSClientConfig:     r.cfg.TLS,
		MaxIdleConnsPerHost: 1,
	}
	if r.cfg.Network == "unix" {
		addr := r.cfg.Addr
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
	}
	return &http.Client{Transport: tr, Timeout: r.cfg.Timeout}
}

// check reads the body and judges the response.
func check(resp *http.Response) Sample {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	s := Sample{Version: resp.Header.Get("X-Version")}
	switch {
	case err != nil:
		s.Err = "body/" + kind(err)
	case resp.StatusCode != http.StatusOK:
		s.Err = fmt.Sprintf("status/%d", resp.StatusCode)
	case len(body) == 0 || (resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength):
		s.Err = "body/truncated"
	}
	return s
}

// kind names an error the way the team's measurements do: ECONNRESET,
// ECONNREFUSED, EPIPE, EOF, timeout.
func kind(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.As(err, &errno):
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return errno.Error()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}
