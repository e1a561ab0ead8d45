// Command quicapp is an HTTP/3 server for hotswap that says its version.
// It serves on the UDP listener "quic" that hotswap hands over (or binds
// --addr without hotswap) and issues the connection IDs of
// HOTSWAP_QUIC_CID through fdpass/quiccid, so its connections survive
// reloads: each keeps reaching the generation that accepted it until that
// generation closes it. On SIGTERM it sends HTTP/3 GOAWAY (to an eighth of
// its connections every 100 ms, so that their clients do not all reconnect
// at once), answers the requests in flight, closes its connections and
// exits.
//
//	hotswap --listen quic=udp://127.0.0.1:8443 --ready notify -- quicapp --version v1 --notify
//
// quicapp --probe URL is an HTTP/3 readiness check for hotswap's exec:
// gate: it sends from $HOTSWAP_PROBE_SOURCE, which hotswap steers to the
// generation being gated, and with --want-gen N fails unless generation N
// answered:
//
//	hotswap --listen quic=udp://127.0.0.1:8443 --ready 'exec:quicapp --probe https://127.0.0.1:8443/ --want-gen {gen}' -- quicapp --version v1
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/fdpass/quiccid"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	version := flag.String("version", "v1", "the `VERSION` every response names")
	addr := flag.String("addr", "127.0.0.1:8443", "UDP `ADDRESS` to bind when hotswap hands over no listener \"quic\"")
	notify := flag.Bool("notify", false, "send READY=1 to $NOTIFY_SOCKET once serving")
	noCID := flag.Bool("no-cid", false, "ignore HOTSWAP_QUIC_CID and issue random connection IDs, as a server unaware of hotswap does (for measurements)")
	reusePort := flag.Bool("reuseport", false, "bind --addr with SO_REUSEPORT itself: the naive restart without hotswap (for measurements)")
	grace := flag.Duration("grace", 5*time.Second, "on SIGTERM, wait at most this long for requests in flight")
	probeURL := flag.String("probe", "", "probe mode: GET `URL` over HTTP/3 from $HOTSWAP_PROBE_SOURCE (if set), print the answer, exit 0 on 200")
	wantGen := flag.String("want-gen", "", "probe mode: also fail unless generation `N` answered")
	flag.Parse()
	log.SetFlags(0)
	if *probeURL != "" {
		log.SetPrefix("quicapp probe: ")
		if err := probe(*probeURL, *wantGen); err != nil {
			log.Fatal(err)
		}
		return
	}
	log.SetPrefix("quicapp " + *version + ": ")
	if err := run(*version, *addr, *notify, *noCID, *reusePort, *grace); err != nil {
		log.Fatal(err)
	}
}

func run(version, addr string, notify, noCID, reusePort bool, grace time.Duration) error {
	tr, err := transport(addr, noCID, reusePort)
	if err != nil {
		return err
	}
	defer tr.Close()
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	gen := os.Getenv(fdpass.Generation)
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "quicapp %s gen %s pid %s\n", version, gen, pid)
	})
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	quicConf := &quic.Config{MaxIdleTimeout: 30 * time.Second, MaxIncomingStreams: 1000}
	ln, err := tr.ListenEarly(tlsConf, quicConf)
	if err != nil {
		return fmt.Errorf("listen quic: %w", err)
	}
	// The connections are spread over several http3.Servers, shut down one
	// after the other: each GOAWAY moves only a share of the clients to
	// the next generation at once, so their new handshakes do not all
	// arrive together (quic-go refuses handshakes beyond an accept queue of
	// 32 that the new generation has not taken yet).
	srvs := make([]*http3.Server, shutdownWaves)
	for i := range srvs {
		srvs[i] = &http3.Server{Handler: mux, TLSConfig: tlsConf, QUICConfig: quicConf}
	}
	var open atomic.Int32 // servers not shut down yet
	open.Store(int32(len(srvs)))
	served := make(chan error, 1)
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept(context.Background())
			if err != nil {
				served <- err
				return
			}
			// Late connections go to the servers still open, the last
			// one at the end; one that has just been shut down hands
			// its connection to the last.
			o := int(open.Load())
			k := len(srvs) - o + n%o
			go func() {
				err := srvs[k].ServeQUICConn(c)
				if errors.Is(err, http.ErrServerClosed) && k != len(srvs)-1 {
					err = srvs[len(srvs)-1].ServeQUICConn(c)
				}
				if errors.Is(err, http.ErrServerClosed) {
					c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
				}
			}()
		}
	}()
	log.Printf("serving HTTP/3 on %s (gen %s, pid %s)", tr.Conn.LocalAddr(), gen, pid)
	if notify {
		if err := fdpass.Notify("READY=1"); err != nil {
			log.Printf("notify: %v", err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-sig:
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(srvs))
	for i, srv := range srvs {
		if i > 0 {
			time.Sleep(waveGap)
		}
		if i < len(srvs)-1 {
			open.Add(-1)
		}
		wg.Go(func() { errs[i] = srv.Shutdown(ctx) }) // GOAWAY, then close once the requests are answered
	}
	wg.Wait()
	ln.Close()
	err = errors.Join(errs...)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Printf("stopped: connections still open after %v were closed", grace)
		return nil
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Printf("stopped: every connection closed after %v", time.Since(t0).Round(time.Millisecond))
	return nil
}

// shutdownWaves and waveGap spread the GOAWAYs of a stop over 0.7 s.
const (
	shutdownWaves = 8
	waveGap       = 100 * time.Millisecond
)

// transport is the quic.Transport on the listener hotswap handed over,
// with the connection IDs of HOTSWAP_QUIC_CID unless noCID.
func transport(addr string, noCID, reusePort bool) (*quic.Transport, error) {
	if reusePort {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			})
			return errors.Join(err, serr)
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return nil, err
		}
		return &quic.Transport{Conn: pc.(*net.UDPConn)}, nil
	}
	tr, err := quiccid.Transport("quic", "udp", addr)
	if err != nil {
		return nil, err
	}
	if noCID {
		tr.ConnectionIDGenerator = nil
	}
	return tr, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "quicapp"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// probe is a readiness check for hotswap's exec: gate: one HTTP/3 GET from
// the probe source hotswap steers to the generation being gated.
func probe(url, wantGen string) error {
	local := &net.UDPAddr{}
	if src := os.Getenv(fdpass.ProbeSource); src != "" {
		ap, err := netip.ParseAddrPort(src)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", fdpass.ProbeSource, src, err)
		}
		local = net.UDPAddrFromAddrPort(ap)
	}
	conn, err := net.ListenUDP("udp", local)
	if err != nil {
		return err
	}
	qt := &quic.Transport{Conn: conn}
	defer qt.Close()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the example's self-signed certificate
		Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return qt.DialEarly(ctx, ua, tc, qc)
		},
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if f := strings.Fields(string(body)); wantGen != "" && (len(f) < 4 || f[3] != wantGen) {
		return fmt.Errorf("GET %s: answered %q, want generation %s", url, strings.TrimSpace(string(body)), wantGen)
	}
	return nil
}
