"""Generates the small PyTorch checkpoints the torchbin tests read.

Run with a Python that has torch (the fixtures were made with 1.13):
    python3 loader/torchbin/testdata/make_fixtures.py
It writes next to itself:
  dtypes.bin          zip format, pickle protocol 4: every supported dtype,
                      a transposed (non-contiguous) view, a slice with a storage
                      offset, tied weights sharing one storage, a 0-d and an
                      empty tensor, an nn.Parameter (_rebuild_parameter)
  dtypes-legacy.bin   the same tensors in the legacy (non-zip) format, protocol 2
  wrapped.bin         {"state_dict": {...}, "epoch": 3, "note": "..."}
  sharded/            pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json
  expected.json       name -> dtype, shape, hex of the contiguous little-endian bytes
"""
import collections
import json
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(7)


def tensors():
    sd = collections.OrderedDict()
    sd["f64"] = torch.randn(2, 3, dtype=torch.float64)
    sd["f32"] = torch.randn(3, 4)
    sd["f16"] = torch.randn(5).half()
    sd["bf16"] = torch.randn(2, 2).bfloat16()
    sd["i64"] = torch.arange(-3, 3, dtype=torch.int64).reshape(2, 3)
    sd["i32"] = torch.tensor([-(2**31), 2**31 - 1, 0], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127, 1], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd["transposed"] = base.t()  # strides (1, 6), shares base's storage
    sd["base"] = base
    sd["sliced"] = base[1:3, 2:5]  # storage offset 8, strides (6, 1)
    emb = torch.randn(7, 3)
    sd["tied.a"] = emb
    sd["tied.b"] = emb  # same tensor twice, as tied weights are
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2))
    sd["position_ids"] = torch.arange(6).expand((1, -1))  # stride 0 in a size-1 dim
    return sd


def expected(sd):
    out = {}
    for k, t in sd.items():
        t = t.detach().contiguous()
        raw = bytes(t.reshape(-1).view(torch.uint8).tolist())
        out[k] = {"dtype": str(t.dtype), "shape": list(t.shape), "hex": raw.hex()}
    return out


def main():
    sd = tensors()
    torch.save(sd, os.path.join(here, "dtypes.bin"), pickle_protocol=4)
    torch.save(sd, os.path.join(here, "dtypes-legacy.bin"), _use_new_zipfile_serialization=False)
    small = collections.OrderedDict((k, sd[k]) for k in ["f32", "i64", "tied.a"])
    torch.save({"state_dict": small, "epoch": 3, "note": "training checkpoint"},
               os.path.join(here, "wrapped.bin"))

    sharded = os.path.join(here, "sharded")
    os.makedirs(sharded, exist_ok=True)
    names = list(sd.keys())
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fn = "pytorch_model-%05d-of-00002.bin" % (i + 1)
        # Clone so each shard holds its own storages, as HF's sharding does.
        torch.save(collections.OrderedDict((k, sd[k].detach().clone()) for k in part),
                   os.path.join(sharded, fn))
        for k in part:
            weight_map[k] = fn
    with open(os.path.join(sharded, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2, sort_keys=True)

    with open(os.path.join(here, "expected.json"), "w") as f:
        json.dump(expected(sd), f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
