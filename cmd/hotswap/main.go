// Command hotswap runs a server as its child, owns its listening sockets,
// and replaces it with a new generation on SIGHUP without refusing, resetting
// or timing out a single client connection.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/intercept"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/upgrade"
)

// Exit statuses of hotswap itself. When hotswap stops its child, it exits
// with the child's status instead, in shell convention (128+signal).
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure: the first generation never became ready, a reload failed
	exitUsage   = 2 // bad flags or arguments
)

var version = "dev"

// upgradeSignal upgrades hotswap itself (see internal/upgrade).
const upgradeSignal = upgrade.Signal

// gcPercent is hotswap's GOGC unless the environment sets one. Its live
// heap is a few hundred KB; with Go's default of 100 the garbage of
// reloads (sock_diag buffers, /proc reads) grows the heap to the minimum
// target of 4 MB before the first collection, and RSS with it. At 25 the
// target is 1 MB: a collection every few reloads, each well under a
// millisecond of CPU for so small a heap.
const gcPercent = 25

// maxProcs is hotswap's GOMAXPROCS unless the environment sets one.
// hotswap is a supervisor off the data path: it forks, waits and reads
// the kernel's tables, never serves a request, so a second P buys no
// throughput. Each P costs memory of its own (an mcache holding a span of
// every size class, a goroutine run queue) and lets two threads run at
// once. It does not save threads: with one P, a syscall that outlasts a
// tick of the runtime's sysmon (a bind of the notify socket's file, a
// fork/exec, a /proc read) still loses the P to another thread, and the
// runtime keeps that thread. Measured: 7 threads after 100 reloads with
// one P (4 of the runtime's own, one running, one in the network poller,
// one in a syscall), 8-9 with two. The environment variable is left
// alone: generations inherit hotswap's environment, and their GOMAXPROCS
// is theirs to choose.
const maxProcs = 1

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(maxProcs)
	}
	// hotswap serves no heap profile (no net/http/pprof), so the
	// runtime's allocation sampling would only fill its profile buckets
	// (a 1.4 MB hash table and a record per sampled stack) for nothing.
	runtime.MemProfileRate = 0
	if supervisor.IsTee() {
		os.Exit(supervisor.RunTee())
	}
	if fdpass.IsShim() {
		code, err := fdpass.RunShim(intercept.ShimPrepare)
		fmt.Fprintf(os.Stderr, "hotswap: %v\n", err)
		os.Exit(code)
	}
	// A write to a closed stdout or stderr pipe (`hotswap 2>&1 | logger`
	// and the logger restarts) would end hotswap with SIGPIPE, leaving the
	// generation unsupervised. Once SIGPIPE is notified, such a write fails
	// with EPIPE instead, and the log line is lost, not the supervisor. A
	// caught signal is reset by execve, so generations keep the default.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// A descriptor inherited without close-on-exec (from a shell, a
	// service manager) would leak into every generation; only the
	// listeners hotswap hands over may reach a child.
	closeOnExecInherited()
	os.Exit(run(os.Args[1:]))
}

// fail prints the one-line error a user sees and returns code.
func fail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "hotswap: "+format+"\n", args...)
	return code
}
