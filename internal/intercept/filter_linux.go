package intercept

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data (64 bytes).
type seccompData struct {
	nr   int32
	arch uint32
	ip   uint64
	args [6]uint64
}

// notif is struct seccomp_notif (80 bytes). pid is a thread id in the
// receiver's pid namespace.
type notif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  seccompData
}

// notifResp is struct seccomp_notif_resp (24 bytes).
type notifResp struct {
	id    uint64
	val   int64
	error int32 // negative errno
	flags uint32
}

// notifAddfd is struct seccomp_notif_addfd (24 bytes).
type notifAddfd struct {
	id         uint64
	flags      uint32
	srcfd      uint32
	newfd      uint32
	newfdFlags uint32
}

// notifSizes is struct seccomp_notif_sizes.
type notifSizes struct {
	notif, resp, data uint16
}

// Offsets into struct seccomp_data that the filter loads.
const (
	offNr       = 0
	offArch     = 4
	offArg1Low  = 16 + 8 // args[1], low 32 bits on a little-endian machine
	filterFlags = unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
)

// buildFilter returns the cBPF program: bind and listen notify the
// supervisor, shutdown notifies unless how == SHUT_WR (per-connection
// half-closes stay fast), and every other system call is allowed by a
// constant path, which the kernel's action cache can skip.
func buildFilter() []unix.SockFilter {
	const (
		ld    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		allow = 8
	)
	return []unix.SockFilter{
		0: {Code: ld, K: offArch},
		1: {Code: jeq, K: auditArch, Jt: 0, Jf: allow - 2},
		2: {Code: ld, K: offNr},
		3: {Code: jeq, K: unix.SYS_BIND, Jt: 9 - 4, Jf: 0},
		4: {Code: jeq, K: unix.SYS_LISTEN, Jt: 9 - 5, Jf: 0},
		5: {Code: jeq, K: unix.SYS_SHUTDOWN, Jt: 0, Jf: allow - 6},
		6: {Code: ld, K: offArg1Low},
		7: {Code: jeq, K: unix.SHUT_WR, Jt: allow - 8, Jf: 9 - 8},
		8: {Code: ret, K: unix.SECCOMP_RET_ALLOW},
		9: {Code: ret, K: unix.SECCOMP_RET_USER_NOTIF},
	}
}

// Compile-time size checks against the uapi layouts.
var (
	_ [80 - unsafe.Sizeof(notif{})]byte
	_ [unsafe.Sizeof(notif{}) - 80]byte
	_ [24 - unsafe.Sizeof(notifResp{})]byte
	_ [unsafe.Sizeof(notifAddfd{}) - 24]byte
)
