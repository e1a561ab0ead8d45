# hotswap: make demo, make test (see README.md).
GO      ?= go
BIN     := bin
ADDR    ?= 127.0.0.1:8080
PIDFILE ?= $(CURDIR)/$(BIN)/hotswap-demo.pid

.PHONY: all build demo test test-quic test-containers deps vet race bench soak recipes chaos clean

all: build

# hotswap is built without cgo, as it ships: a static binary, without
# libc's pages in its memory (docs/architecture.md, "hotswap's own
# footprint"); --user and --group reach NSS through getent.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/hotswap ./cmd/hotswap
	CGO_ENABLED=0 $(GO) build -o $(BIN)/goapp ./examples/goapp
	$(GO) build -o $(BIN)/quicapp ./examples/quicapp

# demo runs hotswap with the example app on $(ADDR) in reuseport mode,
# gated by the app's health check through the public port.
demo: build
	@echo "hotswap is serving http://$(ADDR)/ (pid file $(PIDFILE))"
	@echo "  reload:  kill -HUP \$$(cat $(PIDFILE))    or: $(BIN)/hotswap reload --pidfile $(PIDFILE)"
	@echo "  status:  $(BIN)/hotswap status --pidfile $(PIDFILE)"
	@echo "  stop:    Ctrl-C, or kill -TERM \$$(cat $(PIDFILE))"
	$(BIN)/hotswap --listen http=tcp://$(ADDR) --mode reuseport --pidfile $(PIDFILE) \
		--ready http://$(ADDR)/healthz -- $(BIN)/goapp --version v1

deps:
	./scripts/deps.sh

# vet: go vet (also for darwin), go mod tidy -diff, staticcheck (installed
# when missing) and a few seconds of every fuzz target; see scripts/vet.sh.
vet:
	GO=$(GO) ./scripts/vet.sh

# test installs what the tests drive (as root), then runs every test.
test: deps vet
	$(GO) test -count=1 -timeout 15m ./...

# test-quic runs the QUIC reload tests at the issue's full scale: 200
# long-lived HTTP/3 connections over 20 reloads (make test runs 50 over 10,
# to fit the 2-core budget).
test-quic: deps
	HOTSWAP_QUIC_FULL=1 $(GO) test -count=1 -v -timeout 20m -run '^TestQUIC' ./cmd/hotswap

# test-containers: only the container tests (about 2.5 minutes here; make
# test runs them too, with the same 20 image swaps v1 -> v21 under load).
test-containers: deps
	HOTSWAP_CONTAINER_SWAPS=20 $(GO) test -count=1 -v -timeout 20m -run '^TestContainer' ./cmd/hotswap

race: deps
	$(GO) test -race -count=1 -timeout 20m ./...

# bench measures restarts, handover, data path and footprint side by side
# and writes docs/benchmarks.md (a few minutes; nginx from Debian).
bench: deps
	$(GO) run ./bench

# chaos: the randomized fault test over real processes (cmd/hotswap
# chaos_linux_test.go), STEPS in all (half per socket mode) at CLIENTS clients;
# SEED=N STEPS=N replays a run exactly (the seed is printed first). Then
# both steering scenarios (failed reloads, nginx in reuseport mode), 20
# times each. A passed run writes its figures to docs/chaos.md and into
# docs/benchmarks.md. make test runs a 150-step chaos run.
SEED    ?=
STEPS   ?= 200
CLIENTS ?= 16
chaos: deps
	HOTSWAP_CHAOS_SEED=$(SEED) HOTSWAP_CHAOS_STEPS=$(STEPS) HOTSWAP_CHAOS_CLIENTS=$(CLIENTS) \
		HOTSWAP_CHAOS_REPORT=$(CURDIR)/docs/chaos.md \
		$(GO) test -count=1 -v -timeout 60m -run '^TestChaos(Regressions)?$$' ./cmd/hotswap
	$(GO) test -count=20 -timeout 60m -run '^TestReusePortFailedReloadsLeakNothing$$' ./cmd/hotswap
	$(GO) test -count=20 -timeout 60m -run '^TestNginxReusePortReloads$$' ./examples/nginx

# recipes: only the server recipes of docs/servers.md (HAProxy, Puma,
# uWSGI, uvicorn, Node, Go; about two minutes). make test runs them too.
recipes: deps
	$(GO) test -count=1 -v -timeout 10m ./examples/recipes

# soak: 10,000 reloads in reuseport mode (about 10 minutes here), printing
# hotswap's CPU per reload, reload time, RSS, fds, threads and goroutines
# over the first and the last 100: they should be flat. The table goes
# into docs/soak.md and docs/benchmarks.md too.
soak: deps
	$(GO) run ./bench -soak 10000

clean:
	rm -rf $(BIN)
