# pgmoat — see README.md. `make run` and `make test` are the two commands a
# fresh machine needs.

GO          ?= go
BIN         := bin/pgmoat
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# UPSTREAM: the PostgreSQL server `make run` puts pgmoat in front of; empty
# starts a throwaway local one.
UPSTREAM    ?=
CONFIG      ?= examples/pgmoat.yaml
# Test flags: CI runs the whole suite once, uncached.
TESTFLAGS   ?= -count=1 -timeout 30m

.PHONY: build run test deps lint bench bench-quick pgo clean

build:
	@test -x $(BIN) || echo "Building pgmoat: the first build compiles libpg_query (PostgreSQL's parser, C) and takes several minutes; later builds take seconds."
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/pgmoat

run: build
	UPSTREAM='$(UPSTREAM)' CONFIG='$(CONFIG)' scripts/run.sh

# deps installs what the tests need on a fresh machine (PostgreSQL server
# and client and promtool from apt when missing, the node-postgres test
# client from npm).
deps:
	scripts/ensure-deps.sh

test: deps
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...
	# Once more with the event loop off, so the goroutine relay stays
	# tested for every kind of session, not only for TLS and hand-offs.
	# The test harnesses (not pgmoat) read it into limits.event_loops.
	# The attack corpus judges the policy, not the relay: it runs once.
	PGMOAT_EVENT_LOOPS=0 PGMOAT_ATTACKS=skip $(GO) test $(TESTFLAGS) ./proxy/ ./e2e/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: build deps
	bench/run.sh

bench-quick: build deps
	QUICK=1 bench/run.sh

# pgo refreshes cmd/pgmoat/default.pgo, the CPU profile every `go build`
# of pgmoat optimises with (profile-guided optimisation): a build without
# it runs the bench's pgbench matrix with its CPU profile on. Refresh it
# when the relay's or the enforcement's hot path changes (bench/README.md,
# "The code a statement runs does not fit the instruction cache").
pgo: deps
	CGO_ENABLED=1 $(GO) build -pgo=off -trimpath -o bin/pgmoat-nopgo ./cmd/pgmoat
	rm -rf bin/pgo
	bench/run.sh -out bin/pgo -profile bin/pgo -pgmoat bin/pgmoat-nopgo -targets pgmoat \
		-scripts select,tpcb -modes simple,extended,prepared -clients 1,8,64 -rounds 2 -duration 4s \
		-idle-sessions 0 -pending-holds 0 -stream-bytes 0 -connections 0 -guarded 0 -count-syscalls=false
	cp bin/pgo/pgmoat.cpu.pprof cmd/pgmoat/default.pgo

clean:
	rm -rf bin
