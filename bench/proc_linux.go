package main

import "syscall"

// dieWithParent makes a child get SIGKILL if the benchmark dies first.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
