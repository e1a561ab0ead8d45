package supervisor

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
)

// Defaults of [ControlConfig].
const (
	DefaultControlMaxConns    = 32
	DefaultControlIdleTimeout = 30 * time.Second
)

// ErrControlInUse is returned by [ListenControl] when another live process
// serves the control socket path.
var ErrControlInUse = errors.New("supervisor: control socket in use")

// Controlled is what the control socket drives; [Supervisor] is one.
type Controlled interface {
	Reload(ctx context.Context) error
	ReloadHold(ctx context.Context) error
	SetWeight(ctx context.Context, pct int) error
	Promote(ctx context.Context) error
	Rollback(ctx context.Context) error
	Status(ctx context.Context) (Status, error)
	Signal(ctx context.Context, sig syscall.Signal) error
}

// ControlConfig configures a control socket.
type ControlConfig struct {
	Path   string     // the unix socket; made with mode 0600
	Target Controlled // usually the *Supervisor
	// Stop asks hotswap to stop gracefully; nil refuses "stop" requests.
	Stop   func(cause error)
	Logger hclog.Logger
	// MaxConns bounds the connections served at once; more wait in the
	// accept queue until one closes. Default DefaultControlMaxConns.
	MaxConns int
	// IdleTimeout closes a connection that sends no complete request for
	// this long. Default DefaultControlIdleTimeout.
	IdleTimeout time.Duration
}

// Control serves the control protocol (see [ControlVersion]) on a unix
// socket. Only peers with hotswap's own uid, or root, are served: each
// connection's credentials are read with SO_PEERCRED.
type Control struct {
	cfg    ControlConfig
	log    hclog.Logger
	ln     *net.UnixListener
	fi     os.FileInfo // of the socket file, to remove only our own
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	slots  chan struct{} // one per connection served

	mu    sync.Mutex // guards the fields below
	conns map[*net.UnixConn]bool
}

// ListenControl binds the control socket and serves it until Close. A stale
// socket file at the path (nobody accepts on it) is replaced; a live one is
// [ErrControlInUse].
func ListenControl(cfg ControlConfig) (*Control, error) {
	if cfg.Path == "" || cfg.Target == nil {
		return nil, errors.New("listen control: a path and a target are required")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultControlMaxConns
	}
	setDefault(&cfg.IdleTimeout, DefaultControlIdleTimeout)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ln, fi, err := listenControl(cfg.Path)
	if err != nil {
		return nil, err
	}
	c := &Control{cfg: cfg, log: cfg.Logger.Named("control"), ln: ln, fi: fi, conns: map[*net.UnixConn]bool{}}
	c.slots = make(chan struct{}, cfg.MaxConns)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Go(c.serve)
	return c, nil
}

// listenControl binds path and makes it 0600. Until the chmod the socket
// has the umask's mode, which the peer check covers. A stale socket file,
// on which nobody accepts, is removed first.
func listenControl(path string) (*net.UnixListener, os.FileInfo, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, nil, fmt.Errorf("listen control %s: exists and is not a socket", path)
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, nil, fmt.Errorf("listen control %s: %w", path, ErrControlInUse)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen control %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes the file only if it is still this one
	err = os.Chmod(path, 0o600)
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("listen control %s: %w", path, err)
	}
	return ln, fi, nil
}

// Path returns the socket's path.
func (c *Control) Path() string { return c.cfg.Path }

// Close stops accepting, closes every connection, waits for their handlers
// and removes the socket file if it is still this one. It is idempotent.
func (c *Control) Close() error {
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
		if fi, lerr := os.Lstat(c.cfg.Path); lerr == nil && os.SameFile(fi, c.fi) {
			os.Remove(c.cfg.Path)
		}
	})
	return err
}

func (c *Control) serve() {
	for c.acquire() {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			c.release()
			if c.ctx.Err() != nil {
				return
			}
			// EMFILE and the like: wait a little rather than spin.
			c.log.Warn("accept control connection", "error", err)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
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
func (c *Control) acquire() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.ctx.Done():
		return false
	}
}

func (c *Control) release() { <-c.slots }

func (c *Control) untrack(conn *net.UnixConn) {
	c.mu.Lock()
	delete(c.conns, conn)
	c.mu.Unlock()
	conn.Close()
	c.release()
}

// handle serves one connection: a peer check, then one request per line.
func (c *Control) handle(conn *net.UnixConn) {
	cred, err := peerCred(conn)
	if err != nil {
		c.log.Warn("control connection refused", "error", err)
		return
	}
	if !allowedPeer(cred) {
		c.log.Warn("control connection refused", "uid", cred.uid, "pid", cred.pid)
		c.reply(conn, Response{V: ControlVersion, Error: fmt.Sprintf("permission denied: uid %d is neither %d nor root", cred.uid, os.Geteuid())})
		return
	}
	r := bufio.NewReaderSize(conn, MaxControlLine)
	for {
		conn.SetReadDeadline(time.Now().Add(c.cfg.IdleTimeout))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			c.log.Warn("control request too long", "pid", cred.pid)
			c.reply(conn, Response{V: ControlVersion, Error: ErrLineTooLong.Error()})
			return
		}
		if err != nil {
			return // EOF, a half line and EOF, idle, or Close
		}
		req, err := DecodeRequest(line)
		if err != nil {
			c.log.Debug("bad control request", "pid", cred.pid, "error", err)
			if !c.reply(conn, Response{V: ControlVersion, Error: err.Error()}) {
				return
			}
			continue
		}
		c.log.Info("control request", "op", req.Op, "peer_pid", cred.pid, "peer_uid", cred.uid)
		if !c.reply(conn, c.do(req, cred)) {
			return
		}
		if req.Op == OpStop {
			<-c.ctx.Done() // the client learns that hotswap stopped from EOF
			return
		}
	}
}

// reply writes resp as one line; false means the connection is unusable.
func (c *Control) reply(conn *net.UnixConn, resp Response) bool {
	b, err := EncodeLine(resp)
	if err != nil {
		b, _ = EncodeLine(Response{V: ControlVersion, Error: err.Error()})
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(b)
	return err == nil
}

// do carries out one valid request.
func (c *Control) do(req Request, cred peer) Response {
	resp := Response{V: ControlVersion}
	var err error
	switch req.Op {
	case OpReload:
		return c.reload(req.Hold)
	case OpWeight:
		err = c.cfg.Target.SetWeight(c.ctx, *req.Percent)
	case OpPromote:
		err = c.cfg.Target.Promote(c.ctx)
	case OpRollback:
		err = c.cfg.Target.Rollback(c.ctx)
	case OpStatus:
		var st Status
		if st, err = c.cfg.Target.Status(c.ctx); err == nil {
			resp.Status = &st
		}
	case OpSignal:
		sig, _ := ParseSignal(req.Signal) // checked by DecodeRequest
		err = c.cfg.Target.Signal(c.ctx, sig)
	case OpStop:
		if c.cfg.Stop == nil {
			err = errors.New("stop is not enabled on this control socket")
			break
		}
		c.cfg.Stop(fmt.Errorf("stop requested by pid %d (uid %d) over the control socket", cred.pid, cred.uid))
	}
	return finish(resp, err)
}

func (c *Control) reload(hold bool) Response {
	resp := Response{V: ControlVersion}
	reload := c.cfg.Target.Reload
	if hold {
		reload = c.cfg.Target.ReloadHold
	}
	err := reload(c.ctx)
	var re *ReloadError
	if errors.As(err, &re) {
		resp.Error = re.Error()
		resp.Gen, resp.PID = re.Gen, re.PID
		resp.StillServing, resp.Serving, resp.ServingPID = re.StillServing(), re.Serving, re.ServingPID
		return resp
	}
	if err != nil {
		return finish(resp, err)
	}
	st, err := c.cfg.Target.Status(c.ctx)
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
	case errors.Is(err, ErrStopped), errors.Is(err, context.Canceled):
		resp.Error = "hotswap is stopping"
	default:
		resp.Error = err.Error()
	}
	return resp
}

// peer is who connected, as the kernel recorded it.
type peer struct{ pid, uid int }

// allowedPeer admits hotswap's own uid and root.
func allowedPeer(cred peer) bool {
	return cred.uid == 0 || cred.uid == os.Geteuid()
}

var _ io.Closer = (*Control)(nil)
