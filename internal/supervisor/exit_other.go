//go:build !linux

package supervisor

// awaitExit returns at once: cmd.Wait waits for the child itself.
func awaitExit(pid int) {}
