package fdpass

import "os"

// Variables that only the supervisor and its exec shim use. The shim removes
// them before it execs the target.
const (
	// ShimEnv marks a hotswap process started as the exec shim.
	ShimEnv = "HOTSWAP_SHIM"
	// InterceptFDEnv names the descriptor on which the shim sends the
	// seccomp notification fd to the supervisor, when interception is on.
	InterceptFDEnv = "HOTSWAP_INTERCEPT_FD"
)

// IsShim reports whether this process was started as the exec shim.
func IsShim() bool { return os.Getenv(ShimEnv) == "1" }

// Exit codes of the shim when it cannot exec the target, as a shell does.
const (
	ExitCannotExec = 126
	ExitNotFound   = 127
)
