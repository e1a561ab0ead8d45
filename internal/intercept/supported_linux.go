package intercept

import (
	"fmt"
	"unsafe"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// minMajor.minMinor is the oldest kernel with everything Serve uses:
// SECCOMP_IOCTL_NOTIF_ADDFD (5.9), which came after POLLHUP on the listener
// (5.8), pidfd_getfd (5.6) and SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5).
const minMajor, minMinor = 5, 9

// Supported reports whether this machine can intercept binds: nil, or an
// error saying what is missing.
func Supported() error {
	if errArch != nil {
		return errArch
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("intercept: uname: %w", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("intercept: parse kernel release %q: %w", rel, err)
	}
	if major < minMajor || major == minMajor && minor < minMinor {
		return fmt.Errorf("intercept: seccomp ADDFD needs Linux %d.%d or later (running %d.%d)", minMajor, minMinor, major, minor)
	}
	sz, err := kernelSizes()
	if err != nil {
		return err
	}
	if int(sz.notif) < int(unsafe.Sizeof(notif{})) || int(sz.resp) < int(unsafe.Sizeof(notifResp{})) || sz.data != uint16(unsafe.Sizeof(seccompData{})) {
		return fmt.Errorf("intercept: unexpected seccomp notification sizes %d/%d/%d", sz.notif, sz.resp, sz.data)
	}
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	if _, err := sys.Seccomp(unix.SECCOMP_GET_ACTION_AVAIL, 0, unsafe.Pointer(&action)); err != nil {
		return fmt.Errorf("intercept: seccomp user notification unavailable: %w", err)
	}
	return nil
}

// kernelSizes asks the kernel for its notification struct sizes.
func kernelSizes() (notifSizes, error) {
	var sz notifSizes
	if _, err := sys.Seccomp(unix.SECCOMP_GET_NOTIF_SIZES, 0, unsafe.Pointer(&sz)); err != nil {
		return sz, fmt.Errorf("intercept: get seccomp notification sizes: %w", err)
	}
	return sz, nil
}
