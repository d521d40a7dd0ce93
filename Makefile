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
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash mk/fuzz.sh

# CPU benchmarks of this machine: every kernel version validated and timed
# against the FMA peak, then the base preset's throughput and latency at
# serving shapes and a batch of mixed lengths beside the same batch padded.
# `make bench-peers` (mk/bench.mk) adds ONNX Runtime and PyTorch side by side.
BENCH_THREADS ?= 2
bench: build
	$(BIN) bench --kernels all --threads $(BENCH_THREADS)
	$(BIN) bench --preset base --batch 1,8,32 --seq 32,128,384 --runs 5 --threads $(BENCH_THREADS)
	$(BIN) bench --preset nano,mini,micro,large --batch 8 --seq 128 --runs 5 --threads $(BENCH_THREADS)
	$(BIN) bench --preset base --batch 8 --seq 128 --min-len 10 --runs 10 --threads $(BENCH_THREADS)

clean:
	rm -rf bin dist

