package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/intercept"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/spf13/pflag"
)

// interceptOptions are the flags of seccomp bind interception.
//
// Interception is an explicit flag, never switched on by itself: it sets
// no_new_privs on the child (setuid programs and file capabilities stop
// working in it), installs a filter that cannot be nested (a child that is
// itself a hotswap with --intercept, or a sandbox using seccomp user
// notification, fails to start), and whether a server would bind the
// address itself or take LISTEN_FDS cannot be known before it runs.
type interceptOptions struct {
	on bool
}

func (i *interceptOptions) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&i.on, "intercept", false, "for servers that cannot take inherited sockets (python -m http.server, static Go, busybox httpd): "+
		"when the command binds a --listen address itself, give it hotswap's socket instead "+
		"(seccomp user notification; Linux 5.9 or later; tcp and udp listeners only; the command runs with no_new_privs "+
		"and is killed if hotswap dies; see docs/intercept.md)")
}

func (i *interceptOptions) apply(cfg *supervisor.Config) error {
	if !i.on {
		return nil
	}
	if err := intercept.Supported(); err != nil {
		return fmt.Errorf("--intercept needs Linux 5.9 or later with seccomp user notification: %w", err)
	}
	for _, l := range cfg.Listeners {
		switch l.Network {
		case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		default:
			return fmt.Errorf("--intercept: listener %s: only tcp and udp addresses can be intercepted", l)
		}
	}
	cfg.Intercept = true
	return nil
}

// shimPrepare runs in the exec shim on the thread that will exec the target:
// with --intercept it installs the seccomp filter there and sends its
// notification fd to the supervisor.
func shimPrepare() error {
	v, ok := os.LookupEnv(fdpass.InterceptFDEnv)
	if !ok {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < fdpass.FirstFD {
		return fmt.Errorf("%s=%q is not a descriptor number", fdpass.InterceptFDEnv, v)
	}
	err = intercept.InstallAndSend(fd)
	if errors.Is(err, intercept.ErrNested) {
		return fmt.Errorf("intercept binds: the command already runs under a seccomp notification listener (hotswap --intercept or a sandbox above it), which cannot be nested: %w", err)
	}
	if err != nil {
		return fmt.Errorf("intercept binds: %w", err)
	}
	return nil
}
