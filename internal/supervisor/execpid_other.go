//go:build !linux || !(amd64 || arm64)

package supervisor

import "os/exec"

// Only Linux on amd64 and arm64 starts a generation without a shim
// (execpid_linux.go).

var listenPIDSlot = ""

func (s *Supervisor) directExec(string) bool { return false }

func startDirect(*exec.Cmd) error { return errNoDirect }
