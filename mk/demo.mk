# demo-model: retrains the bundled demo model (demo/model) from the Debian
# Packages index that `apt-get update` leaves on the machine, with the
# settings in demo/settings.json; writes demo/RESULTS.md, demo/results.json
# and the sample requests next to them. About 15 minutes on 2 cores.
#
# Debian's PyTorch links the generic libblas.so.3: without an optimised
# BLAS installed it is about 10x slower, so OpenBLAS is installed too.

DEMO_PYTHON ?= /usr/bin/python3

.PHONY: demo-model demo-model-deps

demo-model: demo-model-deps
	$(DEMO_PYTHON) demo/train.py --settings demo/settings.json --out demo/model

demo-model-deps:
	@set -e; need=""; \
	$(DEMO_PYTHON) -c 'import torch' 2>/dev/null || need="python3-torch"; \
	dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need="$$need libopenblas0-pthread"; \
	ls /var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_Packages* >/dev/null 2>&1 || need="$$need lists"; \
	if [ -n "$$need" ]; then \
	  echo "demo-model: installing$$need"; apt-get update; \
	  pkgs=$$(echo $$need | sed 's/lists//'); \
	  if [ -n "$$pkgs" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y $$pkgs; fi; \
	fi
