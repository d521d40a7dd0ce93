#!/usr/bin/python3
"""Exports a preset's BERT (model.py, random weights) to ONNX for ort_peer.mjs.

    /usr/bin/python3 bench/peers/export_onnx.py --preset base [--out DIR] [--opset N] [--ref-only]

Writes DIR/bert-<preset>-opset<N>.onnx (DIR defaults to bench/peers/.cache) with
int64 inputs input_ids, attention_mask, token_type_ids [batch, seq] and
outputs last_hidden_state [batch, seq, H], pooler_output [batch, H], both
axes dynamic, and DIR/bert-<preset>.ref.json: this process's PyTorch outputs
for a small padded batch of two-segment inputs, which both peers check
their engine against before they time anything (--ref-only writes just
that). Skips what is already there and newer than the model code, unless
--force.
"""

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model  # noqa: E402

# Opset 12, not 14+: ONNX Runtime's online AttentionFusion (1.23) matches
# only ops of the opset-12 era (Add 7/13, Reshape 5/13, Unsqueeze 1/11 with
# axes as an attribute, Cast 9), so from opset 13/14 on the exported
# attention stays a dozen unfused MatMul/Reshape/Transpose/Softmax nodes per
# layer. LayerNorm, Gelu and BiasGelu fuse at either opset; SkipLayerNorm
# fuses only where every dimension but the batch is static, never with a
# dynamic sequence axis. ort_peer.mjs --ops lists what fused.
DEFAULT_OPSET = 12


def write_ref(m, path):
    ids, types, mask = model.make_shapes.make_inputs({"batch": (3, 19), "type_vocab": model.TYPE_VOCAB},
                                                     torch.Generator().manual_seed(2), model.VOCAB)
    with torch.no_grad():
        hidden, pooled = m(ids, mask, types)
    ref = {
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "token_type_ids": types.tolist(),
        "last_hidden_state": hidden.flatten().tolist(),
        "pooler_output": pooled.flatten().tolist(),
    }
    with open(path + ".tmp", "w") as f:
        json.dump(ref, f)
    os.replace(path + ".tmp", path)


def export(m, path, opset):
    ids, mask, types = model.inputs(2, 16)
    dyn = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "seq"},
        "token_type_ids": {0: "batch", 1: "seq"},
        "last_hidden_state": {0: "batch", 1: "seq"},
        "pooler_output": {0: "batch"},
    }
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(
            m, (ids, mask, types), tmp,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes=dyn, opset_version=opset, do_constant_folding=True)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(model.PRESETS))
    ap.add_argument("--out", default=os.path.join(HERE, ".cache"))
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--ref-only", action="store_true", help="write only the reference outputs")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    onnx_path = os.path.join(a.out, "bert-%s-opset%d.onnx" % (a.preset, a.opset))
    ref_path = os.path.join(a.out, "bert-%s.ref.json" % a.preset)
    src = max(os.path.getmtime(f) for f in (__file__, model.__file__, model.make_shapes.__file__))

    def stale(p):
        return a.force or not os.path.exists(p) or os.path.getmtime(p) <= src

    todo = [p for p in ([ref_path] if a.ref_only else [ref_path, onnx_path]) if stale(p)]
    if not todo:
        return
    t = time.time()
    model.check()
    m = model.build(a.preset)
    if ref_path in todo:
        write_ref(m, ref_path)
    if onnx_path in todo:
        export(m, onnx_path, a.opset)
    print("%s: written (opset %d, torch %s) in %.1f s" % (", ".join(todo), a.opset, torch.__version__, time.time() - t),
          file=sys.stderr)


if __name__ == "__main__":
    main()
