# halo build, test and demo entry points. See README.md.
GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.Version=$(VERSION)
# Every plugins/<name> directory holding Go code is a plugin binary.
PLUGINS  := $(sort $(patsubst plugins/%/,%,$(dir $(wildcard plugins/*/*.go))))
SEEDS    ?= 20000

.PHONY: all build halo plugins test test-unit test-sdk test-integration lint proto proto-check demo bench bench-fs sim soak clean

all: build

build: halo plugins

halo:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/halo ./cmd/halo

plugins:
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do \
		echo "go build plugins/$$p"; \
		$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/plugins/$$p ./plugins/$$p || exit 1; \
	done

# test runs every test: unit, transcripts, the simulator's default seeds, the
# SDK module, the generated-code check, and (as root) the integration tests.
test: build lint proto-check test-unit test-sdk test-integration

# Unit tests: everything but the namespace-based integration tests.
test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v '/test/')

test-sdk:
	cd sdk && $(GO) test -count=1 ./...

# Integration tests need root (namespaces, FUSE, nftables); they skip loudly
# otherwise, and fail instead when HALO_REQUIRE_ROOT=1 (CI sets it) so a
# skipped integration test is never counted as a pass.
test-integration:
	HALO_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m ./test/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...

proto:
	./sdk/scripts/genproto.sh

# proto-check regenerates the protobuf code and fails if the committed copy
# is stale.
proto-check:
	@if [ -x sdk/scripts/genproto.sh ]; then \
		./sdk/scripts/genproto.sh && git diff --exit-code -- sdk/proto || \
		{ echo "generated protobuf code is stale: run make proto and commit"; exit 1; }; \
	fi

# sim replays one simulator seed: make sim SEED=1234
sim:
	$(GO) test -count=1 -v ./core/sim -args -seed=$(SEED)

# soak runs many more simulator seeds: make soak SEEDS=100000
soak:
	$(GO) test -count=1 ./core/sim -args -seeds=$(SEEDS)

# demo: make demo, or make demo DEMO=postgresql for the PostgreSQL variant.
demo: build
	DEMO=$(DEMO) ./scripts/demo.sh

bench: build
	./bench/run.sh

# bench-fs: the replicated filesystem benchmark alone (root; ~25 GB of disk;
# FSBENCH_FLAGS="-scale 0.05 -runs 1 ..." for a quick run).
bench-fs:
	./bench/run.sh fs

# bench-pgbench: pgbench TPS on a plain directory, on the replicated one
# (sync, peer in another namespace) and on the capture without a peer,
# side by side in one run (root, PostgreSQL 15; a few minutes).
.PHONY: bench-pgbench
bench-pgbench: build
	./bench/run.sh pgbench

clean:
	rm -rf $(BIN)
