package main

import "golang.org/x/sys/unix"

// closeOnExecInherited marks every descriptor from 3 up close-on-exec.
func closeOnExecInherited() { _ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) }
