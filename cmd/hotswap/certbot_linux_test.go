package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// docSocket is the control socket path docs/certbot.md uses.
const docSocket = "/run/hotswap/myserver.sock"

// deployHook returns the --deploy-hook command of docs/certbot.md.
func deployHook(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/certbot.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^certbot renew --deploy-hook "([^"]+)"$`).FindSubmatch(b)
	if m == nil || !strings.Contains(string(m[1]), docSocket) {
		t.Fatalf("docs/certbot.md has no line certbot renew --deploy-hook \"... %s ...\"", docSocket)
	}
	return string(m[1])
}

// writeCert writes a self-signed certificate for 127.0.0.1 with serial
// and its key, replacing the files by rename as certbot does, and returns
// the certificate.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "hotswap test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	replaceFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// serialOf opens a new TLS connection and returns the served serial.
func serialOf(t *testing.T, addr string, conf *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// newSerialAfter waits up to d until 20 new connections in a row get
// serial want, and returns how long that took.
func newSerialAfter(t *testing.T, addr string, conf *tls.Config, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for row := 0; row < 20; {
		got := serialOf(t, addr, conf)
		switch {
		case got == want:
			row++
		case time.Since(start) > d:
			t.Fatalf("%v after the hook: new connection got serial %s, want %s", time.Since(start), got, want)
		default:
			row = 0
		}
	}
	return time.Since(start)
}

// acme is Debian's pebble, the ACME test server of Let's Encrypt, on
// loopback, and the certbot that talks to it.
type acme struct {
	t          *testing.T
	certbot    string
	dir        string // certbot's --config-dir, --work-dir and --logs-dir are under it
	url        string // the ACME directory
	mgmt       string // pebble's management interface
	httpPort   int    // where pebble validates http-01 challenges
	trust      string // pebble's own TLS certificate, for certbot
	env        []string
	httpClient *http.Client
}

// startACME starts pebble with its own TLS certificate, on ports free a
// moment ago (pebble cannot bind port 0 and say which it got); pebble validates
// http-01 challenges for localhost on httpPort (its "httpPort" setting),
// where certbot --standalone answers them.
func startACME(t *testing.T) *acme {
	t.Helper()
	pebble := proctest.Command(t, "pebble", "pebble")
	certbot := proctest.Command(t, "certbot", "certbot")
	dir := t.TempDir()
	a := &acme{t: t, certbot: certbot, dir: dir, httpPort: icFreePort(t), trust: filepath.Join(dir, "pebble-cert.pem")}
	key := filepath.Join(dir, "pebble-key.pem")
	pool := x509.NewCertPool()
	pool.AddCert(writeCert(t, a.trust, key, 1))
	a.httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	listen, mgmt := icFreePort(t), icFreePort(t)
	a.url = fmt.Sprintf("https://127.0.0.1:%d/dir", listen)
	a.mgmt = fmt.Sprintf("https://127.0.0.1:%d", mgmt)
	conf, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":                    a.trust,
		"privateKey":                     key,
		"httpPort":                       a.httpPort,
		"tlsPort":                        icFreePort(t),
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "pebble-config.json")
	writeFile(t, confFile, string(conf))
	cmd := exec.Command(pebble, "-config", confFile)
	// No artificial sleeps before validation, and no valid nonce refused
	// (certbot retries a refused one, but a test need not wait for it),
	// and no authorization reused: every order, renewals included, has
	// its http-01 challenge validated for real.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	proctest.StartCmd(t, cmd)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := a.httpClient.Get(a.url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble: no ACME directory at %s after 30s: %v", a.url, err)
		}
	}
	a.env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+a.trust)
	return a
}

// run runs certbot with args and the directories under a.dir, with hotswap
// in PATH for the hooks, and returns its exit status and output.
func (a *acme) run(args ...string) (int, string) {
	a.t.Helper()
	bin := filepath.Join(a.dir, "bin")
	if _, err := os.Stat(bin); err != nil {
		if err := os.Mkdir(bin, 0o755); err != nil {
			a.t.Fatal(err)
		}
		if err := os.Symlink(proctest.Build(a.t, hotswapPkg), filepath.Join(bin, "hotswap")); err != nil {
			a.t.Fatal(err)
		}
	}
	args = append(args, "--config-dir", filepath.Join(a.dir, "etc"), "--work-dir", filepath.Join(a.dir, "work"),
		"--logs-dir", filepath.Join(a.dir, "logs"), "--non-interactive")
	ctx, cancel := context.WithTimeout(a.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.certbot, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(a.env, "PATH="+bin+":"+os.Getenv("PATH"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			a.t.Fatalf("certbot %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	a.t.Logf("certbot %s: exit %d after %v\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), out)
	return code, string(out)
}

// live returns the path of a file in certbot's live/localhost/.
func (a *acme) live(name string) string {
	return filepath.Join(a.dir, "etc", "live", "localhost", name)
}

// serial returns the serial of the certificate at live/localhost/cert.pem.
func (a *acme) serial() string {
	a.t.Helper()
	b, err := os.ReadFile(a.live("cert.pem"))
	if err != nil {
		a.t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		a.t.Fatalf("%s: no PEM block", a.live("cert.pem"))
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		a.t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// roots returns pebble's root certificates, which it makes at each start.
func (a *acme) roots() *x509.CertPool {
	a.t.Helper()
	resp, err := a.httpClient.Get(a.mgmt + "/roots/0")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		a.t.Fatalf("pebble /roots/0: no certificate in %q", b)
	}
	return pool
}

// TestCertbotPebble is certificate rotation for real: Debian's certbot
// gets a certificate for localhost from pebble (an http-01 challenge that
// pebble validates against certbot --standalone), the server under hotswap
// serves it from certbot's live/ paths, and under TLS load (a new
// connection per request) `certbot renew --force-renewal --deploy-hook`
// with the hook line of docs/certbot.md renews it: the hook exits 0 and new
// connections get the renewed serial. Then a renewal whose key is broken by
// an earlier deploy hook (renewal-hooks/deploy/, which certbot runs before
// --deploy-hook): the hook exits 1, certbot reports it, the old
// certificate goes on being served. No request fails throughout.
func TestCertbotPebble(t *testing.T) {
	hook := deployHook(t)
	acme := startACME(t)
	port := strconv.Itoa(acme.httpPort)
	if code, _ := acme.run("certonly", "--standalone", "--server", acme.url, "--agree-tos", "--register-unsafely-without-email",
		"--http-01-port", port, "--http-01-address", "127.0.0.1", "-d", "localhost"); code != 0 {
		t.Fatalf("certbot certonly: exit %d", code)
	}
	for i, mode := range []string{"reuseport", "shared"} {
		t.Run(mode, func(t *testing.T) {
			acme.t = t
			if i > 0 {
				// The last renewal left a broken key: renew once more,
				// without hooks, for a lineage a server can start from.
				if err := os.Remove(acme.breakKeyHook()); err != nil {
					t.Fatal(err)
				}
				if code, _ := acme.run("renew", "--force-renewal", "--no-random-sleep-on-renew"); code != 0 {
					t.Fatalf("certbot renew: exit %d", code)
				}
			}
			renewUnderLoad(t, acme, mode, hook)
		})
	}
}

// breakKeyHook is the path of the deploy hook that breaks the new key.
func (a *acme) breakKeyHook() string {
	return filepath.Join(a.dir, "etc", "renewal-hooks", "deploy", "00-break-key")
}

// renewUnderLoad is TestCertbotPebble's story in one socket mode, from a
// lineage certbot has just issued.
func renewUnderLoad(t *testing.T, acme *acme, mode, hook string) {
	issued := acme.serial()
	sock := filepath.Join(t.TempDir(), "hotswap.sock")
	hook = strings.ReplaceAll(hook, docSocket, sock)
	a := startApp(t, []string{"--mode", mode, "--ready", "http://127.0.0.1:{port}/healthz", "--control", sock},
		"--tls-cert", acme.live("fullchain.pem"), "--tls-key", acme.live("privkey.pem"), "--health-listen", "127.0.0.1:{port}")
	conf := &tls.Config{RootCAs: acme.roots(), ServerName: "localhost"}
	if got := serialOf(t, a.addr, conf); got != issued {
		t.Fatalf("served serial %s, want %s from certbot's live/localhost/cert.pem", got, issued)
	}
	// Paced: certbot and pebble need CPU too on a small machine.
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 4, Pace: 2 * time.Millisecond, Duration: 5 * time.Minute, TLS: conf})
	waitOK(t, run, 200)

	code, out := acme.run("renew", "--force-renewal", "--no-random-sleep-on-renew", "--deploy-hook", hook)
	renewed := acme.serial()
	if code != 0 || !strings.Contains(out, "hotswap: reload succeeded: serving generation 2") || strings.Contains(out, "reported error code") || renewed == issued {
		t.Fatalf("certbot renew: exit %d, serial %s (was %s); want 0, the hook's reload succeeded and a new serial", code, renewed, issued)
	}
	done := time.Now()
	lag := newSerialAfter(t, a.addr, conf, renewed, time.Second)
	t.Logf("%s mode: new connections get only the renewed serial %s from %v after certbot returned", mode, renewed, lag)
	waitOK(t, run, 200)

	if err := os.MkdirAll(filepath.Dir(acme.breakKeyHook()), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, acme.breakKeyHook(), "#!/bin/sh\nprintf 'not a key\\n' > \"$RENEWED_LINEAGE/privkey.pem\"\n")
	if err := os.Chmod(acme.breakKeyHook(), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out = acme.run("renew", "--force-renewal", "--no-random-sleep-on-renew", "--deploy-hook", hook)
	broken := acme.serial()
	failed := regexp.MustCompile(`(?s)Hook 'deploy-hook' reported error code 1\s+Hook 'deploy-hook' ran with error output:\s+hotswap: reload failed: generation 3 \(pid \d+\) exited with status 1; still serving generation 2 `)
	if !failed.MatchString(out) || broken == renewed {
		t.Errorf("certbot renew with a broken key: exit %d; want its output to match %s, and a new serial", code, failed)
	}
	// certbot 2.1 reports the failed hook and still exits 0, saying all
	// renewals succeeded: the renewal did; the reload did not.
	t.Logf("certbot renew with a broken key exited %d", code)
	if got := serialOf(t, a.addr, conf); got != renewed {
		t.Errorf("after the failed hook: serial %s, want %s from generation 2", got, renewed)
	}
	waitOK(t, run, 200)
	res := run.Stop()

	serials := map[string]int{}
	var lateOld int
	for _, s := range res.Samples {
		if s.Err != "" {
			continue
		}
		serials[s.Serial]++
		// The old generation has its stop signal by the time the hook
		// returns; allow it a second to stop accepting.
		if s.Serial == issued && s.Start.After(done.Add(500*time.Millisecond)) {
			lateOld++
		}
	}
	t.Logf("%s mode: load: %d requests, %d failed; serials: before %s, renewed %s, broken renewal %s (never served); served: %v",
		mode, res.OK+res.Failed, res.Failed, issued, renewed, broken, serials)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	if serials[issued] == 0 || serials[renewed] == 0 || len(serials) != 2 {
		t.Errorf("serials served %v, want %s then %s only", serials, issued, renewed)
	}
	if lateOld != 0 {
		t.Errorf("%d requests started 1s after certbot returned still got serial %s", lateOld, issued)
	}
}

// waitOK waits until the load has n more successes.
func waitOK(t *testing.T, run *load.Run, n int) {
	t.Helper()
	start, _ := run.Count()
	for range 1000 {
		if ok, _ := run.Count(); ok >= start+n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	ok, failed := run.Count()
	t.Fatalf("the load made no progress: %d ok, %d failed: %v", ok, failed, run.Stop().Errors)
}
