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
// process leaves behind, if this process's uid owns it. A file that is not
// a socket is an error; so is a socket someone accepts on, reported as
// syscall.EADDRINUSE. Only ECONNREFUSED means nobody listens: a full accept
// queue (EAGAIN) or a socket this uid may not connect to (EACCES) belongs
// to a live server and is left alone, as is another user's stale socket.
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
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%s: %w: another process listens on it", path, syscall.EADDRINUSE)
	case errors.Is(err, syscall.EAGAIN):
		return fmt.Errorf("%s: %w: another process listens on it (its accept queue is full); left alone", path, syscall.EADDRINUSE)
	case !errors.Is(err, syscall.ECONNREFUSED):
		var errno syscall.Errno
		errors.As(err, &errno)
		return fmt.Errorf("%s: %w: cannot tell whether another process listens on it (connect: %v); left alone", path, syscall.EADDRINUSE, errno)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: a stale socket of uid %d, not %d: hotswap removes only its own (remove it if nothing uses it)", path, st.Uid, os.Geteuid())
	}
	return os.Remove(path)
}
