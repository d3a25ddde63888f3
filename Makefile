# metership — build, test, benchmark, run.
# Needs only Go and gcc: Go modules (and the versitygw S3 server the tests
# use, pinned in tools/go.mod) come from the Go module proxy.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := bin

.PHONY: all build agent plugin test test-sql check fmt vet bench run clean

all: build

build: agent plugin

agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/metership ./agent

plugin:
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -ldflags '$(LDFLAGS)' -o $(BIN)/out_metership.so ./plugin

# The whole suite with the race detector. Tests build and start their own
# versitygw S3 server and metering emulator; nothing needs installing.
test: test-sql
	$(GO) test -race -count=1 -timeout 15m ./...

# The export SQL run on DuckDB (cgo) against the runner's output: its own
# module (export/sqltest), so the agent stays cgo-free and DuckDB-free.
test-sql:
	cd export/sqltest && CGO_ENABLED=1 $(GO) test -count=1 -timeout 10m ./...

# Static checks: formatting and vet.
check: fmt vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Benchmarks: records/s, MB/s, allocs/op and peak RSS (see README).
bench:
	./scripts/bench.sh

# The main job on embedded defaults: the metering emulator plus the agent
# tailing the bundled sample log into file://./out (Ctrl-C stops both).
run: agent
	./scripts/run-demo.sh

clean:
	rm -rf $(BIN) data out demo
