// Command listenfds is the smallest Go server that takes its socket the
// systemd way, as go-systemd's activation.Listeners does, with the
// standard library alone: LISTEN_PID must be its own pid, LISTEN_FDS
// counts the sockets from fd 3. On SIGTERM it stops accepting, finishes
// what it accepted and exits 0.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		log.Fatal("no socket in LISTEN_FDS for this process: run under hotswap or systemd socket activation")
	}
	l, err := net.FileListener(os.NewFile(3, "listen-fd-3"))
	if err != nil {
		log.Fatalf("fd 3: %v", err)
	}
	version := "gen " + os.Getenv("HOTSWAP_GENERATION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Version", version)
		fmt.Fprintln(w, "ok")
	})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
