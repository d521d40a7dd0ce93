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

# bench-startup: start-up of a bert-base-shaped classifier (random weights,
# F32 model.safetensors in STARTUP_DIR) beside ONNX Runtime's session
# creation and first answer on an export of the same shape, process by
# process, interleaved run by run (bertstream bench --load --ort-model):
# wall time and peak RSS as seen from outside, warm page cache. The export
# needs python3-torch (make bench-peers-deps installs it).
STARTUP_DIR ?= $(PEERS_CACHE)/startup-base
STARTUP_RUNS ?= 5

.PHONY: bench-startup

bench-startup: build $(PEERS_DIR)/node_modules/.package-lock.json
	$(PEERS_PYTHON) $(PEERS_DIR)/export_onnx.py --preset base
	test -f $(STARTUP_DIR)/model.safetensors || bin/bertstream bench --load --preset base --save $(STARTUP_DIR) --runs 0
	bin/bertstream bench --load --model $(STARTUP_DIR) --ort-model $(PEERS_CACHE)/bert-base-opset12.onnx --runs $(STARTUP_RUNS) --threads 2 --batch 32 --seq 128
