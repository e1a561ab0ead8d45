package main

import (
	"github.com/hotswap-dev/hotswap/supervisor"
	"github.com/spf13/pflag"
)

// interceptOptions are the flags of seccomp bind interception.
type interceptOptions struct{}

func (i *interceptOptions) addFlags(fs *pflag.FlagSet) {}

func (i *interceptOptions) apply(cfg *supervisor.Config) error { return nil }

// shimPrepare runs in the exec shim on the thread that will exec the target.
func shimPrepare() error { return nil }
