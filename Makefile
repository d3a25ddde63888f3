# metership — build, test, benchmark, run.
# Needs only Go and gcc: Go modules (and the versitygw S3 server the tests
# use, pinned in tools/go.mod) come from the Go module proxy.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := bin
# Every Go module of the repository: "." (the agent), tools, export/sqltest,
# docker, ... as git knows them, so a new module is checked and tested
# without a Makefile change.
MODULES   := $(shell { git ls-files '*go.mod' 2>/dev/null || find . -name go.mod; } | \
               sed -e 's|^\./||' -e 's|go\.mod$$||' -e 's|/$$||' -e 's|^$$|.|' | sort -u)
SUBMODULES := $(filter-out .,$(MODULES))
# golangci-lint, pinned in its own tool module (tools/lint/go.mod, so its
# dependencies do not move versitygw's in tools/go.mod); go tool builds it
# once and caches it.
LINT      := $(GO) tool -modfile=$(CURDIR)/tools/lint/go.mod golangci-lint

.PHONY: all build agent plugin test test-modules test-sql test-docker test-observability prometheusrule check fmt vet tidy lint bench run clean

all: build

build: agent plugin

agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/metership ./agent

plugin:
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -ldflags '$(LDFLAGS)' -o $(BIN)/out_metership.so ./plugin

# The whole suite with the race detector. Tests build and start their own
# versitygw S3 server and metering emulator; nothing needs installing.
test: test-modules
	$(GO) test -race -count=1 -timeout 15m ./...

# The tests of every other module (export/sqltest, docker, ...): ./... from
# the root stops at a nested go.mod. Modules without packages (tools) are
# skipped; cgo is on for export/sqltest's DuckDB.
test-modules:
	@set -e; for m in $(SUBMODULES); do \
		[ -n "$$(cd $$m && $(GO) list ./... 2>/dev/null)" ] || continue; \
		echo "cd $$m && go test ./..."; \
		(cd $$m && CGO_ENABLED=1 $(GO) test -count=1 -timeout 10m ./...); \
	done

# The export SQL run on DuckDB (cgo) against the runner's output: its own
# module (export/sqltest), so the agent stays cgo-free and DuckDB-free.
test-sql:
	cd export/sqltest && CGO_ENABLED=1 $(GO) test -count=1 -timeout 10m ./...

# The manifest and Dockerfile tests: their own module (docker), so the
# agent's module graph has no k8s.io.
test-docker:
	cd docker && $(GO) test -count=1 ./...

# The Grafana dashboard and Prometheus rules (docker/observability) checked
# with Prometheus' own parser and rule loader and against the metrics a
# running agent and jobs server expose: its own module, so the agent does
# not depend on Prometheus itself (test-modules runs it too).
test-observability:
	cd docker/observability && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

# docker/observability/prometheusrule.yaml: the groups of alerts.yaml in a
# Kubernetes PrometheusRule (a test fails when they differ).
prometheusrule:
	cd docker/observability && { \
	  printf '%s\n' '# Generated from alerts.yaml by `make prometheusrule`: the same rules as a' \
	    '# Prometheus Operator PrometheusRule. Edit alerts.yaml, then regenerate.' \
	    '#' '#   kubectl apply -n monitoring -f docker/observability/prometheusrule.yaml' \
	    '#' '# The Prometheus resource picks it up when its ruleSelector matches these' \
	    '# labels (kube-prometheus-stack: release: <its release name>).' \
	    'apiVersion: monitoring.coreos.com/v1' 'kind: PrometheusRule' 'metadata:' \
	    '  name: metership' '  labels:' '    app.kubernetes.io/name: metership' \
	    '    app.kubernetes.io/component: alerting' 'spec:'; \
	  sed -n '/^groups:/,$$p' alerts.yaml | sed 's/^/  /'; \
	} > prometheusrule.yaml

# Static checks: formatting, vet, go.mod/go.sum tidy in every module and
# golangci-lint (.golangci.yml) in every module with packages.
check: fmt vet tidy lint

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# go mod tidy -diff prints what tidy would change and fails; run
# `go mod tidy` in the module it names.
tidy:
	@fail=0; for m in $(MODULES); do \
		(cd $$m && $(GO) mod tidy -diff) || { echo "go.mod not tidy in $$m"; fail=1; }; \
	done; exit $$fail

lint:
	@set -e; for m in $(MODULES); do \
		[ -n "$$(cd $$m && $(GO) list ./... 2>/dev/null)" ] || continue; \
		echo "cd $$m && golangci-lint run ./..."; \
		(cd $$m && $(LINT) run ./...); \
	done

# Benchmarks: records/s, MB/s, allocs/op and peak RSS (see README).
bench:
	./scripts/bench.sh

# The main job on embedded defaults: the metering emulator plus the agent
# tailing the bundled sample log into file://./out (Ctrl-C stops both).
run: agent
	./scripts/run-demo.sh

clean:
	rm -rf $(BIN) data out demo
