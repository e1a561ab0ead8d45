package sys

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Dir is a directory held open with O_PATH, for *at calls: a rename of
// the directory's path or of a parent cannot redirect them elsewhere.
type Dir struct {
	Path string
	fd   int
	st   unix.Stat_t
}

// OpenDir opens the directory path.
func OpenDir(path string) (*Dir, error) {
	fd, err := RetryInt(func() (int, error) {
		return unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", path, err) // the user's words: "no such file or directory", not "open: ..."
	}
	d := &Dir{Path: path, fd: fd}
	if err := Retry(func() error { return unix.Fstat(fd, &d.st) }); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("directory %s: %w", path, os.NewSyscallError("fstat", err))
	}
	return d, nil
}

// OpenTrustedDir is [OpenDir] that, when this process is root, refuses a
// directory in which another user could replace the files it makes
// ([Dir.Unsafe]): root would then act on that user's file.
func OpenTrustedDir(path string) (*Dir, error) {
	d, err := OpenDir(path)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := d.Unsafe(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// Fd returns the O_PATH descriptor, valid until Close.
func (d *Dir) Fd() int { return d.fd }

// UID returns the directory's owner.
func (d *Dir) UID() int { return int(d.st.Uid) }

// Unsafe says why a user other than root and this process's could
// rename, remove or replace a file in d, or returns nil: d is owned by
// another user ([Dir.OtherOwner]) or writable by others ([Dir.OthersWrite]).
func (d *Dir) Unsafe() error {
	if err := d.OtherOwner(); err != nil {
		return err
	}
	return d.OthersWrite()
}

// OtherOwner says so when d is owned by a user other than root and this
// process's: that user could replace any file in it.
func (d *Dir) OtherOwner() error {
	if int(d.st.Uid) != 0 && int(d.st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s is owned by uid %d: that user could replace any file in it (use a directory of uid %d or root, such as /run)", d.Path, d.st.Uid, os.Geteuid())
	}
	return nil
}

// OthersWrite says so when d is writable by its group or by others
// without the sticky bit (in a sticky directory such as /tmp only a
// file's owner may rename or remove it).
func (d *Dir) OthersWrite() error {
	perm := d.st.Mode & 0o7777
	if perm&0o022 != 0 && perm&unix.S_ISVTX == 0 {
		return fmt.Errorf("directory %s is writable by other users (mode %#o, no sticky bit): one of them could replace the file (use a directory only its owner can write, such as /run)", d.Path, perm)
	}
	return nil
}

// Close closes the descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }
