package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Defaults of [Config].
const (
	DefaultMaxConns = 32
	// DefaultFirstRequestTimeout bounds the wait for a connection's first
	// request: hotswap's own client sends it at once, so a client that
	// connects and says nothing holds one of the MaxConns slots that long.
	DefaultFirstRequestTimeout = 2 * time.Second
	DefaultIdleTimeout         = 10 * time.Second
)

// Accept failures (EMFILE: hotswap is out of descriptors) are retried after
// a pause that doubles up to acceptBackoffMax, and logged at most once per
// acceptLogEvery, with how many there were.
const (
	acceptBackoffMin = 50 * time.Millisecond
	acceptBackoffMax = time.Second
	acceptLogEvery   = 10 * time.Second
)

// ErrInUse is returned by [Listen] when another live process serves the
// control socket path.
var ErrInUse = errors.New("control: control socket in use")

// Target is what the control socket drives; [supervisor.Supervisor] is one.
type Target interface {
	Reload(ctx context.Context) error
	ReloadHold(ctx context.Context) error
	SetWeight(ctx context.Context, pct int) error
	Promote(ctx context.Context) error
	Rollback(ctx context.Context) error
	Status(ctx context.Context) (supervisor.Status, error)
	Signal(ctx context.Context, sig syscall.Signal) error
}

// Config configures a control socket.
type Config struct {
	Path   string // the unix socket; made with mode 0600
	Target Target // usually the *supervisor.Supervisor
	// Stop asks hotswap to stop gracefully; nil refuses "stop" requests.
	Stop   func(cause error)
	Logger hclog.Logger
	// MaxConns bounds the connections served at once; more wait in the
	// accept queue until one closes. Default DefaultMaxConns.
	MaxConns int
	// FirstRequestTimeout closes a connection whose first request is not
	// complete this long after it was accepted. Default
	// DefaultFirstRequestTimeout.
	FirstRequestTimeout time.Duration
	// IdleTimeout closes a connection that sends no complete request for
	// this long after an answer. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// File, if set, is the listening socket already at Path (from [Bind],
	// possibly in the hotswap this one upgraded from): Listen serves it
	// instead of binding, and the caller keeps its own copy.
	File *os.File
}

// Server serves the control protocol (see [Version]) on a unix socket. Only peers with hotswap's own uid, or root, are served: each
// connection's credentials are read with SO_PEERCRED.
type Server struct {
	cfg    Config
	log    hclog.Logger
	ln     *net.UnixListener
	file   reuse.UnixFile // removed by Close if it is still ours
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	slots  chan struct{} // one per connection served

	mu    sync.Mutex // guards the fields below
	conns map[*net.UnixConn]bool
	keep  bool // Close leaves the socket file: another hotswap serves it
}

// Keep makes Close leave the socket file in place: a new hotswap serves
// it after a self-upgrade.
func (c *Server) Keep() {
	c.mu.Lock()
	c.keep = true
	c.mu.Unlock()
}

// Listen binds the control socket, mode 0600 from the start, and serves it
// until Close. A stale socket file at the path (nobody accepts on it) is
// replaced; a live one is [ErrInUse].
func Listen(cfg Config) (*Server, error) {
	if cfg.Path == "" || cfg.Target == nil {
		return nil, errors.New("listen control: a path and a target are required")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.FirstRequestTimeout <= 0 {
		cfg.FirstRequestTimeout = DefaultFirstRequestTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ln, file, err := listen(cfg.Path, cfg.File)
	if err != nil {
		return nil, err
	}
	c := &Server{cfg: cfg, log: cfg.Logger.Named("control"), ln: ln, file: file, conns: map[*net.UnixConn]bool{}}
	c.slots = make(chan struct{}, cfg.MaxConns)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Go(c.serve)
	return c, nil
}

// Path returns the socket's path.
func (c *Server) Path() string { return c.cfg.Path }

// Close stops accepting, closes every connection, waits for their handlers
// and removes the socket file if it is still this one. It is idempotent.
func (c *Server) Close() error {
	var err error
	c.once.Do(func() {
		c.cancel()
		err = c.ln.Close()
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Unlock()
		c.wg.Wait()
		c.mu.Lock()
		keep := c.keep
		c.mu.Unlock()
		if !keep {
			c.file.Remove()
		}
	})
	return err
}

func (c *Server) serve() {
	var fails acceptFailures
	for c.acquire() {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			c.release()
			if c.ctx.Err() != nil {
				return
			}
			// EMFILE and the like: back off rather than spin, and say so
			// without a line every pause.
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(fails.failed(c.log, err)):
			}
			continue
		}
		fails.reset()
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
		c.wg.Go(func() {
			defer c.untrack(conn)
			c.handle(conn)
		})
	}
}

// acquire waits for a connection slot, so at most MaxConns are served at
// once; the others wait in the kernel's accept queue. It returns false
// once Close began.
func (c *Server) acquire() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.ctx.Done():
		return false
	}
}

func (c *Server) release() { <-c.slots }

func (c *Server) untrack(conn *net.UnixConn) {
	c.mu.Lock()
	delete(c.conns, conn)
	c.mu.Unlock()
	conn.Close()
	c.release()
}

// handle serves one connection: a peer check, then one request per line.
func (c *Server) handle(conn *net.UnixConn) {
	cred, err := peerCred(conn)
	if err != nil {
		c.log.Warn("control connection refused", "error", err)
		return
	}
	if !allowedPeer(cred) {
		c.log.Warn("control connection refused", "uid", cred.uid, "pid", cred.pid)
		c.reply(conn, Response{V: Version, Error: fmt.Sprintf("permission denied: uid %d is neither %d nor root", cred.uid, os.Geteuid())})
		return
	}
	r := bufio.NewReaderSize(conn, MaxLine)
	for wait := c.cfg.FirstRequestTimeout; ; wait = c.cfg.IdleTimeout {
		conn.SetReadDeadline(time.Now().Add(wait))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			c.log.Warn("control request too long", "pid", cred.pid)
			c.reply(conn, Response{V: Version, Error: ErrLineTooLong.Error()})
			return
		}
		if err != nil {
			return // EOF, a half line and EOF, idle, or Close
		}
		req, err := DecodeRequest(line)
		if err != nil {
			c.log.Debug("bad control request", "pid", cred.pid, "error", err)
			if !c.reply(conn, Response{V: Version, Error: err.Error()}) {
				return
			}
			continue
		}
		// Who changed what is worth a line; a status poll (a monitor, a
		// deploy script waiting for a generation) would fill the log.
		logReq := c.log.Info
		if req.Op == OpStatus {
			logReq = c.log.Debug
		}
		logReq("control request", "op", req.Op, "peer_pid", cred.pid, "peer_uid", cred.uid)
		if !c.reply(conn, c.doBy(req, cred)) {
			return
		}
		if req.Op == OpStop {
			<-c.ctx.Done() // the client learns that hotswap stopped from EOF
			return
		}
	}
}

// reply writes resp as one line; false means the connection is unusable.
func (c *Server) reply(conn *net.UnixConn, resp Response) bool {
	b, err := EncodeLine(resp)
	if err != nil {
		b, _ = EncodeLine(Response{V: Version, Error: err.Error()})
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(b)
	return err == nil
}

// doBy carries out req within the client's deadline: a request whose
// client has given up already (it waited in the accept queue behind busy
// slots) is not carried out at all, and says so.
func (c *Server) doBy(req Request, cred peer) Response {
	if req.Deadline == 0 {
		return c.do(c.ctx, req, cred)
	}
	deadline := time.UnixMilli(req.Deadline)
	if late := time.Since(deadline); late >= 0 {
		c.log.Warn("control request expired, not carried out", "op", req.Op, "peer_pid", cred.pid, "late", late.Round(time.Millisecond))
		return Response{V: Version, Error: fmt.Sprintf("%s not carried out: the client's deadline passed %s before hotswap read it", req.Op, late.Round(time.Millisecond))}
	}
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()
	return c.do(ctx, req, cred)
}

// do carries out one valid request.
func (c *Server) do(ctx context.Context, req Request, cred peer) Response {
	resp := Response{V: Version}
	var err error
	switch req.Op {
	case OpReload:
		return c.reload(ctx, req.Hold)
	case OpWeight:
		err = c.cfg.Target.SetWeight(ctx, *req.Percent)
	case OpPromote:
		err = c.cfg.Target.Promote(ctx)
	case OpRollback:
		err = c.cfg.Target.Rollback(ctx)
	case OpStatus:
		var st supervisor.Status
		if st, err = c.cfg.Target.Status(ctx); err == nil {
			resp.Status = &st
		}
	case OpSignal:
		sig, _ := supervisor.ParseSignal(req.Signal) // checked by DecodeRequest
		err = c.cfg.Target.Signal(ctx, sig)
	case OpStop:
		if c.cfg.Stop == nil {
			err = errors.New("stop is not enabled on this control socket")
			break
		}
		c.cfg.Stop(fmt.Errorf("stop requested by pid %d (uid %d) over the control socket", cred.pid, cred.uid))
	}
	return finish(resp, err)
}

func (c *Server) reload(ctx context.Context, hold bool) Response {
	resp := Response{V: Version}
	reload := c.cfg.Target.Reload
	if hold {
		reload = c.cfg.Target.ReloadHold
	}
	err := reload(ctx)
	var re *supervisor.ReloadError
	if errors.As(err, &re) {
		resp.Error = re.Error()
		resp.Gen, resp.PID = re.Gen, re.PID
		resp.StillServing, resp.Serving, resp.ServingPID = re.StillServing(), re.Serving, re.ServingPID
		return resp
	}
	if err != nil {
		return finish(resp, err)
	}
	st, err := c.cfg.Target.Status(ctx)
	if err == nil {
		resp.Gen = st.Current
		if hold {
			resp.Gen = st.Canary
		}
		for _, g := range st.Generations {
			if g.ID == resp.Gen {
				resp.PID = g.PID
			}
		}
	}
	return finish(resp, err)
}

func finish(resp Response, err error) Response {
	switch {
	case err == nil:
		resp.OK = true
	case errors.Is(err, supervisor.ErrStopped), errors.Is(err, context.Canceled):
		resp.Error = "hotswap is stopping"
	default:
		resp.Error = err.Error()
	}
	return resp
}

// acceptFailures paces and logs the accept loop's failures in a row.
type acceptFailures struct {
	unlogged int
	backoff  time.Duration
	logged   time.Time
}

// failed records err and returns the pause before the next accept.
func (a *acceptFailures) failed(log hclog.Logger, err error) time.Duration {
	a.unlogged++
	if time.Since(a.logged) >= acceptLogEvery {
		log.Warn("accept control connection", "error", err, "failures", a.unlogged)
		a.logged, a.unlogged = time.Now(), 0
	}
	a.backoff = min(max(2*a.backoff, acceptBackoffMin), acceptBackoffMax)
	return a.backoff
}

func (a *acceptFailures) reset() { a.backoff = 0 }

// peer is who connected, as the kernel recorded it.
type peer struct{ pid, uid int }

// allowedPeer admits hotswap's own uid and root.
func allowedPeer(cred peer) bool {
	return cred.uid == 0 || cred.uid == os.Geteuid()
}

var _ io.Closer = (*Server)(nil)

// Bind makes the control socket at path, mode 0600 from the start, and
// returns it listening, for [Config].File. A stale socket file there is
// replaced; a live one is [ErrInUse].
func Bind(path string) (*os.File, error) {
	f, _, err := reuse.ListenUnix(path, reuse.UnixOptions{Mode: 0o600})
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen control: %v: %w", err, ErrInUse)
	case err != nil:
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = errno // "bind unix PATH: bind: ..." says PATH twice
		}
		return nil, fmt.Errorf("listen control %s: %w", path, err)
	}
	return f, nil
}

// listen returns a listener on f, or on a socket bound at path when f is
// nil, that leaves the file alone on close: the server removes it only if
// it is still the one it served.
func listen(path string, f *os.File) (_ *net.UnixListener, file reuse.UnixFile, retErr error) {
	if f == nil {
		var err error
		if f, err = Bind(path); err != nil {
			return nil, file, err
		}
		defer f.Close()
		defer func() {
			if retErr != nil {
				file.Remove()
			}
		}()
	}
	file, err := reuse.UnixFileAt(path)
	if err != nil {
		return nil, file, fmt.Errorf("listen control %s: %w", path, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, file, fmt.Errorf("listen control %s: %w", path, err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, file, fmt.Errorf("listen control %s: not a unix socket", path)
	}
	ul.SetUnlinkOnClose(false)
	return ul, file, nil
}
