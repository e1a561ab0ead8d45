package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/quicload"
)

// quicRun is one QUIC method's reloads under the HTTP/3 load: long-lived
// connections each sending a request every 100 ms, and two workers that
// open a new connection per request.
type quicRun struct {
	Method     string
	Reloads    int
	OK, Failed int
	Errors     map[string]int
	Err        string
}

func (r quicRun) perReload() float64 { return per(r.Failed, r.Reloads) }

func (r quicRun) kinds() string { return kindsOf(r.Errors) }

// quicTarget is a way to restart examples/quicapp.
type quicTarget interface {
	start() (addr string, err error)
	restart(n int) error
	close()
}

// measureQUIC runs the QUIC methods side by side.
func measureQUIC(ctx context.Context, cfg config, b *bins, logf func(string, ...any)) []quicRun {
	methods := []struct {
		name string
		t    quicTarget
	}{
		{"naive SO_REUSEPORT restart (no hotswap)", &quicSibling{b: b}},
		{"hotswap shared (one UDP socket)", &quicHotswap{b: b, hsFlags: []string{"--mode", "shared"}}},
		{"hotswap reuseport, server ignores HOTSWAP_QUIC_CID", &quicHotswap{b: b, appFlags: []string{"--no-cid"}}},
		{"hotswap reuseport, CID steering (fdpass/quiccid)", &quicHotswap{b: b}},
	}
	var out []quicRun
	for _, m := range methods {
		if ctx.Err() != nil {
			break
		}
		r := runQUIC(ctx, cfg, m.t)
		r.Method = m.name
		logf("quic %-50s %d reloads: %d ok, %d failed %s %s", m.name, r.Reloads, r.OK, r.Failed, r.kinds(), r.Err)
		out = append(out, r)
	}
	return out
}

func runQUIC(ctx context.Context, cfg config, t quicTarget) quicRun {
	defer t.close()
	var r quicRun
	addr, err := t.start()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	run := quicload.Start(ctx, quicload.Config{Addr: addr, Long: cfg.quicLong, RampUp: 2 * time.Second, New: 2, Duration: 5 * time.Minute})
	for deadline := time.Now().Add(30 * time.Second); run.Up() < cfg.quicLong && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // every long-lived connection answered once
	}
	for n := 2; n <= cfg.quicReloads+1 && ctx.Err() == nil; n++ {
		if err := t.restart(n); err != nil {
			r.Err = err.Error()
			break
		}
		r.Reloads++
		time.Sleep(400 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // the last old generation drains
	res := run.Stop()
	r.OK, r.Failed, r.Errors = res.OK, res.Failed, res.Errors
	return r
}

// quicConnWait is hotswap's default --drain-conn-wait, which the QUIC
// rows keep.
const quicConnWait = "2s"

// quicHotswap runs quicapp under hotswap with --ready notify.
type quicHotswap struct {
	b                 *bins
	hsFlags, appFlags []string
	p                 *proc
}

func (t *quicHotswap) start() (string, error) {
	// Reloads 400 ms apart, each old generation kept quicConnWait and
	// then closing its connections: up to a dozen drain at once.
	args := append([]string{"--log-format", "json", "--ready", "notify", "-l", "quic=udp4://127.0.0.1:0",
		"--drain-timeout", "10s", "--max-draining", "32"}, t.hsFlags...)
	args = append(args, "--", t.b.quicapp, "--version", "v{gen}", "--notify")
	var err error
	if t.p, err = startProc(exec.Command(t.b.hotswap, append(args, t.appFlags...)...)); err != nil {
		return "", err
	}
	l, err := t.p.event(10*time.Second, 0, "listening", -1)
	if err != nil {
		return "", fmt.Errorf("hotswap: %w", err)
	}
	if _, err := t.p.event(10*time.Second, 0, "generation ready", 1); err != nil {
		return "", fmt.Errorf("hotswap: %w", err)
	}
	addr, _ := l.ev["address"].(string)
	return addr, nil
}

func (t *quicHotswap) restart(n int) error {
	from := t.p.mark()
	if err := t.p.signal(syscall.SIGHUP); err != nil {
		return err
	}
	l, err := t.p.waitLine(30*time.Second, from, func(l line) bool {
		m := l.msg()
		// A refused reload (nothing started) names no generation.
		return (m == "reload succeeded" || m == "reload failed") && (l.gen() == n || l.gen() < 0)
	})
	if err != nil {
		return fmt.Errorf("reload to generation %d: %w", n, err)
	}
	if l.msg() != "reload succeeded" {
		return fmt.Errorf("reload to generation %d: %s", n, l.text)
	}
	return nil
}

func (t *quicHotswap) close() {
	if t.p != nil {
		t.p.stop(syscall.SIGTERM, 30*time.Second)
	}
}

// quicSibling is the naive restart without hotswap: the new quicapp binds
// its own SO_REUSEPORT socket on the port, and once it serves the old one
// gets SIGTERM (it sends GOAWAY and closes). The kernel hashes datagrams
// over the sockets by 4-tuple, so a connection's packets may move to the
// new process when it joins and do when the old one leaves.
type quicSibling struct {
	b    *bins
	addr string
	cur  *proc
}

func (t *quicSibling) spawn(n int) (*proc, error) {
	p, err := startProc(exec.Command(t.b.quicapp, "--reuseport", "--addr", t.addr, "--version", version(n)))
	if err != nil {
		return nil, err
	}
	if _, err := p.waitLine(10*time.Second, 0, func(l line) bool { return strings.Contains(l.text, "serving HTTP/3") }); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("quicapp %s: %w", version(n), err)
	}
	return p, nil
}

func (t *quicSibling) start() (string, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	t.addr = c.LocalAddr().String()
	c.Close() // a free port on a 127.0.0.1 that only this benchmark uses
	t.cur, err = t.spawn(1)
	return t.addr, err
}

func (t *quicSibling) restart(n int) error {
	p, err := t.spawn(n)
	if err != nil {
		return err
	}
	old := t.cur
	t.cur = p
	go old.stop(syscall.SIGTERM, 15*time.Second)
	return nil
}

func (t *quicSibling) close() {
	if t.cur != nil {
		t.cur.stop(syscall.SIGTERM, 15*time.Second)
	}
}

func (r *report) quicTable(w func(string, ...any)) {
	if len(r.QUIC) == 0 {
		return
	}
	c := r.Cfg
	w("## QUIC (HTTP/3) failures per reload\n\n")
	w("examples/quicapp with quic-go's client: %d long-lived connections, each sending a request every 100 ms, and 2 workers opening a new connection per request (2 s timeout, handshake included), %d reloads 400 ms apart; hotswap with its default --drain-conn-wait %s. ", c.quicLong, c.quicReloads, quicConnWait)
	w("A failure is any request without an answer: a timeout, a connection closed or reset, a refused handshake.\n\n")
	w("| method | reloads | requests | failed | failed per reload | failure kinds |\n")
	w("|---|---:|---:|---:|---:|---|\n")
	for _, q := range r.QUIC {
		reloads := fmt.Sprint(q.Reloads)
		if q.Err != "" {
			reloads += " (broke off: " + oneLine(q.Err) + ")"
		}
		w("| %s | %s | %d | **%d** | %.2f | %s |\n", q.Method, reloads, q.OK+q.Failed, q.Failed, q.perReload(), q.kinds())
	}
	w("\n")
}
