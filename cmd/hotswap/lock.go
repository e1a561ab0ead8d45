package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"github.com/hotswap-dev/hotswap/internal/upgrade"
	"golang.org/x/sys/unix"
)

// lockSuffix names the lock file beside a pidfile or a control socket.
const lockSuffix = ".lock"

// errLocked is wrapped by lockFor when another hotswap holds the lock.
var errLocked = errors.New("another hotswap holds it")

// instanceLocks are the locks one hotswap holds for its life: an flock on
// PATH.lock beside its --pidfile and beside an explicit --control socket.
// A second hotswap given the same path refuses at once, before it binds,
// writes or removes anything; a SIGKILLed hotswap's lock goes with its
// process. Each lock passes to the new hotswap of a self-upgrade, which
// inherits the open file, so the lock is never free in between.
type instanceLocks struct {
	files []*os.File
}

// lockedPath is a path a lock stands beside, and the flag that named it.
type lockedPath struct{ flag, path string }

// lockInstance takes the lock of every path given (empty ones are
// skipped).
func lockInstance(up *upgrade.Upgrader, paths ...lockedPath) (*instanceLocks, error) {
	l := &instanceLocks{}
	for _, p := range paths {
		flag, path := p.flag, p.path
		if path == "" {
			continue
		}
		f, _, err := up.Carry("lock:"+path, func() (*os.File, error) { return lockFor(path) })
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("%s %s: %w", flag, path, err)
		}
		l.files = append(l.files, f)
	}
	return l, nil
}

// announce writes this process's pid into every lock file, for the
// message of the next hotswap refused.
func (l *instanceLocks) announce() {
	for _, f := range l.files {
		writeHolder(f)
	}
}

// Close releases the locks (the process's exit does the same).
func (l *instanceLocks) Close() {
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
}

// lockFor opens path.lock, a regular file this uid owns, and locks it
// without waiting.
func lockFor(path string) (_ *os.File, retErr error) {
	d, err := sys.OpenTrustedDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	name := filepath.Base(path) + lockSuffix
	fd, err := sys.RetryInt(func() (int, error) {
		return unix.Openat(d.Fd(), name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, os.NewSyscallError("open", err))
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.Path, name))
	defer func() {
		if retErr != nil {
			f.Close()
		}
	}()
	var st unix.Stat_t
	if err := sys.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return nil, fmt.Errorf("lock %s: %w", f.Name(), os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("lock %s: not a regular file of uid %d (mode %#o, uid %d): remove it if no hotswap runs", f.Name(), os.Geteuid(), st.Mode, st.Uid)
	}
	err = sys.Retry(func() error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) })
	if errors.Is(err, unix.EWOULDBLOCK) {
		if pid := readHolder(f); pid > 0 {
			return nil, fmt.Errorf("%w (pid %d, lock %s)", errLocked, pid, f.Name())
		}
		return nil, fmt.Errorf("%w (lock %s)", errLocked, f.Name())
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", f.Name(), os.NewSyscallError("flock", err))
	}
	writeHolder(f)
	return f, nil
}

func writeHolder(f *os.File) {
	b := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if _, err := f.WriteAt(b, 0); err == nil {
		f.Truncate(int64(len(b)))
	}
}

func readHolder(f *os.File) int {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	for i := range n {
		if b[i] == '\n' {
			pid, _ := strconv.Atoi(string(b[:i]))
			return pid
		}
	}
	return 0
}
