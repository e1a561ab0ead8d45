package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// MaxResponse bounds an answer line (a status lists every generation).
const MaxResponse = 1 << 20

// dialTimeout bounds the connect of [Dial].
const dialTimeout = 10 * time.Second

// Client is one connection to a control socket.
type Client struct {
	conn     net.Conn
	r        *bufio.Reader
	deadline time.Time
}

// Dial connects to the control socket at path; every exchange on the
// connection must be done by deadline, which each request carries so that
// the server does nothing once the client has given up. The server must
// run as this process's uid or as root (its SO_PEERCRED credentials): a
// socket another user put at the path is not talked to.
func Dial(path string, deadline time.Time) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return nil, err
	}
	cred, err := peerCred(conn.(*net.UnixConn))
	if err == nil && !allowedPeer(cred) {
		err = fmt.Errorf("%s is served by uid %d (pid %d), neither uid %d nor root: not talking to it", path, cred.uid, cred.pid, os.Geteuid())
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(deadline)
	return &Client{conn: conn, r: bufio.NewReader(io.LimitReader(conn, MaxResponse)), deadline: deadline}, nil
}

// Do sends req and reads its answer. An answer that says the request
// failed is a [Response] with OK false, not an error.
func (c *Client) Do(req Request) (Response, error) {
	var resp Response
	req.Deadline = c.deadline.UnixMilli()
	b, err := EncodeLine(req)
	if err != nil {
		return resp, err
	}
	_, werr := c.conn.Write(b)
	// Even when the write failed, the server may have answered first:
	// it refuses a peer of another uid before reading its request.
	line, err := c.r.ReadBytes('\n')
	if err != nil && werr != nil {
		return resp, fmt.Errorf("send request: %w", werr)
	}
	if err != nil {
		return resp, fmt.Errorf("read answer: %w", err)
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("read answer: %w", err)
	}
	return resp, nil
}

// WaitClosed waits until the server closes the connection, as it does
// once hotswap has stopped after an [OpStop].
func (c *Client) WaitClosed() error {
	if _, err := c.r.ReadString('\n'); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("unexpected answer")
		}
		return err
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
