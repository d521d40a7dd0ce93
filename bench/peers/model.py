"""BERT encoder (Hugging Face's BertModel) of the DESIGN.md presets with random
weights, for the PyTorch and ONNX Runtime peers of `make bench-peers`.

testdata/make_shapes.py has a functional BERT forward pass that was checked
against Hugging Face's outputs. The peers need Hugging Face's module layout
instead (nn.Module, each reshape taking its shape from the tensor it
reshapes) because ONNX Runtime's graph fusions match the ONNX that this
layout exports; check() holds the two to the same outputs.
"""

import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testdata"))
import make_shapes  # noqa: E402

# name: (layers, hidden, heads, intermediate), as bert.Preset in Go.
PRESETS = {
    "nano": (4, 256, 4, 1024),
    "mini": (6, 384, 12, 1536),
    "micro": (12, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
VOCAB = 30522
MAX_POS = 512
TYPE_VOCAB = 2
SEED = 20240607


def config(preset):
    if preset not in PRESETS:
        raise SystemExit("unknown preset %r (have %s)" % (preset, ", ".join(PRESETS)))
    layers, hidden, heads, inter = PRESETS[preset]
    return {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": TYPE_VOCAB,
    }


def random_weights(cfg, seed=SEED):
    """HF names of a BertModel (embeddings, encoder, pooler). make_shapes'
    sequence classifier gives exactly those plus its classifier, dropped here."""
    spec = {
        "arch": "BertForSequenceClassification",
        "labels": ["0", "1"],
        "vocab": cfg["vocab_size"],
        "hidden": cfg["hidden_size"],
        "layers": cfg["num_hidden_layers"],
        "inter": cfg["intermediate_size"],
        "max_pos": cfg["max_position_embeddings"],
        "type_vocab": cfg["type_vocab_size"],
    }
    sd = make_shapes.make_weights(spec, torch.Generator().manual_seed(seed))
    return {k: v for k, v in sd.items() if not k.startswith("classifier.")}


class Linear(nn.Linear):
    """nn.Linear whose ONNX export is MatMul followed by Add(product, bias):
    torch exports F.linear as Add(bias, product), and ONNX Runtime's
    AttentionFusion only follows the product on the Add's first input."""

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return torch.matmul(x, self.weight.t()) + self.bias
        return super().forward(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.head_size = h // self.heads
        self.query = Linear(h, h)
        self.key = Linear(h, h)
        self.value = Linear(h, h)

    def split(self, x):
        # The shape comes from x itself, as in Hugging Face's
        # transpose_for_scores: ONNX Runtime's ReshapeFusion then turns the
        # exported Shape/Gather/Concat into the constant (0, 0, N, H) that its
        # AttentionFusion requires.
        return x.view(x.size()[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.heads * self.head_size,))


class DenseLayerNorm(nn.Module):
    """Post-LN residual: LayerNorm(dense(x) + residual)."""

    def __init__(self, cfg, n_in):
        super().__init__()
        self.dense = Linear(n_in, cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseLayerNorm(cfg, cfg["hidden_size"])

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.act = make_shapes.act_fn(cfg["hidden_act"])

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseLayerNorm(cfg, cfg["intermediate_size"])

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.register_buffer("position_ids", torch.arange(cfg["max_position_embeddings"]).unsqueeze(0), persistent=False)

    def forward(self, input_ids, token_type_ids):
        pos = self.position_ids[:, :input_ids.size(1)]
        e = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(pos)
        return self.LayerNorm(e)


class Pooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = Linear(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """Hugging Face's BertModel, module for module and with its parameter
    names, so that its ONNX export has the patterns ONNX Runtime's fusions
    look for. Returns (last_hidden_state [B,T,H], pooler_output [B,H])."""

    def __init__(self, cfg):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids):
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return x, self.pooler(x)


def build(preset, seed=SEED):
    cfg = config(preset)
    m = BertModel(cfg)
    sd = {k[len("bert."):]: v for k, v in random_weights(cfg, seed).items()}
    m.load_state_dict(sd, strict=True)
    return m.eval()


def check(preset="nano", tol=1e-4):
    """Compares BertModel with make_shapes.bert_forward on padded inputs
    with two segments; raises SystemExit past tol."""
    cfg = config(preset)
    m = build(preset)
    spec = {"batch": (3, 19), "type_vocab": TYPE_VOCAB}
    ids, types, mask = make_shapes.make_inputs(spec, torch.Generator().manual_seed(1), VOCAB)
    with torch.no_grad():
        hidden, pooled = m(ids, mask, types)
        ref = make_shapes.bert_forward(cfg, random_weights(cfg), ids, types, mask)
    last = ref["hidden.%d" % (cfg["num_hidden_layers"] - 1)]
    err = max((hidden - last)[mask.bool()].abs().max().item(), (pooled - ref["pooled"]).abs().max().item())
    if err > tol:
        raise SystemExit("bench/peers/model.py: %s disagrees with testdata/make_shapes.py: max abs error %.3g > %g" % (preset, err, tol))
    return err


def inputs(batch, seq, seed=SEED):
    """Random token ids, one segment, no padding: the throughput case."""
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(1000, VOCAB, (batch, seq), generator=g, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    types = torch.zeros(batch, seq, dtype=torch.int64)
    return ids, mask, types
