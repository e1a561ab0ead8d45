package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// writePidfile writes the pid to a new file beside path and renames it
// into place, so a reader never sees a partial file. Every step goes
// through the directory's descriptor and the file's own: the temporary
// file is created with O_EXCL|O_NOFOLLOW and given its mode with fchmod,
// never by name, and after the rename the name must still be that file.
// As root, a directory another user may write is refused
// (sys.OpenTrustedDir): that user could rename a symlink over the
// temporary name between two steps.
func writePidfile(path string) (retErr error) {
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("write pidfile %s: %w", path, retErr)
		}
	}()
	d, err := sys.OpenTrustedDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	tmp := ".hotswap-pid-" + randomSuffix()
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Openat(d.Fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return os.NewSyscallError("open", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	defer f.Close()
	defer func() {
		if retErr != nil {
			unix.Unlinkat(d.Fd(), tmp, 0)
		}
	}()
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil { // fchmod: the file, whatever its name now
		return err
	}
	var st unix.Stat_t
	if err := sys.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	name := filepath.Base(path)
	if err := sys.Retry(func() error { return unix.Renameat(d.Fd(), tmp, d.Fd(), name) }); err != nil {
		return os.NewSyscallError("rename", err)
	}
	var now unix.Stat_t
	err = sys.Retry(func() error { return unix.Fstatat(d.Fd(), name, &now, unix.AT_SYMLINK_NOFOLLOW) })
	if err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
		return fmt.Errorf("another process replaced it while it was written (the directory is writable by others)")
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// removePidfileIfOurs removes path if it still names this process: after a
// self-upgrade it names the new hotswap and must stay. It reads the file
// without following a symlink and removes the name, never a link's target.
func removePidfileIfOurs(path string) {
	if path == "" {
		return
	}
	d, err := sys.OpenDir(filepath.Dir(path))
	if err != nil {
		return
	}
	defer d.Close()
	name := filepath.Base(path)
	if pid, err := readPidAt(d, name); err == nil && pid == os.Getpid() {
		unix.Unlinkat(d.Fd(), name, 0)
	}
}

// readPidAt reads the pid in the regular file name of d, not following a
// symlink.
func readPidAt(d *sys.Dir, name string) (int, error) {
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Openat(d.Fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return 0, os.NewSyscallError("open", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 0, errors.New("not a regular file")
	}
	b := make([]byte, 32)
	n, _ := f.Read(b)
	return strconv.Atoi(strings.TrimSpace(string(b[:n])))
}
