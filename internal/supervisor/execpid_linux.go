//go:build linux && (amd64 || arm64)

package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// A generation must find LISTEN_PID set to its own pid, which exists only
// once it has been forked: a shim (/bin/sh, or hotswap itself) sets it and
// execs the command, an exec that costs 1 ms here and 2-3 ms on a loaded
// machine at every reload. Without a shim, the command is exec'd directly
// with PTRACE_TRACEME: the kernel stops it after execve, before its first
// instruction, and hotswap writes the pid into the environment on its new
// stack (the first entry, listenPIDSlot), then detaches (docs/kernel.md,
// "LISTEN_PID without a shim").

// listenPIDSlot is LISTEN_PID as a directly exec'd generation receives it,
// the first entry of its environment: room for any pid, written in place
// before the generation runs. Left as it is, it names pid 0, which no
// process takes for its own.
var listenPIDSlot = fdpass.ListenPID + "=" + "0000000000"

// directExec reports whether the command at path may be exec'd without a
// shim. A setuid, setgid or file-capability executable may not: the kernel
// runs it without those privileges when it is traced by a process lacking
// CAP_SYS_PTRACE.
func (s *Supervisor) directExec(path string) bool {
	if s.noDirect || s.cfg.Intercept || s.cfg.Credential != nil {
		return false
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		return false
	}
	_, err = unix.Getxattr(path, "security.capability", nil)
	return errors.Is(err, unix.ENODATA)
}

// startDirect starts cmd, whose first environment entry is listenPIDSlot,
// traced, writes its pid into the slot while it is stopped after execve,
// and lets it run untraced. A start that could not be made so returns
// errNoDirect (wrapped) with nothing left running: the caller starts the
// command through a shim instead.
func startDirect(cmd *exec.Cmd) error {
	if len(cmd.Env) == 0 || cmd.Env[0] != listenPIDSlot {
		return fmt.Errorf("%w: no LISTEN_PID slot", errNoDirect)
	}
	// The tracer is the thread that forked: every ptrace call below must
	// be made on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	attr := syscall.SysProcAttr{}
	if cmd.SysProcAttr != nil {
		attr = *cmd.SysProcAttr
	}
	attr.Ptrace = true
	cmd.SysProcAttr = &attr
	if err := cmd.Start(); err != nil {
		// PTRACE_TRACEME refused (ptrace_scope, seccomp, an LSM, hotswap
		// itself traced: EPERM, EACCES or ENOSYS), or an exec error, which
		// the shim reports the way it always has (a binary being replaced
		// right now, ETXTBSY, is no reason to give up on ptrace).
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%w: %w: %w", errNoDirect, errNoTrace, err)
		}
		return fmt.Errorf("%w: %w", errNoDirect, err)
	}
	pid := cmd.Process.Pid
	if err := writeListenPID(pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("%w: %w: write LISTEN_PID into pid %d: %w", errNoDirect, errNoTrace, pid, err)
	}
	return nil
}

// maxStops bounds the signal stops passed on before the exec's own.
const maxStops = 8

// writeListenPID waits until pid is stopped at its first instruction (the
// SIGTRAP execve sends a tracee), writes pid into the LISTEN_PID slot and
// detaches. A signal that reaches the process first is passed on.
func writeListenPID(pid int) error {
	for range maxStops {
		sig, err := waitTraced(pid)
		if err != nil {
			return err
		}
		if sig == unix.SIGTRAP {
			if err := fillSlot(pid); err != nil {
				return err
			}
			return os.NewSyscallError("ptrace detach", unix.PtraceDetach(pid))
		}
		if err := unix.PtraceCont(pid, int(sig)); err != nil {
			return os.NewSyscallError("ptrace cont", err)
		}
	}
	return fmt.Errorf("more than %d signal stops before its first instruction", maxStops)
}

// CLD_TRAPPED is si_code of a traced child's stop.
const cldTrapped = 4

// waitTraced waits until pid stops and returns the signal, without reaping
// it if it exited instead (its cmd.Wait does).
func waitTraced(pid int) (syscall.Signal, error) {
	var si siginfoChild
	err := sys.Retry(func() error {
		return unix.Waitid(unix.P_PID, pid, (*unix.Siginfo)(unsafe.Pointer(&si)), unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT, nil)
	})
	if err != nil {
		return 0, os.NewSyscallError("waitid", err)
	}
	if si.Code != cldTrapped {
		return 0, errors.New("exited before its first instruction")
	}
	return syscall.Signal(si.Status), nil
}

// fillSlot writes pid into the LISTEN_PID slot of the stopped tracee: the
// stack pointer names argc, then argv's pointers and a NULL, then envp's,
// the slot first. The pid is padded with NULs to the slot's length.
func fillSlot(pid int) error {
	sp, err := stackPointer(pid)
	if err != nil {
		return os.NewSyscallError("ptrace getregset", err)
	}
	const ws = 8 // amd64 and arm64
	argc, err := peekWord(pid, sp)
	if err != nil {
		return err
	}
	if argc > 1<<20 {
		return fmt.Errorf("argc %d at the stack pointer", argc)
	}
	envp0, err := peekWord(pid, sp+ws*(uintptr(argc)+2))
	if err != nil {
		return err
	}
	got := make([]byte, len(listenPIDSlot))
	if _, err := unix.PtracePeekData(pid, uintptr(envp0), got); err != nil {
		return os.NewSyscallError("ptrace peekdata", err)
	}
	if string(got) != listenPIDSlot {
		return fmt.Errorf("first environment entry is %q, not the LISTEN_PID slot", got)
	}
	val := []byte(fdpass.ListenPID + "=" + strconv.Itoa(pid))
	if len(val) > len(listenPIDSlot) {
		return fmt.Errorf("pid %d does not fit the LISTEN_PID slot", pid)
	}
	val = append(val, bytes.Repeat([]byte{0}, len(listenPIDSlot)-len(val))...)
	if _, err := unix.PtracePokeData(pid, uintptr(envp0), val); err != nil {
		return os.NewSyscallError("ptrace pokedata", err)
	}
	return nil
}

// peekWord reads the tracee's word at addr.
func peekWord(pid int, addr uintptr) (uint64, error) {
	var b [8]byte
	if _, err := unix.PtracePeekData(pid, addr, b[:]); err != nil {
		return 0, os.NewSyscallError("ptrace peekdata", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}
