# bench-peers: bertstream's CPU throughput side by side with ONNX Runtime's and
# PyTorch's (bench/cmd/peers, on package bench/peers), written to
# bench/results/cpu-peers.{json,md,png}.
#
#   make bench-peers                                        # base, B 1,8,32 x T 32,128,384, 2 threads
#   make bench-peers PEERS_FLAGS='-shapes base:8x128,base:1x128 -rounds 3'
#
# Installs what the peers need when it is missing: Debian's python3-torch
# (for the PyTorch peer and the ONNX export), python3-onnx (for the INT8
# model of the ONNX Runtime peer, bench/peers/quantize_onnx.py), onnxruntime-node from
# bench/peers/package-lock.json, and Debian's OpenBLAS unpacked under
# bench/peers/.cache for PyTorch alone. The driver exports the ONNX models
# into bench/peers/.cache as it needs them.

PEERS_DIR := bench/peers
PEERS_CACHE := $(PEERS_DIR)/.cache
PEERS_PYTHON ?= /usr/bin/python3
PEERS_FLAGS ?=
# Debian's torch links libblas.so.3, which is the reference BLAS unless an
# optimized one is installed (libtorch recommends OpenBLAS): the PyTorch peer
# gets Debian's OpenBLAS first on its LD_LIBRARY_PATH, which leaves the
# system's BLAS alone for everyone else on the machine. The OpenMP build,
# because it shares torch's OpenMP threads; the pthreads build adds two
# spinning threads of its own that stall torch's between BLAS calls.
PEERS_OPENBLAS := $(PEERS_CACHE)/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp

.PHONY: bench-peers bench-peers-deps

bench-peers: build bench-peers-deps
	$(GO) run ./bench/cmd/peers -python $(PEERS_PYTHON) -blas-dir $(PEERS_OPENBLAS) $(PEERS_FLAGS)

bench-peers-deps: $(PEERS_DIR)/node_modules/.package-lock.json $(PEERS_OPENBLAS)/libblas.so.3
	@$(PEERS_PYTHON) -c 'import torch' 2>/dev/null || { \
	  echo "$(PEERS_PYTHON) cannot import torch: installing Debian's python3-torch"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch; }; }
	@$(PEERS_PYTHON) -c 'import onnx' 2>/dev/null || { \
	  echo "$(PEERS_PYTHON) cannot import onnx: installing Debian's python3-onnx"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-onnx || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-onnx; }; }

# onnxruntime-node's install script only fetches GPU extras (which cannot be
# downloaded here); its CPU library ships inside the package.
$(PEERS_DIR)/node_modules/.package-lock.json: $(PEERS_DIR)/package-lock.json
	cd $(PEERS_DIR) && npm ci --ignore-scripts --no-audit --no-fund

$(PEERS_OPENBLAS)/libblas.so.3:
	mkdir -p $(PEERS_CACHE)/debs
	cd $(PEERS_CACHE)/debs && { apt-get download libopenblas0-openmp || \
	  { apt-get update && apt-get download libopenblas0-openmp; }; }
	dpkg -x $$(ls -t $(PEERS_CACHE)/debs/libopenblas0-openmp_*.deb | head -1) $(PEERS_CACHE)/openblas
	touch $@
