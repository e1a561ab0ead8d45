package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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

// runHook runs the documented hook with the test's socket, as certbot does
// (through a shell, hotswap found in PATH).
func runHook(t *testing.T, hook, sock string) (int, string, string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.Symlink(proctest.Build(t, hotswapPkg), filepath.Join(bin, "hotswap")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(hook, docSocket, sock))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	return ctlCmd(t, cmd)
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

// TestCertbotDeployHook is the certificate-rotation story: under TLS load
// with a new connection per request, replace the certificate and run the
// deploy hook of docs/certbot.md: exit 0 and the new serial on new
// connections. Then install a broken certificate and run it again: a
// non-zero exit with the reason, the old generation still serving. No
// request fails throughout.
func TestCertbotDeployHook(t *testing.T) {
	hook := deployHook(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hotswap.sock")
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	// The client trusts both certificates from the start: the renewed one
	// is made now, and installed where the server reads it at renewal.
	renewedCert, renewedKey := filepath.Join(dir, "renewed.pem"), filepath.Join(dir, "renewed-key.pem")
	pool := x509.NewCertPool()
	pool.AddCert(writeCert(t, certFile, keyFile, 1001))
	pool.AddCert(writeCert(t, renewedCert, renewedKey, 1002))
	a := startApp(t, []string{"--ready", "http://127.0.0.1:{port}/healthz", "--control", sock},
		"--tls-cert", certFile, "--tls-key", keyFile, "--health-listen", "127.0.0.1:{port}")
	conf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	run := load.Start(t.Context(), load.Config{Addr: a.addr, Concurrency: 16, Duration: time.Minute, TLS: conf})
	waitOK(t, run, 200)

	for src, dst := range map[string]string{renewedCert: certFile, renewedKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		replaceFile(t, dst, b)
	}
	code, out, errOut := runHook(t, hook, sock)
	done := time.Now()
	if code != 0 || !reloadOK.MatchString(out) {
		t.Fatalf("deploy hook after renewal: exit %d, %q %q; want 0", code, out, errOut)
	}
	// In shared mode the old generation accepts from the shared queue
	// until its stop signal lands, just after the hook returns.
	lag := newSerialAfter(t, a.addr, conf, "1002", time.Second)
	t.Logf("new connections get only serial 1002 from %v after the hook returned", lag)
	waitOK(t, run, 200)

	replaceFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nYnJva2Vu\n-----END CERTIFICATE-----\n"))
	code, _, errOut = runHook(t, hook, sock)
	want := regexp.MustCompile(`^hotswap: reload failed: generation 3 \(pid \d+\) exited with status 1; still serving generation 2 \(pid \d+\)\n$`)
	if code == 0 || !want.MatchString(errOut) {
		t.Errorf("deploy hook with a broken certificate: exit %d, %q; want non-zero and a line matching %s", code, errOut, want)
	}
	if got := serialOf(t, a.addr, conf); got != "1002" {
		t.Errorf("after the failed hook: serial %s, want 1002 from generation 2", got)
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
		if s.Serial == "1001" && s.Start.After(done.Add(500*time.Millisecond)) {
			lateOld++
		}
	}
	t.Logf("load: %v; serials seen: %v", res, serials)
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	if serials["1001"] == 0 || serials["1002"] == 0 || len(serials) != 2 {
		t.Errorf("serials seen %v, want 1001 then 1002 only", serials)
	}
	if lateOld != 0 {
		t.Errorf("%d requests started 1s after the hook returned still got serial 1001", lateOld)
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
