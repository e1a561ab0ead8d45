package main

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/supervisor"
	"github.com/spf13/pflag"
)

// controlOptions are the flags of the control socket and metrics.
type controlOptions struct{}

func (c *controlOptions) addFlags(fs *pflag.FlagSet) {}

// start serves the control plane for sup until ctx is done; stop asks
// hotswap to stop gracefully.
func (c *controlOptions) start(ctx context.Context, sup *supervisor.Supervisor, log hclog.Logger, stop func(error)) error {
	return nil
}

// subcommand runs `hotswap NAME ...` when args[0] names a subcommand.
func subcommand(args []string) (code int, ok bool) { return 0, false }
