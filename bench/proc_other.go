//go:build !linux

package main

import "syscall"

// dieWithParent has no Pdeathsig to set outside Linux.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
