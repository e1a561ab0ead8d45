// Package reuse creates the listening sockets hotswap owns and reads their
// state: socket options, backlog, the current accept-queue length, and
// SO_REUSEPORT groups steered by classic BPF.
//
// Sockets are created with raw syscalls and returned as *os.File that Go's
// poller never registers, so handing one to os/exec (which calls Fd) cannot
// flip the shared open file description to blocking under a running child
// (docs/kernel.md, "O_NONBLOCK"). Every descriptor is CLOEXEC at birth.
//
// The package never logs; it returns errors and figures.
package reuse
