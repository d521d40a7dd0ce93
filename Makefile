# bertstream: build, test and run. Targets contributed by areas of the
# project live in mk/*.mk and are included below.

GO ?= go
BIN := bin/bertstream
export CGO_ENABLED ?= 0

# Checks .ci/run adds after `make test`; areas append to it in mk/*.mk.
CI_EXTRA := fuzz

-include mk/*.mk

.PHONY: all build test vet fmt-check fuzz demo bench clean ci ci-extra

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

ci: test ci-extra
ci-extra: $(CI_EXTRA)

# Short smoke run of every fuzz target; FUZZTIME=10m for a real run.
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin dist

