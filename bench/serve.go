package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"golang.org/x/sys/unix"
)

// serve is the benchmark's own small server for the naive SO_REUSEPORT
// restart: it binds addr with SO_REUSEPORT itself (goapp cannot), answers
// like goapp, and on SIGTERM closes its socket and drains what it
// accepted, as a careful server would. Whatever waits in its accept queue
// when the socket closes is reset, unless tcp_migrate_req=1.
func serve(addr, v string) int {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench serve: listen %s: %v\n", addr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	body := fmt.Sprintf("version=%s pid=%d\n", v, os.Getpid())
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Version", v)
		io.WriteString(w, body)
	})}
	fmt.Fprintf(os.Stderr, "bench serve %s: serving http on %s\n", v, ln.Addr())
	if err := fdpass.ServeHTTP(ctx, srv, ln, 10*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "bench serve %s: %v\n", v, err)
		return 1
	}
	return 0
}
