#!/usr/bin/python3
"""Generate testdata/shapes: BERT checkpoints of shapes other than bert-tiny's,
with reference outputs, to prove the engine hard-codes no shape.

Run from anywhere with Debian's PyTorch (no transformers, no safetensors
package needed):

    /usr/bin/python3 testdata/make_shapes.py

It first checks its own BERT forward pass (a compact re-implementation of
Hugging Face's BertModel and heads) against the Hugging Face outputs stored in
testdata/bert-tiny/reference.safetensors, and stops if any tensor differs by
more than 1e-5 where the attention mask is 1. Only then does it write the
models and their references under testdata/shapes/<name>/. Seeds are fixed:
running it twice gives the same files.
"""

import collections
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "bert-tiny")
OUT = os.path.join(HERE, "shapes")

# ---------------------------------------------------------------- safetensors

_DT = {
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (None, torch.bfloat16),
    "F64": (np.float64, torch.float64),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
}
_NAME = {tdt: name for name, (_, tdt) in _DT.items()}


def st_read(path):
    """Reads a safetensors file into a dict name -> torch tensor (copies)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw = buf[base + lo:base + hi]
        npdt, tdt = _DT[info["dtype"]]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).copy()).to(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.dtype(npdt).newbyteorder("<")).copy())
        out[name] = t.reshape(info["shape"])
    return out


def st_write(path, tensors, metadata=None):
    """Writes a dict name -> torch tensor as safetensors (sorted names)."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = (t.float().numpy().view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------- BERT, as HF does


def act_fn(name):
    if name == "gelu":
        return lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError("hidden_act %r" % name)


def canonical(sd):
    """Maps a state dict onto HF's BertForPreTraining names (bert. prefix,
    LayerNorm weight/bias), in F32."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".gamma"):
            k = k[:-len(".gamma")] + ".weight"
        elif k.endswith(".beta"):
            k = k[:-len(".beta")] + ".bias"
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        if v.is_floating_point():
            v = v.float()
        out[k] = v
    return out


def bert_forward(cfg, sd, input_ids, token_type_ids, attention_mask):
    """HF BertModel + the heads present in sd (canonical names). Returns an
    OrderedDict of F32 outputs."""
    sd = canonical(sd)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg.get("layer_norm_eps", 1e-12)
    act = act_fn(cfg.get("hidden_act", "gelu"))
    B, T = input_ids.shape

    def lin(x, p):
        return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])

    def ln(x, p):
        return F.layer_norm(x, (H,), sd[p + ".weight"], sd[p + ".bias"], eps)

    out = collections.OrderedDict()
    pos = torch.arange(T, dtype=torch.long).unsqueeze(0).expand(B, T)
    e = (sd["bert.embeddings.word_embeddings.weight"][input_ids]
         + sd["bert.embeddings.position_embeddings.weight"][pos]
         + sd["bert.embeddings.token_type_embeddings.weight"][token_type_ids])
    x = ln(e, "bert.embeddings.LayerNorm")
    out["embeddings"] = x
    ext = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0

    def heads(t):
        return t.view(B, T, nh, hd).permute(0, 2, 1, 3)

    for i in range(cfg["num_hidden_layers"]):
        p = "bert.encoder.layer.%d." % i
        q = heads(lin(x, p + "attention.self.query"))
        k = heads(lin(x, p + "attention.self.key"))
        v = heads(lin(x, p + "attention.self.value"))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd) + ext
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, H)
        a = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        m = act(lin(a, p + "intermediate.dense"))
        x = ln(lin(m, p + "output.dense") + a, p + "output.LayerNorm")
        out["hidden.%d" % i] = x
    if "bert.pooler.dense.weight" in sd:
        pooled = torch.tanh(lin(x[:, 0], "bert.pooler.dense"))
        out["pooled"] = pooled
    if "cls.predictions.transform.dense.weight" in sd:
        h = act(lin(x, "cls.predictions.transform.dense"))
        h = ln(h, "cls.predictions.transform.LayerNorm")
        dec = sd.get("cls.predictions.decoder.weight", sd["bert.embeddings.word_embeddings.weight"])
        bias = sd["cls.predictions.bias"] if "cls.predictions.bias" in sd else sd["cls.predictions.decoder.bias"]
        out["mlm_logits"] = F.linear(h, dec) + bias
    if "cls.seq_relationship.weight" in sd:
        out["nsp_logits"] = lin(pooled, "cls.seq_relationship")
    if "classifier.weight" in sd:
        arch = cfg["architectures"][0]
        if arch == "BertForTokenClassification":
            out["token_logits"] = lin(x, "classifier")
        else:
            out["logits"] = lin(pooled, "classifier")
    return out


# ------------------------------------------- validation against HF's outputs


def max_err(got, want, mask):
    """Max abs error; tensors [B,T,...] only where mask is 1."""
    got, want = got.double(), want.double()
    if got.shape != want.shape:
        raise AssertionError("shape %s, reference %s" % (tuple(got.shape), tuple(want.shape)))
    d = (got - want).abs()
    if d.dim() >= 2 and tuple(d.shape[:2]) == tuple(mask.shape):
        d = d[mask.bool()]
    return d.max().item()


def validate():
    ref = st_read(os.path.join(TINY, "reference.safetensors"))
    ids, types, mask = ref["input_ids"], ref["token_type_ids"], ref["attention_mask"]
    errs = collections.OrderedDict()

    def check(prefix, got, names):
        for n in names:
            errs[prefix + n] = max_err(got[n], ref[prefix + n], mask)

    def mlm(prefix, logits):
        cols = ref[prefix + "mlm_logits_head"].shape[-1]
        errs[prefix + "mlm_logits_head"] = max_err(logits[..., :cols], ref[prefix + "mlm_logits_head"], mask)
        errs[prefix + "mlm_logsumexp"] = max_err(torch.logsumexp(logits.double(), -1).float(), ref[prefix + "mlm_logsumexp"], mask)
        top = torch.topk(logits, 6, dim=-1)
        errs[prefix + "mlm_top5_values"] = max_err(top.values[..., :5], ref[prefix + "mlm_top5_values"], mask)
        # Ids must agree wherever the order is defined (no near-tie).
        want = ref[prefix + "mlm_top5_ids"]
        bad = 0
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                if mask[b, t] == 0:
                    continue
                for k in range(5):
                    if top.values[b, t, k] - top.values[b, t, k + 1] <= 1e-5:
                        break
                    if top.indices[b, t, k] != want[b, t, k]:
                        bad += 1
                        break
        if bad:
            raise AssertionError("%smlm_top5_ids: %d positions disagree" % (prefix, bad))

    cfg = json.load(open(os.path.join(TINY, "bert-pretraining", "config.json")))
    sd = st_read(os.path.join(TINY, "bert-pretraining", "model.safetensors"))
    with torch.no_grad():
        got = bert_forward(cfg, sd, ids, types, mask)
    check("pretraining.", got, ["embeddings", "hidden.0", "hidden.1", "pooled", "nsp_logits"])
    mlm("pretraining.", got["mlm_logits"])

    for low in ("fp16", "bf16"):
        c = json.load(open(os.path.join(TINY, "bert-pretraining", low, "config.json")))
        s = st_read(os.path.join(TINY, "bert-pretraining", low, "model.safetensors"))
        with torch.no_grad():
            g = bert_forward(c, s, ids, types, mask)
        g["hidden.last"] = g["hidden.%d" % (c["num_hidden_layers"] - 1)]
        check("pretraining.%s." % low, g, ["hidden.last", "nsp_logits"])
        mlm("pretraining.%s." % low, g["mlm_logits"])

    cfg = json.load(open(os.path.join(TINY, "bert-classifier", "config.json")))
    sd = st_read(os.path.join(TINY, "bert-classifier", "model.safetensors"))
    with torch.no_grad():
        got = bert_forward(cfg, sd, ids, types, mask)
    check("classifier.", got, ["pooled", "logits"])

    worst = max(errs.values())
    print("validation against Hugging Face (testdata/bert-tiny/reference.safetensors), max abs error where mask is 1:")
    for k, v in errs.items():
        print("  %-36s %.3g" % (k, v))
    if worst > 1e-5:
        raise SystemExit("re-implementation disagrees with Hugging Face: max abs error %.3g > 1e-5" % worst)
    print("  all within 1e-5")
    return errs


# ------------------------------------------------------- the shapes fixtures

MODELS = [
    {
        "name": "h48-l3-a3-gelunew",
        "seed": 4803,
        "arch": "BertForPreTraining",
        "vocab": 211, "hidden": 48, "layers": 3, "heads": 3, "inter": 80,
        "act": "gelu_new", "max_pos": 40, "type_vocab": 2, "eps": 1e-5,
        "batch": (3, 37),
        "format": "safetensors",
    },
    {
        "name": "h40-l1-a5-relu",
        "seed": 4015,
        "arch": "BertForSequenceClassification",
        "vocab": 97, "hidden": 40, "layers": 1, "heads": 5, "inter": 72,
        "act": "relu", "max_pos": 16, "type_vocab": 3, "eps": None,  # absent: HF's default 1e-12
        "labels": ["negative", "neutral", "positive", "mixed"],
        "batch": (5, 9),
        "format": "legacy",
    },
    {
        "name": "h64-l2-a8-tok",
        "seed": 6428,
        "arch": "BertForTokenClassification",
        "vocab": 151, "hidden": 64, "layers": 2, "heads": 8, "inter": 128,
        "act": "gelu", "max_pos": 48, "type_vocab": 2, "eps": 1e-6,
        "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
        "batch": (2, 33),
        "format": "zip-f16",
    },
]


def make_config(m):
    cfg = collections.OrderedDict()
    cfg["architectures"] = [m["arch"]]
    cfg["model_type"] = "bert"
    cfg["vocab_size"] = m["vocab"]
    cfg["hidden_size"] = m["hidden"]
    cfg["num_hidden_layers"] = m["layers"]
    cfg["num_attention_heads"] = m["heads"]
    cfg["intermediate_size"] = m["inter"]
    cfg["hidden_act"] = m["act"]
    cfg["hidden_dropout_prob"] = 0.1
    cfg["attention_probs_dropout_prob"] = 0.1
    cfg["max_position_embeddings"] = m["max_pos"]
    cfg["type_vocab_size"] = m["type_vocab"]
    cfg["initializer_range"] = 0.02
    if m["eps"] is not None:
        cfg["layer_norm_eps"] = m["eps"]
    cfg["pad_token_id"] = 0
    if m["format"] != "legacy":
        cfg["position_embedding_type"] = "absolute"
        cfg["torch_dtype"] = "float16" if m["format"] == "zip-f16" else "float32"
        cfg["transformers_version"] = "4.41.2"
    if "labels" in m:
        cfg["id2label"] = collections.OrderedDict((str(i), l) for i, l in enumerate(m["labels"]))
        cfg["label2id"] = collections.OrderedDict((l, i) for i, l in enumerate(m["labels"]))
    return cfg


def make_weights(m, g):
    """HF names (bert. prefix, LayerNorm weight/bias). Weights are larger
    than BERT's 0.02 init so that attention is far from uniform and every
    head matters; every bias and LayerNorm gamma/beta is perturbed. The
    embeddings keep BERT's small scale so that layer_norm_eps matters."""
    H, I, V = m["hidden"], m["inter"], m["vocab"]

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = collections.OrderedDict()

    def lin(p, o, i, std=None):
        sd[p + ".weight"] = normal(o, i, std=std if std is not None else 1.0 / math.sqrt(i))
        sd[p + ".bias"] = normal(o, std=0.1)

    def ln(p):
        sd[p + ".weight"] = normal(H, std=0.2, mean=1.0)
        sd[p + ".bias"] = normal(H, std=0.1)

    sd["bert.embeddings.word_embeddings.weight"] = normal(V, H, std=0.02)
    sd["bert.embeddings.position_embeddings.weight"] = normal(m["max_pos"], H, std=0.02)
    sd["bert.embeddings.token_type_embeddings.weight"] = normal(m["type_vocab"], H, std=0.02)
    ln("bert.embeddings.LayerNorm")
    for i in range(m["layers"]):
        p = "bert.encoder.layer.%d." % i
        # Query and key larger still: sharp, head-specific attention.
        lin(p + "attention.self.query", H, H, std=2.0 / math.sqrt(H))
        lin(p + "attention.self.key", H, H, std=2.0 / math.sqrt(H))
        lin(p + "attention.self.value", H, H)
        lin(p + "attention.output.dense", H, H)
        ln(p + "attention.output.LayerNorm")
        lin(p + "intermediate.dense", I, H)
        lin(p + "output.dense", H, I)
        ln(p + "output.LayerNorm")
    arch = m["arch"]
    if arch in ("BertForPreTraining", "BertForSequenceClassification"):
        lin("bert.pooler.dense", H, H)
    if arch == "BertForPreTraining":
        lin("cls.predictions.transform.dense", H, H)
        ln("cls.predictions.transform.LayerNorm")
        lin("cls.predictions.decoder", V, H)  # untied, with its own bias
        lin("cls.seq_relationship", 2, H)
    if arch in ("BertForSequenceClassification", "BertForTokenClassification"):
        lin("classifier", len(m["labels"]), H)
    return sd


def make_inputs(m, g, V):
    B, T = m["batch"]
    ids = torch.randint(1, V, (B, T), generator=g)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.ones(B, T, dtype=torch.long)
    CLS, SEP = 2, 3  # any ids in range
    for b in range(B):
        # Row 0 is full length; the others are padded at the end, more and
        # more, and every other row is a sentence pair.
        n = T if b == 0 else max(3, T - math.ceil(b * (T - 3) / B))
        ids[b, 0] = CLS
        ids[b, n - 1] = SEP
        if b % 2 == 1 and n >= 5:
            split = 1 + int(torch.randint(1, n - 3, (1,), generator=g))
            ids[b, split] = SEP
            types[b, split + 1:n] = 1
            if m["type_vocab"] > 2 and b == 3:
                types[b, split + 1:n] = 2
        if m["type_vocab"] > 2 and b == 2:
            types[b, 1:n] = torch.randint(0, m["type_vocab"], (n - 1,), generator=g)
        ids[b, n:] = 0
        mask[b, n:] = 0
    return ids, types, mask


def save_checkpoint(m, d, sd):
    if m["format"] == "safetensors":
        st_write(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
        return sd
    if m["format"] == "legacy":
        old = collections.OrderedDict()
        for k, v in sd.items():
            if k.startswith("bert."):
                k = k[len("bert."):]
            if ".LayerNorm." in k:
                k = k.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(".LayerNorm.bias", ".LayerNorm.beta")
            old[k] = v.clone().contiguous()
        torch.save(old, os.path.join(d, "pytorch_model.bin"), _use_new_zipfile_serialization=False)
        return old
    if m["format"] == "zip-f16":
        half = collections.OrderedDict((k, v.half().contiguous()) for k, v in sd.items())
        torch.save(half, os.path.join(d, "pytorch_model.bin"))
        return half
    raise ValueError(m["format"])


def generate():
    os.makedirs(OUT, exist_ok=True)
    sizes = []
    for m in MODELS:
        d = os.path.join(OUT, m["name"])
        os.makedirs(d, exist_ok=True)
        g = torch.Generator().manual_seed(m["seed"])
        cfg = make_config(m)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        sd = make_weights(m, g)
        stored = save_checkpoint(m, d, sd)
        # The reference is computed from what was stored, read back: the
        # F16 rounding and the old names go through the same path.
        if m["format"] == "safetensors":
            back = st_read(os.path.join(d, "model.safetensors"))
        else:
            back = torch.load(os.path.join(d, "pytorch_model.bin"), map_location="cpu")
        assert set(back) == set(stored), "checkpoint round trip changed the names"
        for k in back:
            assert torch.equal(back[k], stored[k]), k
        ids, types, mask = make_inputs(m, g, m["vocab"])
        with torch.no_grad():
            out = bert_forward(cfg, back, ids, types, mask)
        # Sanity: the model is not degenerate (no head is trivial, outputs
        # vary over the batch), so the comparison means something.
        for k, v in out.items():
            assert torch.isfinite(v).all(), k
            assert v.std().item() > 1e-2, "%s is nearly constant" % k
        ref = collections.OrderedDict([("input_ids", ids), ("token_type_ids", types), ("attention_mask", mask)])
        for k, v in out.items():
            ref[k] = v.float().contiguous()
        st_write(os.path.join(d, "reference.safetensors"), ref,
                 {"made_by": "testdata/make_shapes.py on torch " + torch.__version__})
        for f in sorted(os.listdir(d)):
            sizes.append((os.path.join(m["name"], f), os.path.getsize(os.path.join(d, f))))
        print("%s: B=%d T=%d, outputs %s" % (m["name"], ids.shape[0], ids.shape[1],
                                             ", ".join("%s%s" % (k, list(v.shape)) for k, v in out.items())))
    for f, n in sizes:
        print("  %-48s %8d bytes" % (f, n))


def main():
    torch.set_num_threads(1)  # deterministic reductions
    validate()
    if "--validate-only" in sys.argv[1:]:
        return
    generate()


if __name__ == "__main__":
    main()
