package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// A target is one way of restarting a server on a fixed address: the
// benchmark starts it at version v1 and restarts it to v2, v3, ...
type target interface {
	// start runs version v1 and returns the address it serves.
	start() (string, error)
	// restart replaces the running version with "v<n>" and returns when the
	// method considers the restart done; t0 is when it was asked for (the
	// signal, or the new process's start for methods without one).
	restart(n int) (t0 time.Time, err error)
	close()
}

func version(n int) string { return fmt.Sprintf("v%d", n) }

var servingRE = regexp.MustCompile(`serving http on (\S+)`)

// startGoapp runs examples/goapp directly, bound to addr by itself.
func startGoapp(b *bins, v, addr string) (*proc, string, error) {
	p, err := startProc(exec.Command(b.goapp, "--version", v, "--listen", addr))
	if err != nil {
		return nil, "", err
	}
	l, err := p.waitLine(10*time.Second, 0, func(l line) bool { return servingRE.MatchString(l.text) })
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, "", fmt.Errorf("goapp %s: %w", v, err)
	}
	return p, servingRE.FindStringSubmatch(l.text)[1], nil
}

// naiveStop stops the running goapp, then starts the new one on the same
// port: the port is closed in between.
type naiveStop struct {
	b    *bins
	addr string
	cur  *proc
}

func (t *naiveStop) start() (string, error) {
	p, addr, err := startGoapp(t.b, "v1", "127.0.0.1:0")
	t.cur, t.addr = p, addr
	return addr, err
}

func (t *naiveStop) restart(n int) (time.Time, error) {
	t0 := time.Now()
	t.cur.stop(syscall.SIGTERM, 15*time.Second)
	p, _, err := startGoapp(t.b, version(n), t.addr)
	if err != nil {
		return t0, err
	}
	t.cur = p
	return t0, nil
}

func (t *naiveStop) close() {
	if t.cur != nil {
		t.cur.stop(syscall.SIGTERM, 15*time.Second)
	}
}

// reuseSibling starts a new server that binds its own SO_REUSEPORT socket
// on the same port, then stops the old one, which closes its socket: the
// LWN 853637 restart. The server is this program in serve mode.
type reuseSibling struct {
	exe  string
	addr string
	cur  *proc
}

func (t *reuseSibling) spawn(v, addr string) (*proc, string, error) {
	p, err := startProc(exec.Command(t.exe, "-serve", addr, "-serve-version", v))
	if err != nil {
		return nil, "", err
	}
	l, err := p.waitLine(10*time.Second, 0, func(l line) bool { return servingRE.MatchString(l.text) })
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, "", fmt.Errorf("reuseport server %s: %w", v, err)
	}
	return p, servingRE.FindStringSubmatch(l.text)[1], nil
}

func (t *reuseSibling) start() (string, error) {
	p, addr, err := t.spawn("v1", "127.0.0.1:0")
	t.cur, t.addr = p, addr
	return addr, err
}

func (t *reuseSibling) restart(n int) (time.Time, error) {
	t0 := time.Now()
	p, _, err := t.spawn(version(n), t.addr)
	if err != nil {
		return t0, err
	}
	old := t.cur
	t.cur = p
	old.stop(syscall.SIGTERM, 15*time.Second)
	return t0, nil
}

func (t *reuseSibling) close() {
	if t.cur != nil {
		t.cur.stop(syscall.SIGTERM, 15*time.Second)
	}
}

// hotswapTarget runs goapp under hotswap with --ready notify.
type hotswapTarget struct {
	b       *bins
	mode    string   // "" for hotswap's default (reuseport)
	goapp   []string // more flags for goapp
	extra   []string // more flags for hotswap
	verFile string
	p       *proc
	// command, if set, is the generations' command line for the version
	// file (a container's); by default goapp itself, its --version read
	// from the file by hotswap ({file:PATH}) at each generation's start,
	// the way a config change reaches a real server.
	command func(verFile string) []string
}

func newHotswap(b *bins, mode string, goappFlags ...string) *hotswapTarget {
	return &hotswapTarget{b: b, mode: mode, goapp: goappFlags}
}

func (t *hotswapTarget) start() (string, error) {
	dir, err := os.MkdirTemp(t.b.dir, "hotswap-")
	if err != nil {
		return "", err
	}
	t.verFile = filepath.Join(dir, "version")
	if err := os.WriteFile(t.verFile, []byte("v1"), 0o644); err != nil {
		return "", err
	}
	args := []string{"--log-format", "json", "--ready", "notify", "-l", "http=tcp://127.0.0.1:0"}
	if t.mode != "" {
		args = append(args, "--mode", t.mode)
	}
	args = append(args, t.extra...)
	cmd := append([]string{t.b.goapp, "--version", "{file:" + t.verFile + "}", "--notify"}, t.goapp...)
	if t.command != nil {
		cmd = t.command(t.verFile)
	}
	args = append(append(args, "--"), cmd...)
	if t.p, err = startProc(exec.Command(t.b.hotswap, args...)); err != nil {
		return "", err
	}
	l, err := t.p.event(10*time.Second, 0, "listening", -1)
	if err != nil {
		return "", fmt.Errorf("hotswap: %w", err)
	}
	addr, _ := l.ev["address"].(string)
	if _, err := t.p.event(30*time.Second, 0, "generation ready", 1); err != nil {
		return "", fmt.Errorf("hotswap: %w", err)
	}
	return addr, nil
}

// reload sends SIGHUP and waits for the outcome of generation n; it returns
// the signal time and the time the outcome was read.
func (t *hotswapTarget) reload(n int) (t0, t1 time.Time, after time.Duration, err error) {
	if err := os.WriteFile(t.verFile, []byte(version(n)), 0o644); err != nil {
		return t0, t1, 0, err
	}
	from := t.p.mark()
	t0 = time.Now()
	if err := t.p.signal(syscall.SIGHUP); err != nil {
		return t0, t1, 0, err
	}
	l, err := t.p.waitLine(30*time.Second, from, func(l line) bool {
		m := l.msg()
		return (m == "reload succeeded" || m == "reload failed") && l.gen() == n
	})
	if err != nil {
		return t0, t1, 0, fmt.Errorf("reload to generation %d: %w", n, err)
	}
	if l.msg() != "reload succeeded" {
		return t0, t1, 0, fmt.Errorf("reload to generation %d: %s", n, l.text)
	}
	if f, ok := l.ev["after"].(float64); ok {
		after = time.Duration(f)
	} else if s, ok := l.ev["after"].(string); ok {
		after, _ = time.ParseDuration(s)
	}
	return t0, l.at, after, nil
}

func (t *hotswapTarget) restart(n int) (time.Time, error) {
	t0, _, _, err := t.reload(n)
	return t0, err
}

func (t *hotswapTarget) close() {
	if t.p != nil {
		t.p.stop(syscall.SIGTERM, 30*time.Second)
	}
}

// probe sends one request on a new connection and returns X-Version.
func probe(addr string) (string, error) {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("X-Version"), nil
}

// waitVersion probes addr until v answers, up to d.
func waitVersion(addr, v string, d time.Duration) (time.Time, error) {
	deadline := time.Now().Add(d)
	for {
		got, err := probe(addr)
		if got == v {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: version %s not answering after %v (last %q, %v)", addr, v, d, got, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
