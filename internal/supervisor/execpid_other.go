//go:build !linux || !(amd64 || arm64)

package supervisor

import (
	"errors"
	"os/exec"
)

// Only Linux on amd64 and arm64 starts a generation without a shim
// (execpid_linux.go).

var listenPIDSlot = ""

func (s *Supervisor) directExec(string) bool { return false }

var (
	errNoDirect = errors.New("direct exec")
	errNoTrace  = errors.New("ptrace unusable")
)

func startDirect(*exec.Cmd) error { return errNoDirect }
