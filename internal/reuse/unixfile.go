package reuse

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// UnixOptions says how [ListenUnix] makes a unix socket file.
type UnixOptions struct {
	// Mode is the file's permission bits; 0 keeps what bind(2) makes
	// (0777 less the umask).
	Mode fs.FileMode
	// Owner, if set, owns the file.
	Owner *Owner
	// Backlog is the listen() backlog; 0 means net.core.somaxconn.
	Backlog int
}

// Owner is a unix socket file's owner; -1 leaves the uid or gid unchanged.
type Owner struct{ UID, GID int }

// UnixFile is a socket file [ListenUnix] made, remembered by its inode so
// that it is removed only while it is still that file.
type UnixFile struct {
	Path     string
	dev, ino uint64
}

// Remove removes the file if the path still names the file that
// [ListenUnix] made; a file put in its place since is left alone.
func (u UnixFile) Remove() {
	if u.Path == "" {
		return
	}
	if dev, ino, err := inode(u.Path); err == nil && dev == u.dev && ino == u.ino {
		os.Remove(u.Path)
	}
}

// UnixFileAt returns the identity of the socket file at path now, for a
// socket that another process bound (a hotswap that upgraded to this one).
func UnixFileAt(path string) (UnixFile, error) {
	dev, ino, err := inode(path)
	if err != nil {
		return UnixFile{}, err
	}
	return UnixFile{Path: path, dev: dev, ino: ino}, nil
}

func inode(path string) (dev, ino uint64, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, errors.ErrUnsupported
	}
	return uint64(st.Dev), uint64(st.Ino), nil
}

// RemoveStale removes a socket file nobody listens on, as a SIGKILLed
// process leaves behind. A file that is not a socket is an error; so is a
// socket someone accepts on, reported as syscall.EADDRINUSE.
func RemoveStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w: another process listens on it", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: probe: %w", path, err)
	}
	return os.Remove(path)
}
