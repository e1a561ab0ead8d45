package intercept

import "golang.org/x/sys/unix"

// auditArch is the seccomp_data.arch value of native system calls. AArch32
// compat calls do not match the filter and are allowed unchanged.
const auditArch = unix.AUDIT_ARCH_AARCH64

var errArch error
