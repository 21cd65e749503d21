# Slipway. `make run` serves with the embedded defaults; `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/slipway-dev/slipway/pkg/server.Version=$(VERSION)
export CGO_ENABLED := 0

.PHONY: all build run test test-go test-infra test-conformance test-cluster fuzz bench vet fmt clean deps

all: build

-include mk/*.mk

# deps installs what builds and tests need on a fresh machine (as root).
deps: deps-build

bin/slipway: FORCE
	$(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/slipway

build: bin/slipway bin/executor

# run installs what local builds need first (deps-build: a no-op when it is
# all there); when it cannot (not root, no package mirror), the server still
# serves and says why builds are off.
run: build
	@$(MAKE) --no-print-directory deps-build || echo "run: local builds stay off until the packages above are installed (as root: make deps)" >&2
	./bin/slipway serve --demo

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

test: build test-infra test-firestore test-conformance test-cluster
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# The cluster manifests are checked in their own module (infra/go.mod), so
# Knative's dependencies stay out of the service's go.mod.
test-infra:
	cd infra && $(GO) vet ./... && $(GO) test -count=1 ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

clean:
	rm -rf bin

FORCE:
