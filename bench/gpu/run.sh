#!/bin/sh
# Runs bertstream's GPU checks from the folder `make gpu-bundle` builds, on
# a machine with an NVIDIA GPU and its driver but without Go:
#
#   ./run.sh            tests, kernel harness, model benchmarks, PyTorch peer
#   ./run.sh test       the tests only (conformance, fixture parity, ...)
#   ./run.sh bench      the benchmarks only
#
# Results go to ./results (or $OUT). cuBLAS comes from the dynamic loader's
# path, from $BERTSTREAM_CUBLAS (a directory or libcublas.so.N), or from the
# nvidia-cublas wheel of a pip-installed CUDA PyTorch, found below.
set -u
cd "$(dirname "$0")"
what=${1:-all}
out=${OUT:-results}
mkdir -p "$out"

# Without the driver's libcuda.so.1 the binaries cannot start at all (they
# link it): say so instead of failing with a loader error.
if ldd ./bertstream | grep -q 'libcuda.so.1 => not found'; then
    echo "SKIP: no NVIDIA driver on this machine (libcuda.so.1 not found); nothing ran"
    exit 0
fi

if [ -z "${BERTSTREAM_CUBLAS:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so'; then
    dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
    if [ -n "$dir" ] && [ -d "$dir" ]; then
        export BERTSTREAM_CUBLAS="$dir"
        echo "cuBLAS from $dir"
    fi
fi

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
status=0

if [ "$what" = all ] || [ "$what" = test ]; then
    echo "== tests"
    (cd cuda && ./cuda.test -test.v -test.count=1) > "$out/tests.txt" 2>&1 || status=1
    grep -E '^(--- |ok|FAIL|PASS)|skipped' "$out/tests.txt"
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
    echo "== kernel harness and model throughput (Go benchmarks)"
    (cd cuda && ./cuda.test -test.run '^$' -test.bench . -test.benchtime 2s) > "$out/bench.txt" 2>&1 || status=1
    grep -E '^(Benchmark|--- FAIL|FAIL|ok)' "$out/bench.txt"

    echo "== bertstream bench (JSON rows, as the PyTorch peer writes them)"
    : > "$out/bertstream.jsonl"
    for dt in f32 f16; do
        ./bertstream bench --device cuda --dtype $dt --preset base --batch 1,8,32,128 --seq 128,384 \
            --runs 20 --warmup 3 --json >> "$out/bertstream.jsonl" || status=1
    done
    cat "$out/bertstream.jsonl"

    if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "== PyTorch eager peer"
        python3 torch_peer.py --dtype f32,f16 --batch 1,8,32,128 --seq 128,384 > "$out/torch.jsonl" || status=1
        cat "$out/torch.jsonl"
    else
        echo "SKIP PyTorch peer: no CUDA-enabled PyTorch here (pip install torch)"
    fi
fi
echo "results in $out/"
exit $status
