#!/usr/bin/python3
"""PyTorch peer of `make bench-peers`: times model.py's BertModel (eager,
inference_mode, float32) on the CPU.

    /usr/bin/python3 bench/peers/pytorch_peer.py --preset base --shapes 8x128,1x128 --threads 2 [--ref R.json]

prints one JSON object per shape. --shapes - reads one shape (BxT) per line
from stdin and answers each as soon as it is timed, so that the Go driver can
interleave engines shape by shape while this process keeps its model.

Debian's torch calls whatever libblas.so.3 the dynamic linker finds: the
reference BLAS unless an optimized one is installed or put first on
LD_LIBRARY_PATH (the driver does the latter with Debian's OpenBLAS). The
library actually loaded is reported in the "blas" field, and OpenBLAS's
kernel in "blas_core", so that a result never hides which one ran. With
--ref (export_onnx.py's reference outputs, computed in a process with the
system's BLAS) the model's outputs are checked before anything is timed.
"""

import argparse
import ctypes
import json
import os
import re
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model  # noqa: E402


def loaded_blas():
    """Path of the BLAS library mapped into this process, and OpenBLAS's
    core name when it is OpenBLAS."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    blas = sorted(p for p in paths if re.search(r"/lib(open)?blas[^/]*\.so", p))
    if not blas:
        return "", ""
    core = ""
    try:
        lib = ctypes.CDLL(blas[0])
        lib.openblas_get_corename.restype = ctypes.c_char_p
        core = lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        pass  # not OpenBLAS: the path says which it is
    return blas[0], core


CHECK_TOL = 1e-3


def check_ref(m, path):
    """Max abs difference from the reference outputs, where the mask is 1."""
    with open(path) as f:
        ref = json.load(f)
    ids, mask, types = (torch.tensor(ref[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    with torch.inference_mode():
        hidden, pooled = m(ids, mask, types)
    keep = mask.flatten().bool()
    want = torch.tensor(ref["last_hidden_state"]).reshape(-1, hidden.shape[-1])
    err_h = (hidden.reshape(-1, hidden.shape[-1]) - want)[keep].abs().max().item()
    err_p = (pooled.flatten() - torch.tensor(ref["pooler_output"])).abs().max().item()
    return max(err_h, err_p)


def quantile(xs, q):
    x = q * (len(xs) - 1)
    lo, hi = int(x), min(int(x) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (x - lo)


def parse_shape(s):
    m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", s)
    if not m:
        raise SystemExit("pytorch_peer: shape %r: want BxT, e.g. 8x128" % s)
    return int(m.group(1)), int(m.group(2))


def time_shape(m, a, batch, seq, blas, check_err):
    ids, mask, types = model.inputs(batch, seq)
    with torch.inference_mode():
        for _ in range(a.warmup):
            m(ids, mask, types)
        ms = []
        start = time.perf_counter()
        # At least three timed runs; past that, stop at --max-seconds so that
        # the largest shapes don't take the whole session.
        while len(ms) < a.runs:
            t = time.perf_counter()
            m(ids, mask, types)
            now = time.perf_counter()
            ms.append((now - t) * 1000)
            if len(ms) >= 3 and now - start > a.max_seconds:
                break
    ms.sort()
    med = quantile(ms, 0.5)
    return {
        "engine": "pytorch",
        "version": torch.__version__,
        "preset": a.preset,
        "batch": batch,
        "seq": seq,
        "threads": a.threads,
        "ms_per_batch": med,
        "ms_p10": quantile(ms, 0.1),
        "ms_p90": quantile(ms, 0.9),
        "seq_per_s": batch / (med / 1000),
        "runs": len(ms),
        "blas": blas[0],
        "blas_core": blas[1],
        "check_max_abs_err": check_err,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(model.PRESETS))
    ap.add_argument("--shapes", required=True, help="BxT[,BxT...], or - to read them from stdin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--max-seconds", type=float, default=30)
    ap.add_argument("--ref", help="reference outputs to check the model against first")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = model.build(a.preset)
    blas = loaded_blas()
    check_err = None
    if a.ref:
        check_err = check_ref(m, a.ref)
        if not check_err <= CHECK_TOL:
            raise SystemExit("pytorch_peer: outputs differ from %s by %g (> %g) with BLAS %s %s" % (a.ref, check_err, CHECK_TOL, *blas))
    shapes = sys.stdin if a.shapes == "-" else a.shapes.split(",")
    for s in shapes:
        if not s.strip():
            continue
        batch, seq = parse_shape(s)
        print(json.dumps(time_shape(m, a, batch, seq, blas, check_err)), flush=True)


if __name__ == "__main__":
    main()
