package fdpass

import (
	"strconv"
	"strings"
)

// Environment variables of the hand-off protocols, spelled as on the wire.
const (
	ListenFDs      = "LISTEN_FDS"
	ListenPID      = "LISTEN_PID"
	ListenFDNames  = "LISTEN_FDNAMES"
	NotifySocket   = "NOTIFY_SOCKET"
	Nginx          = "NGINX"
	EinhornFDCount = "EINHORN_FD_COUNT"
	einhornFDPfx   = "EINHORN_FD_"

	// Generation is hotswap's own: the number of the generation, from 1.
	Generation = "HOTSWAP_GENERATION"
	// Worker and Workers are set for a worker pool (--workers): this
	// process's place in its generation's pool, 0 to Workers-1, and the
	// pool's size.
	Worker  = "HOTSWAP_WORKER"
	Workers = "HOTSWAP_WORKERS"
	// QUICCID is the connection-ID layout a QUIC server must use on its
	// UDP listeners for its connections to survive a reload: see [CIDLayout].
	QUICCID = "HOTSWAP_QUIC_CID"
	// ProbeSource is given to an exec: readiness check, not to a
	// generation: the address (IP:PORT) a probe of a UDP listener in
	// reuseport mode must send from to reach the generation being gated.
	ProbeSource = "HOTSWAP_PROBE_SOURCE"
	hotswapPfx  = "HOTSWAP_"

	// tableflipPfx starts cloudflare/tableflip's TABLEFLIP_HAS_PARENT_7DIU3,
	// which a supervisor that upgraded itself with tableflip inherits: a
	// child that uses tableflip too (a nested hotswap, many Go servers)
	// would take its descriptors 3 and 4 for tableflip's pipes and fail.
	tableflipPfx = "TABLEFLIP_"
)

// FirstFD is the descriptor number of the first inherited listener
// (SD_LISTEN_FDS_START).
const FirstFD = 3

// ChildEnv returns base without any variable of the hand-off protocols that
// hotswap itself inherited (LISTEN_*, NOTIFY_SOCKET, NGINX, EINHORN_*,
// HOTSWAP_*, TABLEFLIP_*), followed by the variables that hand names[i] over as fd
// FirstFD+i to generation gen, and then extra. LISTEN_PID is left to the
// exec shim, which alone knows the child's pid. Names must not contain ':'.
func ChildEnv(base, names []string, gen int, extra ...string) []string {
	env := make([]string, 0, len(base)+len(names)+len(extra)+6)
	for _, kv := range base {
		if !inherited(kv) {
			env = append(env, kv)
		}
	}
	var nginx strings.Builder
	for i := range names {
		nginx.WriteString(strconv.Itoa(FirstFD + i))
		nginx.WriteByte(';')
		env = append(env, einhornFDPfx+strconv.Itoa(i)+"="+strconv.Itoa(FirstFD+i))
	}
	env = append(env,
		ListenFDs+"="+strconv.Itoa(len(names)),
		ListenFDNames+"="+strings.Join(names, ":"),
		Nginx+"="+nginx.String(),
		EinhornFDCount+"="+strconv.Itoa(len(names)),
		Generation+"="+strconv.Itoa(gen),
	)
	return append(env, extra...)
}

// inherited reports whether kv belongs to a hand-off protocol and so must
// not leak from hotswap's own environment into a child.
func inherited(kv string) bool {
	name, _, _ := strings.Cut(kv, "=")
	switch name {
	case NotifySocket, Nginx:
		return true
	}
	for _, p := range []string{"LISTEN_", "EINHORN_", hotswapPfx, tableflipPfx} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
