package fdpass

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ShimArgs returns the argv of the shim process that will exec argv.
func ShimArgs(argv []string) []string {
	return append([]string{"hotswap-shim"}, argv...)
}

// RunShim is the whole life of the exec shim: it sets LISTEN_PID to its own
// pid (which the target keeps across execve), removes the shim's private
// variables, calls before on the thread that will exec (seccomp filters and
// no_new_privs are per thread), and execs os.Args[1:]. It returns only on
// failure, with the exit status a shell would use (126 or 127) and the error.
func RunShim(before func() error) (int, error) {
	runtime.LockOSThread() // never unlocked: execve must run on this thread.
	if len(os.Args) < 2 {
		return ExitCannotExec, errors.New("shim: no command")
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		return ExitNotFound, fmt.Errorf("exec %s: %w", os.Args[1], err)
	}
	env := shimEnv(os.Environ(), os.Getpid())
	if before != nil {
		if err := before(); err != nil {
			return ExitCannotExec, fmt.Errorf("prepare %s: %w", os.Args[1], err)
		}
	}
	err = unix.Exec(path, os.Args[1:], env)
	if errors.Is(err, fs.ErrNotExist) {
		return ExitNotFound, fmt.Errorf("exec %s: %w", path, err)
	}
	return ExitCannotExec, fmt.Errorf("exec %s: %w", path, err)
}

// shimEnv drops the shim's private variables and sets LISTEN_PID when
// descriptors are being handed over.
func shimEnv(env []string, pid int) []string {
	out := env[:0:0]
	handoff := false
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case ShimEnv, InterceptFDEnv, ListenPID:
			continue
		case ListenFDs:
			handoff = true
		}
		out = append(out, kv)
	}
	if handoff {
		out = append(out, ListenPID+"="+strconv.Itoa(pid))
	}
	return out
}
