package intercept

import "golang.org/x/sys/unix"

// auditArch is the seccomp_data.arch value of native system calls. x32
// (nr | 0x40000000) and i386 (int 0x80, socketcall) calls do not match the
// filter and are allowed unchanged.
const auditArch = unix.AUDIT_ARCH_X86_64

var errArch error
