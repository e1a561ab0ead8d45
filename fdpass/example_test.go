package fdpass_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// A server that takes its socket from hotswap (or listens itself when run
// alone) and drains on SIGTERM without dropping an accepted connection.
func ExampleServeHTTP() {
	ln, err := fdpass.Listen("http", "tcp", "127.0.0.1:8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: http.FileServer(http.Dir("."))}
	if err := fdpass.ServeHTTP(ctx, srv, ln, 10*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
