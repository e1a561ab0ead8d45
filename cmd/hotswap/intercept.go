package main

import (
	"fmt"

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
