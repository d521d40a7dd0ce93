"""PyTorch eager peer of `bertstream bench --device cuda`: BERT-base (the
DESIGN.md presets) with random weights, every sequence full length, forward
passes of the encoder and pooler timed on the same GPU, one JSON object per
shape with the fields bertstream prints (preset, batch, seq, dtype,
ms_per_batch as the median, seq_per_s).

"Eager" is PyTorch without torch.compile, TensorRT or fused attention: the
module below does what Hugging Face's BertModel does with
attn_implementation="eager" (explicit q k^T, softmax, times v), one
PyTorch op at a time. It needs a CUDA build of PyTorch (pip install torch);
Debian's python3-torch has no CUDA. Usage:

    python3 torch_peer.py --dtype f32,f16 --batch 1,8,32,128 --seq 128,384
"""

import argparse
import json
import math
import statistics
import sys

import torch
from torch import nn
import torch.nn.functional as F

# name: (layers, hidden, heads, intermediate), as bert.Preset in Go.
PRESETS = {
    "nano": (4, 256, 4, 1024),
    "mini": (6, 384, 12, 1536),
    "micro": (12, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
VOCAB, MAX_POS, TYPES, EPS = 30522, 512, 2, 1e-12


class Layer(nn.Module):
    def __init__(self, hidden, heads, inter):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_ln = nn.LayerNorm(hidden, eps=EPS)
        self.inter = nn.Linear(hidden, inter)
        self.out = nn.Linear(inter, hidden)
        self.out_ln = nn.LayerNorm(hidden, eps=EPS)

    def split(self, x):
        b, t, h = x.shape
        return x.view(b, t, self.heads, h // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
        ctx = torch.matmul(F.softmax(scores, dim=-1), v)
        ctx = ctx.permute(0, 2, 1, 3).contiguous().view(x.shape)
        x = self.attn_ln(self.attn_out(ctx) + x)
        return self.out_ln(self.out(F.gelu(self.inter(x))) + x)


class Bert(nn.Module):
    def __init__(self, layers, hidden, heads, inter):
        super().__init__()
        self.word = nn.Embedding(VOCAB, hidden)
        self.pos = nn.Embedding(MAX_POS, hidden)
        self.typ = nn.Embedding(TYPES, hidden)
        self.ln = nn.LayerNorm(hidden, eps=EPS)
        self.layers = nn.ModuleList(Layer(hidden, heads, inter) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)
        # BERT's initialisation: N(0, 0.02) weights, zero biases,
        # LayerNorm at 1 and 0 (PyTorch's default for it).
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids, types, mask):
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device).unsqueeze(0)
        x = self.ln(self.word(ids) + self.pos(pos) + self.typ(types))
        # BERT's additive mask: 0 where attended, a large negative elsewhere.
        add = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, add)
        return x, torch.tanh(self.pooler(x[:, 0]))


def ints(s):
    return [int(v) for v in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=ints, default=[1, 8, 32, 128])
    ap.add_argument("--seq", type=ints, default=[128, 384])
    ap.add_argument("--dtype", default="f16", help="f32, f16 or bf16, comma-separated")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_peer.py: this PyTorch has no CUDA device (Debian's python3-torch has no CUDA; pip install torch)")
    dev = torch.device("cuda")
    # Plain F32 products, as bertstream's F32 backend computes them.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    gen = torch.Generator().manual_seed(2)
    for name in args.dtype.split(","):
        torch.manual_seed(1)
        model = Bert(*PRESETS[args.preset]).to(dev, dtypes[name]).eval()
        for b in args.batch:
            for t in args.seq:
                ids = torch.randint(0, VOCAB, (b, t), generator=gen).to(dev)
                types = torch.zeros_like(ids)
                mask = torch.ones_like(ids)
                times = []
                with torch.inference_mode():
                    for i in range(args.warmup + args.runs):
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        model(ids, types, mask)
                        end.record()
                        torch.cuda.synchronize()
                        if i >= args.warmup:
                            times.append(start.elapsed_time(end))
                ms = statistics.median(times)
                print(json.dumps({
                    "engine": "pytorch-eager", "preset": args.preset, "batch": b, "seq": t,
                    "device": torch.cuda.get_device_name(), "dtype": name.upper(),
                    "torch": torch.__version__, "ms_per_batch": ms, "seq_per_s": b / ms * 1e3,
                }), flush=True)


if __name__ == "__main__":
    main()
