//go:build !linux

package main

// closeOnExecInherited needs close_range(2) (Linux): hotswap supervises
// only there.
func closeOnExecInherited() {}
