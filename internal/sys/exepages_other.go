//go:build !linux

package sys

// ReleaseExecutablePages does nothing outside Linux.
func ReleaseExecutablePages() (int, error) { return 0, nil }
