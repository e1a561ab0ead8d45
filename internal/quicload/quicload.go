// Package quicload is the HTTP/3 load of hotswap's QUIC tests and
// benchmarks, with quic-go's own client: long-lived connections that each
// send a request every Interval, and workers that open a new connection for
// every request. Every request and every connection is recorded, with the
// generation that answered. Every run is bounded in time and stops by
// itself.
package quicload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Config describes a load on an HTTP/3 server whose answer to GET / holds
// "gen N".
type Config struct {
	Addr     string        // host:port (UDP)
	Long     int           // long-lived connections
	Interval time.Duration // between two requests of a long-lived connection; default 100ms
	RampUp   time.Duration // the long-lived connections start spread over it; default Interval
	New      int           // workers opening a new connection per request
	NewPace  time.Duration // pause between two requests of a new-connection worker; default 20ms
	Timeout  time.Duration // per request, handshake included; default 2s
	Duration time.Duration // hard bound; default 2m
}

// Sample is one request's outcome.
type Sample struct {
	Client int // long-lived connection number, or -1 for a new connection
	Start  time.Time
	Dur    time.Duration
	Gen    int    // generation that answered, 0 on failure
	Err    string // "" for success, else a kind: see Kind
}

// Result is what a load saw.
type Result struct {
	OK, Failed int
	Errors     map[string]int // failures by kind
	Samples    []Sample       // in completion order
	Start, End time.Time
}

func (r Result) String() string { return load.Summary(r.OK, r.Failed, r.End.Sub(r.Start), r.Errors) }

// Run is a load in progress.
type Run struct {
	cfg    Config
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    Result
}

// Start begins the load; [Run.Stop] ends it.
func Start(ctx context.Context, cfg Config) *Run {
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.RampUp <= 0 {
		cfg.RampUp = cfg.Interval
	}
	if cfg.NewPace <= 0 {
		cfg.NewPace = 20 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	r := &Run{cfg: cfg, cancel: cancel, res: Result{Errors: map[string]int{}, Start: time.Now()}}
	for i := range cfg.Long {
		r.wg.Go(func() { r.long(ctx, i) })
	}
	for range cfg.New {
		r.wg.Go(func() { r.fresh(ctx) })
	}
	return r
}

// Up returns how many long-lived connections have been answered at least
// once.
func (r *Run) Up() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	up := map[int]bool{}
	for _, s := range r.res.Samples {
		if s.Client >= 0 && s.Err == "" {
			up[s.Client] = true
		}
	}
	return len(up)
}

// Wait waits until the load has run for its Duration and returns the
// result.
func (r *Run) Wait() Result {
	r.wg.Wait()
	return r.Stop()
}

// Stop ends the load, waits for the requests in flight and returns the
// result.
func (r *Run) Stop() Result {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.End = time.Now()
	return r.res
}

func (r *Run) transport() *http3.Transport {
	return &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, // loopback test server with a self-signed certificate
		QUICConfig:      &quic.Config{HandshakeIdleTimeout: r.cfg.Timeout, MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 5 * time.Second},
	}
}

// long is one long-lived connection: one http3.Transport, which keeps one
// QUIC connection and, as every HTTP/3 client does, moves to a new one
// after the server's GOAWAY.
func (r *Run) long(ctx context.Context, i int) {
	tr := r.transport()
	defer tr.Close()
	// Spread the first requests (and handshakes) over the ramp-up.
	if !sleep(ctx, time.Duration(i)*r.cfg.RampUp/time.Duration(max(r.cfg.Long, 1))) {
		return
	}
	for {
		r.get(ctx, tr, i)
		if !sleep(ctx, r.cfg.Interval) {
			return
		}
	}
}

// fresh opens a new connection for every request.
func (r *Run) fresh(ctx context.Context) {
	for {
		tr := r.transport()
		r.get(ctx, tr, -1)
		tr.Close()
		if !sleep(ctx, r.cfg.NewPace) {
			return
		}
	}
}

func (r *Run) get(ctx context.Context, tr *http3.Transport, client int) {
	if ctx.Err() != nil {
		return
	}
	s := Sample{Client: client, Start: time.Now()}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "https://"+r.cfg.Addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if err == nil {
			s.Gen = genOf(string(body))
		}
	}
	s.Dur = time.Since(s.Start)
	if err != nil {
		s.Err = Kind(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Samples = append(r.res.Samples, s)
	if s.Err == "" {
		r.res.OK++
	} else {
		r.res.Failed++
		r.res.Errors[s.Err]++
	}
}

// genOf reads N from "... gen N ...".
func genOf(body string) int {
	f := strings.Fields(body)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "gen" {
			n, _ := strconv.Atoi(f[i+1])
			return n
		}
	}
	return 0
}

// Kind classifies a failed request: "handshake-timeout", "idle-timeout",
// "stateless-reset", "conn-closed/CODE" (the peer closed the connection),
// "stream-reset/CODE", "timeout" (no answer in Timeout) or "other".
func Kind(err error) string {
	var (
		hs  *quic.HandshakeTimeoutError
		idl *quic.IdleTimeoutError
		sr  *quic.StatelessResetError
		te  *quic.TransportError
		ae  *quic.ApplicationError
		se  *quic.StreamError
		he  *http3.Error
	)
	switch {
	case errors.As(err, &hs):
		return "handshake-timeout"
	case errors.As(err, &idl):
		return "idle-timeout"
	case errors.As(err, &sr):
		return "stateless-reset"
	case errors.As(err, &te):
		return "conn-closed/" + te.ErrorCode.String()
	case errors.As(err, &ae):
		return fmt.Sprintf("conn-closed/app-%#x", uint64(ae.ErrorCode))
	case errors.As(err, &he):
		return "stream-reset/" + he.ErrorCode.String()
	case errors.As(err, &se):
		return fmt.Sprintf("stream-reset/%#x", uint64(se.ErrorCode))
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "other: " + err.Error()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
