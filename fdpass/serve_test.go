//go:build linux

package fdpass_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// dupListener returns a listener on a close-on-exec duplicate of ln's
// socket, made without Fd (pitfall 1), as a generation would receive it.
func dupListener(t *testing.T, ln net.Listener) net.Listener {
	t.Helper()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		t.Fatalf("dup listener: %v %v", err, derr)
	}
	f := os.NewFile(uintptr(nfd), "dup")
	defer f.Close()
	dup, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return dup
}

// generation serves ln until ctx is done and then stops the way the test
// wants; the returned channel yields the outcome.
type generation func(ctx context.Context, ln net.Listener) <-chan error

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

func withServeHTTP(ctx context.Context, ln net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() { done <- fdpass.ServeHTTP(ctx, &http.Server{Handler: okHandler}, ln, 5*time.Second) }()
	return done
}

func withShutdown(ctx context.Context, ln net.Listener) <-chan error {
	done := make(chan error, 1)
	srv := &http.Server{Handler: okHandler}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		done <- err
	}()
	return done
}

type loadResult struct{ ok, failed atomic.Int64 }

// load sends requests, each on a new TCP connection, from workers clients
// until stop is closed, max requests were sent, or 60 seconds passed.
func load(addr string, workers int, max int64, stop <-chan struct{}) *loadResult {
	var r loadResult
	var sent atomic.Int64
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for sent.Add(1) <= max && time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				if get(client, "http://"+addr+"/") {
					r.ok.Add(1)
				} else {
					r.failed.Add(1)
				}
			}
		})
	}
	<-stop
	wg.Wait()
	return &r
}

func get(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && string(b) == "ok"
}

// replace runs n replacements of one generation by the next under load on
// a shared socket, and returns the load's figures.
func replace(t *testing.T, gen generation, n int) (ok, failed int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the supervisor's copy: it holds the queue throughout

	stop := make(chan struct{})
	res := make(chan *loadResult, 1)
	go func() { res <- load(ln.Addr().String(), 16, 200_000, stop) }()

	ctx, cancel := context.WithCancel(t.Context())
	done := gen(ctx, dupListener(t, ln))
	defer func() { cancel() }()
	var olds []<-chan error
	for range n {
		time.Sleep(50 * time.Millisecond)
		nctx, ncancel := context.WithCancel(t.Context())
		ndone := gen(nctx, dupListener(t, ln))
		cancel() // stop the old generation only once the new one serves
		olds = append(olds, done)
		cancel, done = ncancel, ndone
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	r := <-res
	cancel()
	for i, d := range append(olds, done) {
		if err := <-d; err != nil {
			t.Errorf("generation %d: %v", i, err)
		}
	}
	return r.ok.Load(), r.failed.Load()
}

// TestDrainUnderLoad replaces a generation 30 times under load on one
// shared socket. ServeHTTP must lose nothing. Plain http.Server.Shutdown is
// the control, golang/go#65802: with this harness it lost 148 to 215 of
// about 10,000 to 27,000 requests in every run, so a run where it loses none
// means the harness no longer reaches the race.
func TestDrainUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const n = 30
	for _, tc := range []struct {
		name     string
		gen      generation
		wantLoss bool
	}{
		{"ServeHTTP", withServeHTTP, false},
		{"Shutdown", withShutdown, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, failed := replace(t, tc.gen, n)
			t.Logf("%s: %d replacements, %d requests answered, %d failed", tc.name, n, ok, failed)
			switch {
			case ok == 0:
				t.Fatal("no request answered")
			case tc.wantLoss && failed == 0:
				t.Error("got 0 failed requests, want some: the harness does not reach golang/go#65802")
			case !tc.wantLoss && failed != 0:
				t.Errorf("got %d failed requests over %d replacements, want 0", failed, n)
			}
		})
	}
}

// TestDrainKeepAlive: once the drain began, a keep-alive connection that
// was idle is not closed under its client: its next request is answered,
// with Connection: close, and then the connection closes. One that stays
// silent is closed after IdleGrace, and the drain completes.
func TestDrainKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fdpass.ServeHTTP(ctx, &http.Server{Handler: okHandler}, ln, 10*time.Second) }()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	request := func(c net.Conn, br *bufio.Reader) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	busy, busyR := dial()
	silent, silentR := dial()
	for _, pair := range []struct {
		c  net.Conn
		br *bufio.Reader
	}{{busy, busyR}, {silent, silentR}} {
		if resp := request(pair.c, pair.br); resp.Close {
			t.Fatal("answered with Connection: close before the drain")
		}
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // the drain has begun; both are idle
	if resp := request(busy, busyR); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("request during the drain: status %d, close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := busyR.ReadByte(); err != io.EOF {
		t.Errorf("after the Connection: close answer: %v, want EOF", err)
	}
	if _, err := silentR.ReadByte(); err != io.EOF {
		t.Errorf("silent connection: %v, want EOF after the grace", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ServeHTTP: %v", err)
	}
}
