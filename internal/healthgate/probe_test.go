package healthgate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fast keeps probe tests quick.
var fast = Options{Interval: 20 * time.Millisecond, AttemptTimeout: time.Second}

// waitFor runs Wait with a 10 s safety limit.
func waitFor(t *testing.T, spec string, opts Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return Wait(ctx, mustParse(spec), Target{PID: os.Getpid(), Options: opts})
}

// failingServer answers 500 to the first n requests, then 200. It counts
// requests and connections.
func failingServer(t *testing.T, n int32, tlsOn bool) (srv *httptest.Server, hits, conns *atomic.Int32) {
	hits, conns = new(atomic.Int32), new(atomic.Int32)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if hits.Add(1) <= n {
			http.Error(w, "warming up", http.StatusInternalServerError)
		}
	})
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(logWriter{t, "server: "}, "", 0)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	if tlsOn {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, hits, conns
}

func TestHTTPReadyAfter500s(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", tlsOn), func(t *testing.T) {
			srv, hits, conns := failingServer(t, 3, tlsOn)
			if err := waitFor(t, srv.URL+"/healthz", fast); err != nil {
				t.Fatal(err)
			}
			if hits.Load() != 4 || conns.Load() != 4 {
				t.Errorf("%d requests on %d connections, want 4 on 4 (no keep-alive)", hits.Load(), conns.Load())
			}
		})
	}
}

func TestHTTPNotReady(t *testing.T) {
	srv, _, _ := failingServer(t, 1<<30, false)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err := Wait(ctx, mustParse(srv.URL+"/healthz"), Target{Options: fast})
	want := fmt.Sprintf("GET %s/healthz: 500 Internal Server Error", srv.URL)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want ErrNotReady wrapping %q", err, want)
	}
	// A redirect is not followed, and is not a 2xx.
	err = waitFor(t, srv.URL+"/", Options{Timeout: 200 * time.Millisecond, Interval: 20 * time.Millisecond})
	if !strings.Contains(err.Error(), "404 Not Found") || !strings.Contains(err.Error(), "not ready after 200ms:") {
		t.Errorf("got %v, want 404 after timeout 200ms", err)
	}
}

func TestHTTPSVerifyOnRequest(t *testing.T) {
	srv, _, _ := failingServer(t, 0, true)
	err := waitFor(t, srv.URL+"/healthz", Options{Timeout: 2 * time.Second, TLSConfig: &tls.Config{ServerName: "example.com"}})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("got %v, want a certificate failure", err)
	}
	err = waitFor(t, srv.URL+"/healthz", Options{TLSConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	if err != nil {
		t.Fatalf("with the server's CA: %v", err)
	}
}

func TestHTTPCancelIsPrompt(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	cause := errors.New("generation exited")
	late, err := waitCancelled(t, mustParse(srv.URL), Target{}, cause)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, cause) {
		t.Fatalf("got %v", err)
	}
	if late > 100*time.Millisecond {
		t.Errorf("Wait returned %v after cancel, want < 100ms", late)
	}
}

// acceptor accepts and closes connections on 127.0.0.1:0, recording the
// peers' addresses.
func acceptor(t *testing.T) (net.Listener, chan *net.TCPAddr) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan *net.TCPAddr, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case peers <- c.RemoteAddr().(*net.TCPAddr):
			default:
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln, peers
}

func TestTCP(t *testing.T) {
	ln, peers := acceptor(t)
	if err := waitFor(t, "tcp://"+ln.Addr().String(), fast); err != nil {
		t.Fatal(err)
	}
	select {
	case <-peers:
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no connection")
	}
	addr := ln.Addr().String()
	ln.Close()
	err := waitFor(t, "tcp://"+addr, Options{Timeout: 200 * time.Millisecond, Interval: 20 * time.Millisecond})
	want := "dial tcp " + addr + ": connect: connection refused"
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want ErrNotReady wrapping %q", err, want)
	}
}

func TestLocalAddrIP(t *testing.T) {
	ln, peers := acceptor(t)
	opts := fast
	opts.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	var controlled atomic.Int32
	opts.Control = func(network, address string, _ syscall.RawConn) error {
		controlled.Add(1)
		return nil
	}
	if err := waitFor(t, "tcp://"+ln.Addr().String(), opts); err != nil {
		t.Fatal(err)
	}
	if p := <-peers; !p.IP.Equal(opts.LocalAddr.IP) {
		t.Errorf("server saw %v, want source %v", p, opts.LocalAddr.IP)
	}
	if controlled.Load() != 1 {
		t.Errorf("Control ran %d times, want 1", controlled.Load())
	}
}

func TestExec(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "count")
	// Fails twice, then succeeds: a real process per attempt.
	spec := `exec:sh -c n=$(cat ` + counter + ` 2>/dev/null || echo 0); echo $((n+1)) > ` + counter + `; [ "$n" -ge 2 ]`
	if err := waitFor(t, spec, fast); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(counter); strings.TrimSpace(string(b)) != "3" {
		t.Errorf("ran %q times, want 3", b)
	}
	err := waitFor(t, "exec:sh -c echo db not up >&2; exit 3", Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), `exit status 3: db not up`) {
		t.Fatalf("got %v, want exit status 3 with its output", err)
	}
	err = waitFor(t, "exec:/nonexistent/check", Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want not-exist", err)
	}
}

func TestExecExpandedPID(t *testing.T) {
	c := mustParse("exec:kill -0 {pid}").Expand(Vars{Gen: 1, PID: os.Getpid()})
	if err := Wait(t.Context(), c, Target{}); err != nil {
		t.Fatal(err)
	}
}

func TestDelay(t *testing.T) {
	start := time.Now()
	if err := waitFor(t, "150ms", Options{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("ready after %v, want >= 150ms", d)
	}
	cause := errors.New("generation exited")
	late, err := waitCancelled(t, mustParse("10s"), Target{}, cause)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, cause) || !strings.Contains(err.Error(), "of 10s") {
		t.Fatalf("got %v", err)
	}
	if late > 100*time.Millisecond {
		t.Errorf("Wait returned %v after cancel", late)
	}
}
