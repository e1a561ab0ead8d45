package reuse

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// ListenUnix makes a listening unix stream socket at path with the mode
// and owner of o, after removing a stale socket file there ([RemoveStale]).
//
// No client can connect before the file has its final mode and owner: the
// mode comes from the umask at bind(2), set on a thread of its own (its
// umask unshared with CLONE_FS), so the file never exists with another
// mode and no chmod by path follows; the owner is set through an O_PATH
// descriptor of the file just bound, checked to be a socket this process
// owns, before listen(2). The returned file is close-on-exec, blocking,
// and not owned by Go's poller, as [Listen]'s are.
func ListenUnix(path string, o UnixOptions) (_ *os.File, _ UnixFile, retErr error) {
	fail := func(err error) (*os.File, UnixFile, error) {
		return nil, UnixFile{}, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		// Root acts by descriptor here, but another user who may rename
		// files in the directory could still put a socket of theirs at
		// the path that clients trust.
		d, err := sys.OpenDir(filepath.Dir(path))
		if err != nil {
			return fail(err)
		}
		err = d.OthersWrite()
		d.Close()
		if err != nil {
			return fail(err)
		}
	}
	if err := RemoveStale(path); err != nil {
		return nil, UnixFile{}, err
	}
	var f *os.File
	err := sys.WithUmask(o.Mode, func() (err error) {
		f, err = Bind("unix", path, Options{})
		return err
	})
	if err != nil {
		return nil, UnixFile{}, err
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	uf, err := own(path, o.Owner)
	if err != nil {
		return fail(err)
	}
	if err := ListenFile(f, o.Backlog); err != nil {
		return fail(err)
	}
	return f, uf, nil
}

// own opens the socket file just bound at path without following a
// symlink, checks that it is a socket this process owns, gives it to
// owner if set, and returns its identity.
func own(path string, owner *Owner) (UnixFile, error) {
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return UnixFile{}, os.NewSyscallError("open", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := sys.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return UnixFile{}, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != os.Geteuid() {
		return UnixFile{}, fmt.Errorf("the file bound was replaced (mode %#o, uid %d)", st.Mode, st.Uid)
	}
	if owner != nil {
		err := sys.Retry(func() error { return unix.Fchownat(fd, "", owner.UID, owner.GID, unix.AT_EMPTY_PATH) })
		if err != nil {
			return UnixFile{}, os.NewSyscallError("chown", err)
		}
	}
	return UnixFile{Path: path, dev: uint64(st.Dev), ino: st.Ino}, nil
}
