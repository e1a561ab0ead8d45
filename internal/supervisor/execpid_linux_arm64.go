package supervisor

import "golang.org/x/sys/unix"

// stackPointer is the stopped tracee's stack pointer.
func stackPointer(pid int) (uintptr, error) {
	var r unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &r); err != nil {
		return 0, err
	}
	return uintptr(r.Sp), nil
}
