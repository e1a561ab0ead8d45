package main

import (
	"bufio"
	"errors"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const goappPkg = "github.com/hotswap-dev/hotswap/examples/goapp"

func TestMain(m *testing.M) { proctest.HelperMain(m, nil) }

var servingRE = regexp.MustCompile(`serving https? on (\S+) \((\w+)\)(?:, /healthz on (\S+))?`)

type proc struct {
	cmd        *exec.Cmd
	addr       string
	healthAddr string
	lines      chan string // stderr lines after the start line
}

// start runs goapp standalone on 127.0.0.1:0 and waits for its start line.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(proctest.Build(t, goappPkg), append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "HOTSWAP_GENERATION=7")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 16)}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		t.Logf("child: %s", sc.Text())
		if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
			p.addr, p.healthAddr = m[1], m[3]
			break
		}
	}
	if p.addr == "" {
		t.Fatal("goapp printed no start line")
	}
	go func() {
		defer close(p.lines)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// wait waits up to d for goapp to exit and returns its exit code, or -1
// when killed by a signal.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for l := range p.lines {
			t.Logf("child: %s", l)
		}
		done <- p.cmd.Wait()
	}()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.cmd.Process.Kill()
		t.Fatalf("goapp still running after %v", d)
		return 0
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestVersionAndStatus(t *testing.T) {
	p := start(t, "--version", "v42", "--status", "503", "--health-status", "500", "--health-listen", "127.0.0.1:0")
	code, h, body := get(t, "http://"+p.addr+"/anything")
	want := regexp.MustCompile(`^version=v42 gen=7 pid=` + itoa(p.cmd.Process.Pid) + `\n$`)
	if code != 503 || h.Get("X-Version") != "v42" || !want.MatchString(body) {
		t.Errorf("got %d %q %q, want 503, X-Version v42 and a body matching %v", code, h.Get("X-Version"), body, want)
	}
	for _, addr := range []string{p.addr, p.healthAddr} {
		if code, _, body := get(t, "http://"+addr+"/healthz"); code != 500 || body != "ok\n" {
			t.Errorf("got /healthz on %s %d %q, want 500 \"ok\\n\"", addr, code, body)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("got exit %d after SIGTERM, want 0", code)
	}
}

func TestExitAtStart(t *testing.T) {
	cmd := exec.Command(proctest.Build(t, goappPkg), "--exit-at-start", "7")
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("got exit %d (%v), want 7", code, err)
	}
}

// TestOnTerm checks that a drain answers a request in progress and that
// --on-term exit does not.
func TestOnTerm(t *testing.T) {
	tests := []struct {
		onTerm   string
		wantCode int
		wantOK   bool
	}{
		{"drain", 0, true},
		{"exit", 128 + int(syscall.SIGTERM), false},
	}
	for _, tc := range tests {
		t.Run(tc.onTerm, func(t *testing.T) {
			p := start(t, "--on-term", tc.onTerm)
			// A request whose headers are not complete yet: the connection
			// is accepted and new when SIGTERM arrives.
			c, err := dialRaw(p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: goapp\r\n")
			waitAccepted(t, p.addr, 10*time.Second)
			p.cmd.Process.Signal(syscall.SIGTERM)
			// The rest of the request goes only once SIGTERM has taken
			// effect: the listener is closed (drained, or gone with the
			// process). Sent earlier, a goapp slow to see the signal
			// answers it before it stops, in either mode.
			waitRefused(t, p.addr, 10*time.Second)
			io.WriteString(c, "\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, _ := io.ReadAll(c)
			gotOK := strings.HasPrefix(string(resp), "HTTP/1.1 200") && strings.Contains(string(resp), "version=v1")
			if gotOK != tc.wantOK {
				t.Errorf("got response %q, want answered %v", resp, tc.wantOK)
			}
			if code := p.wait(t, 15*time.Second); code != tc.wantCode {
				t.Errorf("got exit %d, want %d", code, tc.wantCode)
			}
		})
	}
}

func TestBadTLSPair(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cert, []byte("not a certificate"), 0o600)
	os.WriteFile(key, []byte("not a key"), 0o600)
	cmd := exec.Command(proctest.Build(t, goappPkg), "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code == 0 || strings.Count(string(out), "\n") != 1 {
		t.Errorf("got exit %d and %q, want non-zero and one line", code, out)
	}
}
