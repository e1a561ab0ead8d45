package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// DefaultPathHelp describes [DefaultPath] in --help.
const DefaultPathHelp = "/run/hotswap/PID.sock as root, else $XDG_RUNTIME_DIR/hotswap/PID.sock or $TMPDIR/hotswap-UID/PID.sock"

// Dir is the directory of default control sockets: one socket per
// hotswap, named after its pid, so instances on one machine never collide.
func Dir() string { return DirOf(os.Geteuid(), os.Getenv) }

// DirOf is [Dir] for a process of uid with the environment getenv reads
// (a test asks a hotswap it started as another user).
func DirOf(uid int, getenv func(string) string) string {
	if uid == 0 {
		return "/run/hotswap"
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "hotswap")
	}
	tmp := getenv("TMPDIR") // as os.TempDir
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, fmt.Sprintf("hotswap-%d", uid))
}

// DefaultPath is the control socket of the hotswap with pid, in [Dir].
func DefaultPath(pid int) string {
	return filepath.Join(Dir(), strconv.Itoa(pid)+".sock")
}

// MakeDefaultPath creates the control directory, private to this
// user, and returns the socket path for pid. A directory another user owns
// or can write to is refused: in a shared $TMPDIR it could be a trap.
func MakeDefaultPath(pid int) (string, error) {
	dir := Dir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("control directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("control directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return "", fmt.Errorf("control directory %s: not a directory", dir)
	case ok && int(st.Uid) != os.Geteuid():
		return "", fmt.Errorf("control directory %s: owned by uid %d, not %d", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return "", fmt.Errorf("control directory %s: writable by others (mode %v)", dir, fi.Mode().Perm())
	}
	return DefaultPath(pid), nil
}

// Resolve finds the control socket: control (--control), else the
// default socket of the pid in pidfile (--pidfile), else the only live
// hotswap's default socket.
func Resolve(control, pidfile string) (string, error) {
	switch {
	case control != "" && pidfile != "":
		return "", errors.New("--control and --pidfile exclude each other")
	case control != "":
		return control, nil
	}
	if err := checkDir(Dir()); err != nil {
		return "", err
	}
	switch {
	case pidfile != "":
		b, err := os.ReadFile(pidfile)
		if err != nil {
			return "", fmt.Errorf("read pidfile: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return "", fmt.Errorf("pidfile %s: no pid in %q", pidfile, truncate(string(b), 20))
		}
		return DefaultPath(pid), nil
	}
	pids := liveControlPids(Dir())
	switch len(pids) {
	case 0:
		return "", fmt.Errorf("no hotswap control socket in %s: is hotswap running, as this user? (or pass --control PATH)", Dir())
	case 1:
		return DefaultPath(pids[0]), nil
	}
	return "", fmt.Errorf("%d hotswap instances run (pids %v): pass --control PATH or --pidfile PATH", len(pids), pids)
}

// liveControlPids lists the pids of dir's PID.sock files whose process
// lives; the files of a hotswap that was killed stay behind.
func liveControlPids(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".sock"))
		if err != nil || !strings.HasSuffix(e.Name(), ".sock") || e.Type() != os.ModeSocket {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// alive reports whether process pid exists (signal 0 checks without sending).
func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	defer p.Release()
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// checkDir refuses a control directory that someone else could have
// planted a socket in: it must be this uid's and writable by nobody else.
// In a shared $TMPDIR, another user can make $TMPDIR/hotswap-UID first and
// serve a fake hotswap there (the server's uid is checked too, at Dial).
// A directory that does not exist holds no socket, and is left to the
// caller to report.
func checkDir(dir string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return nil
	}
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		return fmt.Errorf("control directory %s is not a directory: not looking for hotswap there (pass --control PATH)", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("control directory %s is owned by uid %d, not %d: another user may have put a socket there; not looking for hotswap in it (pass --control PATH)", dir, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("control directory %s is writable by others (mode %#o): another user may have put a socket there; not looking for hotswap in it (pass --control PATH)", dir, st.Mode&0o7777)
	}
	return nil
}
