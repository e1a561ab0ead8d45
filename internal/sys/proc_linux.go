package sys

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Children lists the child pids of every thread of process pid, from
// /proc/PID/task/*/children; a process that is gone has none.
func Children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, _ := ReadDirNames(dir)
	var out []int
	for _, t := range tasks {
		b, err := ReadProcFile(dir + "/" + t + "/children")
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(s); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// ProcPids translates pids between the caller's pid namespace, in which
// pidfd_open(2), kill(2) and waitid(2) name processes, and the namespace of
// the procfs mounted on /proc, in which /proc/PID, task/TID/children and a
// pidfd's fdinfo name them. The two differ when hotswap runs in a pid
// namespace of its own without a /proc mounted for it (unshare --pid
// --fork, without --mount-proc): /proc/PID is then some other process.
// Level is the index of the caller's namespace in an NSpid line, which
// lists a process's pid in the procfs namespace first and then in each
// namespace below it; 0 when the two are the same.
type ProcPids struct{ Level int }

// NewProcPids returns the caller's level, read from /proc/self/status the
// first time it succeeds. A process never changes its own pid namespace,
// and hotswap neither mounts /proc nor leaves its mount namespace, so the
// answer holds for the life of the process; the drain asks at every
// reload, and the kernel formats all of status to answer.
func NewProcPids() (ProcPids, error) {
	procPidsMu.Lock()
	defer procPidsMu.Unlock()
	if procPidsOK {
		return procPids, nil
	}
	b, err := ReadProcFile("/proc/self/status")
	if err != nil {
		return ProcPids{}, err
	}
	ns := nsPids(string(b), "NSpid:")
	procPids, procPidsOK = ProcPids{Level: max(len(ns)-1, 0)}, true
	return procPids, nil
}

var (
	procPidsMu sync.Mutex
	procPids   ProcPids
	procPidsOK bool
)

// Same reports whether /proc names processes by the caller's pids.
func (p ProcPids) Same() bool { return p.Level == 0 }

// FromProc returns the caller's pid for the process /proc names procPid,
// from its NSpid line; false if it is gone or outside the caller's
// namespace.
func (p ProcPids) FromProc(procPid int) (int, bool) {
	if p.Same() {
		return procPid, true
	}
	b, err := ReadProcFile("/proc/" + strconv.Itoa(procPid) + "/status")
	if err != nil {
		return 0, false
	}
	return p.pick(nsPids(string(b), "NSpid:"))
}

// Pidfd returns, from its fdinfo, the process pidfd refers to, both as
// the caller's pid and as /proc's; false if it has exited or is not in
// /proc's namespace.
func (p ProcPids) Pidfd(pidfd int) (pid, procPid int, ok bool) {
	b, err := ReadProcFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return 0, 0, false
	}
	ns := nsPids(string(b), "NSpid:")
	if len(ns) == 0 { // a kernel without CONFIG_PID_NS: one namespace
		ns = nsPids(string(b), "Pid:")
	}
	pid, ok = p.pick(ns)
	if !ok || ns[0] <= 0 {
		return 0, 0, false
	}
	return pid, ns[0], true
}

func (p ProcPids) pick(ns []int) (int, bool) {
	if p.Level >= len(ns) || ns[p.Level] <= 0 {
		return 0, false
	}
	return ns[p.Level], true
}

// nsPids parses the numbers of the line that starts with key.
func nsPids(text, key string) []int {
	for _, line := range strings.Split(text, "\n") {
		v, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		var out []int
		for _, f := range strings.Fields(v) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	return nil
}

// ReadProcFile reads a small file of /proc whole. It is os.ReadFile
// without the file's registration with Go's poller, which /proc refuses
// (epoll_ctl EPERM) after an F_GETFL/F_SETFL pair and before another: the
// drain reads such files at every reload.
func ReadProcFile(path string) ([]byte, error) {
	fd, err := RetryInt(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := RetryInt(func() (int, error) { return unix.Read(fd, b[len(b):cap(b)]) })
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// ReadDirNames lists the names in a directory of /proc (without "." and
// ".."), as os.ReadDir would, without the poller's registration attempts.
func ReadDirNames(path string) ([]string, error) {
	fd, err := RetryInt(func() (int, error) {
		return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := RetryInt(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, &os.PathError{Op: "getdents", Path: path, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
