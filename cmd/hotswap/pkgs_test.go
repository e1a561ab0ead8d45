package main

import "github.com/hotswap-dev/hotswap/internal/proctest"

// The main packages the tests build and run.
const (
	hotswapPkg = proctest.HotswapPkg
	goappPkg   = "github.com/hotswap-dev/hotswap/examples/goapp"
)
