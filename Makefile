# metership — build, test, benchmark, run.
# Needs only Go and gcc: Go modules (and the versitygw S3 server the tests
# use, pinned in tools/go.mod) come from the Go module proxy.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := bin

.PHONY: all build agent plugin test test-sql test-observability prometheusrule check fmt vet bench run clean

all: build

build: agent plugin

agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/metership ./agent

plugin:
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -ldflags '$(LDFLAGS)' -o $(BIN)/out_metership.so ./plugin

# The whole suite with the race detector. Tests build and start their own
# versitygw S3 server and metering emulator; nothing needs installing.
test: test-sql test-observability
	$(GO) test -race -count=1 -timeout 15m ./...

# The export SQL run on DuckDB (cgo) against the runner's output: its own
# module (export/sqltest), so the agent stays cgo-free and DuckDB-free.
test-sql:
	cd export/sqltest && CGO_ENABLED=1 $(GO) test -count=1 -timeout 10m ./...

# The Grafana dashboard and Prometheus rules (docker/observability) checked
# with Prometheus' own parser and rule loader and against the metrics a
# running agent and jobs server expose: its own module, so the agent does
# not depend on Prometheus itself.
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
