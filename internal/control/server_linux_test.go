package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// fakeTarget answers like a supervisor serving generation cur.
type fakeTarget struct {
	mu      sync.Mutex // guards the fields below
	cur     int
	fail    bool
	signals []syscall.Signal
	calls   []string      // blue/green calls, as "weight 20", "promote", ...
	release chan struct{} // when set, Reload waits for it
}

func (f *fakeTarget) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return nil
}

func (f *fakeTarget) ReloadHold(context.Context, int) error { return f.record("hold") }
func (f *fakeTarget) SetWeight(_ context.Context, pct int) error {
	return f.record(fmt.Sprintf("weight %d", pct))
}
func (f *fakeTarget) Promote(context.Context) error  { return f.record("promote") }
func (f *fakeTarget) Rollback(context.Context) error { return f.record("rollback") }

func (f *fakeTarget) Reload(ctx context.Context) error {
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return &supervisor.ReloadError{Gen: f.cur + 1, PID: 999, Err: errors.New("exited with status 1"), Serving: f.cur, ServingPID: 100 + f.cur}
	}
	f.cur++
	return nil
}

func (f *fakeTarget) Status(context.Context) (supervisor.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return supervisor.Status{Current: f.cur, Generations: []supervisor.GenerationStatus{{ID: f.cur, PID: 100 + f.cur, State: supervisor.StateReady}}}, nil
}

func (f *fakeTarget) Signal(_ context.Context, sig syscall.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals = append(f.signals, sig)
	return nil
}

func listenTest(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "ctl.sock")
	}
	c, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) send(line string) Response {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line); err != nil {
		c.t.Fatalf("send %.40q: %v", line, err)
	}
	return c.read()
}

func (c *client) read() Response {
	c.t.Helper()
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		c.t.Fatalf("answer %q: %v", b, err)
	}
	return resp
}

func TestControlRequests(t *testing.T) {
	f := &fakeTarget{cur: 1}
	c := listenTest(t, Config{Target: f})
	fi, err := os.Stat(c.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode %v, want 0600", got)
	}
	cl := dial(t, c.Path())
	if r := cl.send(`{"v":1,"op":"reload"}` + "\n"); !r.OK || r.Gen != 2 || r.PID != 102 {
		t.Errorf("reload: got %+v, want ok, gen 2, pid 102", r)
	}
	f.mu.Lock()
	f.fail = true
	f.mu.Unlock()
	r := cl.send(`{"v":1,"op":"reload"}` + "\n")
	if r.OK || r.Error != "generation 3 (pid 999) exited with status 1" || r.StillServing != "still serving generation 2 (pid 102)" || r.Serving != 2 {
		t.Errorf("failed reload: got %+v", r)
	}
	if r := cl.send(`{"v":1,"op":"status"}` + "\n"); !r.OK || r.Status == nil || r.Status.Current != 2 {
		t.Errorf("status: got %+v, want current 2", r)
	}
	if r := cl.send(`{"v":1,"op":"signal","signal":"USR2"}` + "\n"); !r.OK || len(f.signals) != 1 || f.signals[0] != syscall.SIGUSR2 {
		t.Errorf("signal: got %+v, signals %v", r, f.signals)
	}
	for _, line := range []string{`{"v":1,"op":"reload","hold":true}`, `{"v":1,"op":"weight","percent":20}`, `{"v":1,"op":"promote"}`, `{"v":1,"op":"rollback"}`} {
		if r := cl.send(line + "\n"); !r.OK {
			t.Errorf("%s: got %+v", line, r)
		}
	}
	for _, line := range []string{`{"v":1,"op":"weight","percent":101}`, `{"v":1,"op":"weight"}`, `{"v":1,"op":"promote","percent":5}`, `{"v":1,"op":"status","hold":true}`} {
		if r := cl.send(line + "\n"); r.OK {
			t.Errorf("%s: got ok, want an error", line)
		}
	}
	if r := cl.send(`{"v":1,"op":"stop"}` + "\n"); r.OK || !strings.Contains(r.Error, "not enabled") {
		t.Errorf("stop without Stop: got %+v, want refused", r)
	}
	if want := []string{"hold", "weight 20", "promote", "rollback"}; !slices.Equal(f.calls, want) {
		t.Errorf("blue/green calls %v, want %v", f.calls, want)
	}
}

// TestControlSurvivesGarbage: garbage, oversized lines, half lines and
// disconnects get an error or a closed connection, and never stop a
// well-behaved client from being served.
func TestControlSurvivesGarbage(t *testing.T) {
	f := &fakeTarget{cur: 1}
	c := listenTest(t, Config{Target: f, IdleTimeout: 200 * time.Millisecond})
	goroutines := runtime.NumGoroutine()

	cl := dial(t, c.Path())
	for _, g := range []string{"garbage\n", "\x00\xff\xfe\n", `{"v":1,"op":"reload"` + "\n", `{"v":7,"op":"reload"}` + "\n", "[]\n"} {
		if r := cl.send(g); r.OK || r.Error == "" || r.V != Version {
			t.Errorf("%q: got %+v, want an error", g, r)
		}
	}
	if r := cl.send(`{"v":1,"op":"status"}` + "\n"); !r.OK {
		t.Errorf("status after garbage on the same connection: %+v", r)
	}

	long := dial(t, c.Path())
	long.conn.Write([]byte(strings.Repeat("x", 3*MaxLine)))
	if r := long.read(); r.OK || r.Error != ErrLineTooLong.Error() {
		t.Errorf("oversized line: got %+v, want %v", r, ErrLineTooLong)
	}
	if _, err := long.r.ReadByte(); err == nil {
		t.Errorf("connection open after an oversized line")
	}

	half := dial(t, c.Path())
	half.conn.Write([]byte(`{"v":1,"op":"rel`))
	start := time.Now()
	if _, err := half.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("half line: got %v, want the server to close the idle connection", err)
	} else if d := time.Since(start); d > 5*time.Second {
		t.Errorf("half line closed after %v, want about the idle timeout", d)
	}

	for range 50 { // connect and leave, with and without half a request
		conn, err := net.Dial("unix", c.Path())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(`{"v":1,`))
		conn.Close()
	}
	if r := dial(t, c.Path()).send(`{"v":1,"op":"reload"}` + "\n"); !r.OK || r.Gen != 2 {
		t.Errorf("reload after garbage: got %+v", r)
	}
	cl.conn.Close()
	waitGoroutines(t, goroutines)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	var n int
	for range 200 {
		if n = runtime.NumGoroutine(); n <= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines, want at most %d: connections leak", n, want)
}

// TestControlMaxConns: connections beyond the cap wait until one closes,
// and are then served.
func TestControlMaxConns(t *testing.T) {
	f := &fakeTarget{cur: 1, release: make(chan struct{})}
	c := listenTest(t, Config{Target: f, MaxConns: 2})
	a, b := dial(t, c.Path()), dial(t, c.Path())
	for _, cl := range []*client{a, b} {
		io.WriteString(cl.conn, `{"v":1,"op":"reload"}`+"\n")
	}
	third := dial(t, c.Path())
	io.WriteString(third.conn, `{"v":1,"op":"status"}`+"\n")
	third.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := third.r.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("third connection served beyond the cap: %v", err)
	}
	close(f.release)
	for _, cl := range []*client{a, b} {
		if r := cl.read(); !r.OK {
			t.Errorf("reload: got %+v", r)
		}
	}
	a.conn.Close()
	third.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if r := third.read(); !r.OK || r.Status == nil {
		t.Errorf("third connection once a slot freed: got %+v", r)
	}
}

func TestControlStopWaitsForClose(t *testing.T) {
	stopped := make(chan error, 1)
	c := listenTest(t, Config{Target: &fakeTarget{}, Stop: func(err error) { stopped <- err }})
	cl := dial(t, c.Path())
	if r := cl.send(`{"v":1,"op":"stop"}` + "\n"); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	if err := <-stopped; !strings.Contains(err.Error(), "over the control socket") {
		t.Errorf("stop cause %q", err)
	}
	cl.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := cl.r.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("before Close: got %v, want the connection held open", err)
	}
	c.Close()
	cl.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := cl.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after Close: got %v, want EOF", err)
	}
	if _, err := os.Lstat(c.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

func TestListenPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	// A stale socket, as a SIGKILLed hotswap leaves behind, is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	c := listenTest(t, Config{Path: path, Target: &fakeTarget{}})
	// A live one is not.
	if _, err := Listen(Config{Path: path, Target: &fakeTarget{}}); !errors.Is(err, ErrInUse) {
		t.Errorf("second ListenControl on a live socket: got %v, want ErrInUse", err)
	}
	if r := dial(t, path).send(`{"v":1,"op":"status"}` + "\n"); !r.OK {
		t.Errorf("status after a refused second listener: %+v", r)
	}
	c.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(Config{Path: file, Target: &fakeTarget{}}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ListenControl on a regular file: got %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left in the directory: %v, want only the regular file", ents)
	}
}
