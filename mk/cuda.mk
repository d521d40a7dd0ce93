# CUDA backend: the toolkit, the kernels' PTX, the checks CI runs on every
# submission, and the bundle that a GPU machine without Go runs. See
# cuda/README.md.

NVCC ?= nvcc
# kernels/gpu.Arch: the oldest GPU with BF16 tensor cores (A100); the
# driver compiles the PTX for newer ones.
CUDA_ARCH := compute_80
NVCC_FLAGS := -ptx -arch=$(CUDA_ARCH) -O3
CUDA_SRCS := $(wildcard kernels/gpu/*.cu)
CUDA_PTX_DIR := kernels/gpu/ptx

# Debian's non-free nvidia-cuda-toolkit is CUDA 11.8: gorgonia.org/cu
# v0.9.6 compiles against its headers (not CUDA 13's). It installs
# cuda.h in /usr/include and, for linking without a driver, a libcuda
# stub in the multiarch stubs directory.
CUDA_APT_SOURCES := /etc/apt/sources.list.d/nonfree.sources
CUDA_INCLUDE ?= /usr/include
CUDA_STUBS ?= $(firstword $(wildcard /usr/lib/$(shell gcc -dumpmachine 2>/dev/null)/stubs /usr/local/cuda/lib64/stubs) /usr/lib/x86_64-linux-gnu/stubs)
# The Makefile exports CGO_ENABLED=0; the cuda package is cgo.
CUDA_GO := CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -I$(CUDA_INCLUDE)" CGO_LDFLAGS="-L$(CUDA_STUBS)" $(GO)

CUDA_BIN := bin/bertstream-cuda
GPU_BUNDLE := dist/gpu

CI_EXTRA += cuda-check

.PHONY: cuda-toolkit kernels cuda-check build-cuda cuda-test gpu-bundle

# Idempotent: nothing to do when nvcc is on the PATH.
cuda-toolkit:
	@if command -v $(NVCC) >/dev/null 2>&1; then exit 0; fi; \
	set -e; \
	uri=$$(awk '/^URIs:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources); \
	key=$$(awk '/^Signed-By:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources); \
	printf 'Types: deb\nURIs: %s\nSuites: bookworm\nComponents: contrib non-free\nSigned-By: %s\n' "$$uri" "$$key" > $(CUDA_APT_SOURCES); \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y nvidia-cuda-toolkit

# Regenerates the embedded PTX; commit the result.
kernels: cuda-toolkit
	@mkdir -p $(CUDA_PTX_DIR)
	@set -e; for f in $(CUDA_SRCS); do \
	  echo "nvcc $$f"; \
	  $(NVCC) $(NVCC_FLAGS) -o $(CUDA_PTX_DIR)/$$(basename $$f .cu).ptx $$f; \
	done

# Everything that can be checked without a GPU: every kernel compiles and
# its committed PTX is what nvcc makes of it now, the kernels compute what
# the CPU references do under the CPU emulation of CUDA
# (kernels/gpu/internal/emu), the cuda-tagged build vets and builds, the
# binary does not link cuBLAS (it loads it at run time), and the
# cuda-tagged tests pass (skipping, with the reason, what needs a device).
cuda-check: cuda-toolkit
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	for f in $(CUDA_SRCS); do \
	  echo "nvcc $$f"; \
	  $(NVCC) $(NVCC_FLAGS) -o $$tmp/$$(basename $$f .cu).ptx $$f; \
	done; \
	if ! diff -r -q $$tmp $(CUDA_PTX_DIR); then \
	  echo "$(CUDA_PTX_DIR) is not what nvcc makes of kernels/gpu/*.cu: run make kernels and commit the PTX"; exit 1; \
	fi
	$(CUDA_GO) test -count=1 -tags cuda ./kernels/gpu/...
	$(CUDA_GO) vet -tags cuda ./...
	$(CUDA_GO) build -tags cuda ./...
	$(CUDA_GO) build -tags cuda -o $(CUDA_BIN) ./cmd/bertstream
	@ldd $(CUDA_BIN)
	@if ldd $(CUDA_BIN) | grep -i cublas; then echo "$(CUDA_BIN) links cuBLAS; it must load it at run time"; exit 1; fi
	$(CUDA_GO) test -count=1 -tags cuda ./cuda/

build-cuda:
	$(CUDA_GO) build -tags cuda -trimpath -ldflags='-s -w' -o $(CUDA_BIN) ./cmd/bertstream

# The GPU tests and benchmarks on a machine with Go and a GPU.
cuda-test:
	$(CUDA_GO) test -count=1 -v -tags cuda ./cuda/
	$(CUDA_GO) test -count=1 -tags cuda -run '^$$' -bench . ./cuda/

# A folder (and a tarball of it) that a GPU machine without Go runs:
# dist/gpu/run.sh. See cuda/README.md.
gpu-bundle: cuda-toolkit
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/cuda $(GPU_BUNDLE)/testdata
	$(CUDA_GO) build -tags cuda -trimpath -ldflags='-s -w' -o $(GPU_BUNDLE)/bertstream ./cmd/bertstream
	$(CUDA_GO) test -c -tags cuda -trimpath -o $(GPU_BUNDLE)/cuda/cuda.test ./cuda/
	cp -r testdata/bert-tiny $(GPU_BUNDLE)/testdata/
	cp bench/gpu/run.sh bench/gpu/torch_peer.py cuda/README.md $(GPU_BUNDLE)/
	tar -C dist -czf dist/bertstream-gpu.tar.gz gpu
	@echo "$(GPU_BUNDLE) and dist/bertstream-gpu.tar.gz: copy to the GPU machine and run ./run.sh"
