# bertstream: build, test and run. Targets contributed by areas of the
# project live in mk/*.mk and are included below.

GO ?= go
BIN := bin/bertstream
export CGO_ENABLED ?= 0

.PHONY: all build test vet fmt-check fuzz demo bench clean

all: build

build:
	$(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/bertstream

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The test command of the README: everything a fresh clone needs comes from
# the Go module proxy; tests that need a tool this machine lacks skip and
# say so.
test: fmt-check vet
	$(GO) test -count=1 ./...

clean:
	rm -rf bin dist

-include mk/*.mk
