package main

// The main packages the tests build and run.
const (
	hotswapPkg = "github.com/hotswap-dev/hotswap/cmd/hotswap"
	goappPkg   = "github.com/hotswap-dev/hotswap/examples/goapp"
)
