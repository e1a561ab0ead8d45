package sys

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Seccomp calls seccomp(2) with operation op, flags and a pointer argument
// (a sock_fprog, a seccomp_notif_sizes, or nil). It returns the syscall's
// non-negative result, which for SECCOMP_FILTER_FLAG_NEW_LISTENER is the
// notification fd.
func Seccomp(op, flags uint, arg unsafe.Pointer) (int, error) {
	return RetryInt(func() (int, error) {
		r, _, errno := unix.Syscall(unix.SYS_SECCOMP, uintptr(op), uintptr(flags), uintptr(arg))
		if errno != 0 {
			return -1, os.NewSyscallError("seccomp", errno)
		}
		return int(r), nil
	})
}

// IoctlPtr calls ioctl(2) on fd with request req and a pointer argument.
// name names the request in the returned *os.SyscallError.
func IoctlPtr(name string, fd int, req uint, arg unsafe.Pointer) (int, error) {
	return RetryInt(func() (int, error) {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		if errno != 0 {
			return -1, os.NewSyscallError(name, errno)
		}
		return int(r), nil
	})
}

// KcmpFile reports whether fd1 in process pid1 and fd2 in process pid2 refer
// to the same open file description (kcmp(2) with KCMP_FILE).
func KcmpFile(pid1, pid2, fd1, fd2 int) (bool, error) {
	const kcmpFile = 0 // KCMP_FILE, not in x/sys
	r, err := RetryInt(func() (int, error) {
		r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
		if errno != 0 {
			return -1, os.NewSyscallError("kcmp", errno)
		}
		return int(r), nil
	})
	return r == 0, err
}
