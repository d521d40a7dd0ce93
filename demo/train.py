#!/usr/bin/python3
"""Train bertstream's demo model: a small BERT topic classifier for Debian packages.

The corpus is the package descriptions in the Debian `Packages` indexes that
`apt-get update` left under /var/lib/apt/lists, labelled by each package's
`Section`. Training follows the original BERT recipe at toy scale: a WordPiece
vocabulary learnt from the training texts, masked-LM pre-training on the
descriptions, then fine-tuning of a sequence classifier. The result is written as
a Hugging Face model directory (config.json, model.safetensors, vocab.txt,
tokenizer_config.json) that bertstream's Go engine loads.

Everything (data split, vocabulary, initialisation, masking, batching) is
derived from the seeds in the settings file, so the same settings on the same
Packages index give the same model.

Run with Debian's PyTorch (python3-torch):
    /usr/bin/python3 demo/train.py --settings demo/settings.json --out demo/model
"""

import argparse
import collections
import copy
import glob
import gzip
import hashlib
import heapq
import json
import lzma
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import unicodedata

# libgomp's worker threads spin while they wait for work; on a machine
# whose cores are shared that turns every parallel region into a fight for
# the CPU (a ~6x slowdown was seen here). Waiting passively costs nothing
# when the cores are free. It must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))


class SetupError(Exception):
    """A problem with the machine or the inputs, reported without a traceback."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Corpus: Debian Packages indexes


def read_index(path):
    """Return the decompressed text of one apt list file.

    apt stores the indexes compressed with whatever the mirror offered and the
    local configuration preferred (lz4 on this machine); apt-helper knows every
    format apt itself uses, so it is tried first.
    """
    helper = "/usr/lib/apt/apt-helper"
    if os.access(helper, os.X_OK):
        res = subprocess.run([helper, "cat-file", path], capture_output=True)
        if res.returncode == 0:
            return res.stdout.decode("utf-8")
        raise SetupError(f"{helper} cat-file {path} failed: {res.stderr.decode(errors='replace').strip()}")
    openers = {".gz": gzip.open, ".xz": lzma.open}
    ext = os.path.splitext(path)[1]
    if ext in openers:
        with openers[ext](path, "rb") as f:
            return f.read().decode("utf-8")
    if ext == "":
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    raise SetupError(f"cannot decompress {path}: {helper} is missing and {ext!r} is not gz/xz/plain")


def parse_packages(text, path):
    """Yield the records of a deb822 Packages file as dicts of field -> value.

    Continuation lines are kept (joined with newlines) because the long
    description lives in them when the index carries it.
    """
    for n, para in enumerate(text.split("\n\n")):
        fields = {}
        last = None
        for line in para.split("\n"):
            if not line:
                continue
            if line[0] in " \t":
                if last is None:
                    raise SetupError(f"{path}: paragraph {n}: continuation line before any field")
                fields[last] += "\n" + line
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise SetupError(f"{path}: paragraph {n}: line without a field name: {line[:60]!r}")
            last = key
            fields[key] = value.strip()
        if fields:
            yield fields


def description_text(desc):
    """Short description plus long description, with the ' .' paragraph markers dropped."""
    lines = desc.split("\n")
    parts = [lines[0].strip()]
    for line in lines[1:]:
        line = line.strip()
        if line == ".":
            continue
        parts.append(line)
    return " ".join(p for p in parts if p)


def load_corpus(settings):
    pattern = settings["corpus"]["packages_glob"]
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SetupError(
            f"no Debian Packages index matches {pattern}: run apt-get update first "
            "(the corpus is the package descriptions apt downloads)"
        )
    records = []
    files = []
    with_long = 0
    for path in paths:
        text = read_index(path)
        files.append({"path": path, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
        for fields in parse_packages(text, path):
            for key in ("Package", "Section", "Description"):
                if key not in fields:
                    raise SetupError(f"{path}: package {fields.get('Package', '?')}: no {key} field")
            source = fields.get("Source", fields["Package"]).split(" ")[0]
            if "\n" in fields["Description"]:
                with_long += 1
            records.append(
                {
                    "package": fields["Package"],
                    "source": source,
                    "section": fields["Section"].split("/")[-1],
                    "text": description_text(fields["Description"]),
                }
            )
    log(f"read {len(records)} packages from {len(paths)} index files ({with_long} with a long description)")
    return records, files, with_long


def dedup_and_split(records, settings):
    """Drop repeated descriptions, then assign each text to train/dev/test by its source package.

    Splitting by a hash of the source package keeps the binaries built from one
    source (lib, -dev, -doc, -dbg, ...) on one side, so the test set does not
    hold near-copies of training texts.
    """
    records = sorted(records, key=lambda r: (r["package"], r["section"], r["text"]))
    seen = {}
    conflicts = 0
    for r in records:
        key = " ".join(r["text"].lower().split())
        if key in seen:
            if seen[key]["section"] != r["section"]:
                conflicts += 1
            continue
        seen[key] = r
    unique = list(seen.values())
    split_cfg = settings["split"]
    for r in unique:
        h = int(hashlib.sha256((split_cfg["salt"] + r["source"]).encode()).hexdigest()[:12], 16) % 1000
        if h < split_cfg["test_per_mille"]:
            r["split"] = "test"
        elif h < split_cfg["test_per_mille"] + split_cfg["dev_per_mille"]:
            r["split"] = "dev"
        else:
            r["split"] = "train"
    log(f"{len(unique)} unique descriptions ({len(records) - len(unique)} repeats dropped, "
        f"{conflicts} of them under another section)")
    return unique, len(records) - len(unique), conflicts


# ---------------------------------------------------------------------------
# Tokenizer: Hugging Face's BertTokenizer algorithm (uncased)


def _is_whitespace(ch):
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokenize(text):
    """BasicTokenizer with do_lower_case=True: clean, split CJK, NFC, lower, strip accents, split punctuation."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out))
    tokens = []
    for word in text.split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = []
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    tokens.append("".join(current))
                    current = []
                tokens.append(ch)
            else:
                current.append(ch)
        if current:
            tokens.append("".join(current))
    return tokens


class WordPieceTokenizer:
    """Greedy longest-match-first WordPiece over a fixed vocabulary, as BertTokenizer does."""

    max_chars_per_word = 100

    def __init__(self, vocab):
        self.vocab = list(vocab)
        self.ids = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ValueError("vocabulary has repeated tokens")
        for i, tok in enumerate(SPECIAL_TOKENS):
            if self.ids.get(tok) != i:
                raise ValueError(f"special token {tok} must have id {i}")
        specials = sorted(SPECIAL_TOKENS, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")")
        self._cache = {}

    def _wordpiece(self, word):
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_chars_per_word:
            pieces = ["[UNK]"]
        else:
            pieces = []
            start = 0
            while start < len(word):
                end = len(word)
                found = None
                while start < end:
                    sub = word[start:end]
                    if start > 0:
                        sub = "##" + sub
                    if sub in self.ids:
                        found = sub
                        break
                    end -= 1
                if found is None:
                    pieces = ["[UNK]"]
                    break
                pieces.append(found)
                start = end
        self._cache[word] = pieces
        return pieces

    def tokenize(self, text):
        """Tokens of text; special tokens written in the text stay whole, as in Hugging Face."""
        tokens = []
        for part in self._special_re.split(text):
            if part in SPECIAL_TOKENS:
                tokens.append(part)
                continue
            for word in basic_tokenize(part):
                tokens.extend(self._wordpiece(word))
        return tokens

    def encode(self, text, max_len):
        """[CLS] tokens [SEP] ids, truncated to max_len."""
        ids = [self.ids[t] for t in self.tokenize(text)]
        return [CLS_ID] + ids[: max_len - 2] + [SEP_ID]


def train_wordpiece(texts, vocab_size, min_char_count):
    """Learn a WordPiece vocabulary from texts by frequency-driven pair merging.

    Words (from the basic tokenizer) start as characters, continuation
    characters carrying the '##' prefix; the most frequent adjacent pair is
    merged into a new token until the vocabulary has vocab_size entries. Every
    kept character is in the vocabulary both as a word start and as a '##'
    continuation, so greedy longest-match tokenization never has to fall back
    to [UNK] for a word made of known characters.
    """
    word_counts = collections.Counter()
    for t in texts:
        word_counts.update(basic_tokenize(t))
    char_counts = collections.Counter()
    for w, c in word_counts.items():
        for ch in w:
            char_counts[ch] += c
    alphabet = sorted(ch for ch, c in char_counts.items() if c >= min_char_count)
    alpha_set = set(alphabet)
    vocab = list(SPECIAL_TOKENS)
    vocab += alphabet
    vocab += ["##" + ch for ch in alphabet]
    known = set(vocab)
    if len(vocab) > vocab_size:
        raise SetupError(f"vocab_size {vocab_size} is smaller than the alphabet ({len(vocab)} tokens)")

    words = []
    freqs = []
    for w, c in sorted(word_counts.items()):
        if len(w) > WordPieceTokenizer.max_chars_per_word or any(ch not in alpha_set for ch in w):
            continue
        words.append([w[0]] + ["##" + ch for ch in w[1:]])
        freqs.append(c)

    pair_counts = collections.defaultdict(int)
    pair_words = collections.defaultdict(set)
    for i, syms in enumerate(words):
        for a, b in zip(syms, syms[1:]):
            pair_counts[(a, b)] += freqs[i]
            pair_words[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    def merged(a, b):
        return a + (b[2:] if b.startswith("##") else b)

    while len(vocab) < vocab_size and heap:
        negc, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry: the count changed since it was pushed
        new_tok = merged(*pair)
        if new_tok not in known:
            vocab.append(new_tok)
            known.add(new_tok)
        touched = set()
        for i in sorted(pair_words.pop(pair, ())):
            syms = words[i]
            f = freqs[i]
            for a, b in zip(syms, syms[1:]):
                pair_counts[(a, b)] -= f
                touched.add((a, b))
            out = []
            j = 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == pair[0] and syms[j + 1] == pair[1]:
                    out.append(new_tok)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for a, b in zip(out, out[1:]):
                pair_counts[(a, b)] += f
                pair_words[(a, b)].add(i)
                touched.add((a, b))
        pair_counts.pop(pair, None)
        for p in sorted(touched):
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
    return vocab, len(alphabet)


# ---------------------------------------------------------------------------
# BERT in plain PyTorch, with Hugging Face's module and parameter names


class BertEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"], padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.num_heads = cfg["num_attention_heads"]
        self.head_dim = h // self.num_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = nn.Dropout(cfg["attention_probs_dropout_prob"])

    def _heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, additive_mask):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(x.shape)
        return ctx


class BertSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x, additive_mask):
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact erf GELU, HF's "gelu"


class BertOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x, additive_mask):
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg["num_hidden_layers"]))

    def forward(self, x, additive_mask):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids):
        # The original BERT's additive mask: 0 on tokens, -10000 on padding.
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), additive)
        return hidden


class BertLMPredictionHead(nn.Module):
    """cls.predictions: transform (dense, GELU, LayerNorm) then the decoder tied to the word embeddings."""

    def __init__(self, cfg, word_embeddings):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        self.transform.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(cfg["vocab_size"]))

    def forward(self, h):
        h = self.transform.LayerNorm(F.gelu(self.transform.dense(h)))
        return F.linear(h, self.word_embeddings.weight, self.bias)


class BertForMaskedLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert = BertModel(cfg)
        self.cls = nn.Module()
        self.cls.predictions = BertLMPredictionHead(cfg, self.bert.embeddings.word_embeddings)

    def forward(self, input_ids, attention_mask, token_type_ids, masked_positions):
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        # Only the masked positions need vocabulary logits; this is most of the saving
        # that makes pre-training fit the CPU budget.
        return self.cls.predictions(hidden[masked_positions])


class BertForSequenceClassification(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])
        self.classifier = nn.Linear(cfg["hidden_size"], cfg["num_labels"])

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.bert.pooler(hidden)))


def init_weights(module, std):
    """Hugging Face's BertPreTrainedModel._init_weights."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------
# safetensors, written and read by hand


def write_safetensors(path, tensors, metadata):
    """Write name -> tensor as F32 safetensors: u64 LE header size, JSON header, raw LE data."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = tensors[name].detach().cpu().contiguous().numpy().astype("<f4", copy=False)
        data = arr.tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name}: dtype {info['dtype']}, want F32")
        start, end = info["data_offsets"]
        arr = np.frombuffer(raw[base + start : base + end], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------------------
# Training


def pad_batch(seqs):
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask, torch.zeros_like(ids)


def pack_sequences(docs, max_len, rng):
    """Concatenate shuffled descriptions into [CLS] d1 [SEP] d2 [SEP] ... sequences of at most max_len tokens.

    Descriptions are short (about a dozen tokens); packing them trains every
    position embedding and wastes no compute on padding.
    """
    order = list(range(len(docs)))
    rng.shuffle(order)
    seqs = []
    cur = [CLS_ID]
    for i in order:
        d = docs[i][: max_len - 2] + [SEP_ID]
        if len(cur) + len(d) > max_len:
            seqs.append(cur)
            cur = [CLS_ID]
        cur.extend(d)
    if len(cur) > 1:
        seqs.append(cur)
    return seqs


def mask_tokens(ids, mask, gen, vocab_size, prob):
    """BERT's masking: prob of the real tokens are predicted; of those 80% [MASK], 10% random, 10% kept."""
    candidates = (mask == 1) & (ids != CLS_ID) & (ids != SEP_ID)
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & candidates
    labels = ids[chosen]
    r = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (r < 0.8)] = MASK_ID
    rand_pos = chosen & (r >= 0.8) & (r < 0.9)
    inputs[rand_pos] = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=gen)[rand_pos]
    return inputs, chosen, labels


def lr_at(step, total, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model, lr, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def pretrain(model_cfg, pre_cfg, docs, seed):
    torch.manual_seed(seed)
    model = BertForMaskedLM(model_cfg)
    init_weights(model, model_cfg["initializer_range"])
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, pre_cfg["lr"], pre_cfg["weight_decay"])
    epochs = pre_cfg["epochs"]
    bs = pre_cfg["batch_size"]
    steps_per_epoch = math.ceil(len(pack_sequences(docs, pre_cfg["max_len"], random.Random(0))) / bs)
    total = epochs * steps_per_epoch
    warmup = int(total * pre_cfg["warmup_frac"])
    step = 0
    history = []
    model.train()
    t0 = time.time()
    for epoch in range(epochs):
        seqs = pack_sequences(docs, pre_cfg["max_len"], rng)
        loss_sum, n_sum, correct = 0.0, 0, 0
        for b in range(0, len(seqs), bs):
            ids, mask, types = pad_batch(seqs[b : b + bs])
            inputs, chosen, labels = mask_tokens(ids, mask, gen, model_cfg["vocab_size"], pre_cfg["mask_prob"])
            if labels.numel() == 0:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, pre_cfg["lr"])
            logits = model(inputs, mask, types, chosen)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), pre_cfg["clip_norm"])
            opt.step()
            step += 1
            if step % 10 == 0:
                log(f"pretrain step {step}/{total}: loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
            loss_sum += loss.item() * labels.numel()
            n_sum += labels.numel()
            correct += (logits.argmax(-1) == labels).sum().item()
        history.append({"epoch": epoch + 1, "mlm_loss": round(loss_sum / n_sum, 4), "mlm_acc": round(correct / n_sum, 4)})
        log(f"pretrain epoch {epoch + 1}/{epochs}: loss {loss_sum / n_sum:.3f} acc {correct / n_sum:.3f} "
            f"({len(seqs)} sequences, {time.time() - t0:.0f}s)")
    return model, history, step


def batches_by_length(examples, bs, rng):
    """Shuffled batches of similar-length examples, so little time goes to padding."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    batches = [order[i : i + bs] for i in range(0, len(order), bs)]
    rng.shuffle(batches)
    return batches


def predict(model, encoded, bs=256):
    model.eval()
    out = []
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    logits = [None] * len(encoded)
    with torch.no_grad():
        for b in range(0, len(order), bs):
            idx = order[b : b + bs]
            ids, mask, types = pad_batch([encoded[i] for i in idx])
            res = model(ids, mask, types)
            for j, i in enumerate(idx):
                logits[i] = res[j]
    out = torch.stack(logits)
    return out


def finetune(model_cfg, ft_cfg, bert_state, train, dev, seed):
    torch.manual_seed(seed)
    model = BertForSequenceClassification(model_cfg)
    init_weights(model, model_cfg["initializer_range"])
    missing, unexpected = model.bert.load_state_dict(bert_state, strict=False)
    # Pre-training has no NSP task, so the pooler is the one part that starts untrained.
    if unexpected or set(missing) != {"pooler.dense.weight", "pooler.dense.bias"}:
        raise RuntimeError(f"pre-trained weights do not fit: missing {missing}, unexpected {unexpected}")
    rng = random.Random(seed)
    opt = make_optimizer(model, ft_cfg["lr"], ft_cfg["weight_decay"])
    bs = ft_cfg["batch_size"]
    total = ft_cfg["epochs"] * math.ceil(len(train) / bs)
    warmup = int(total * ft_cfg["warmup_frac"])
    step = 0
    best = None
    history = []
    t0 = time.time()
    dev_x = [x for x, _ in dev]
    dev_y = torch.tensor([y for _, y in dev])
    for epoch in range(ft_cfg["epochs"]):
        model.train()
        loss_sum, n = 0.0, 0
        for idx in batches_by_length(train, bs, rng):
            ids, mask, types = pad_batch([train[i][0] for i in idx])
            y = torch.tensor([train[i][1] for i in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, ft_cfg["lr"])
            loss = F.cross_entropy(model(ids, mask, types), y, label_smoothing=ft_cfg["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), ft_cfg["clip_norm"])
            opt.step()
            step += 1
            if step % 200 == 0:
                log(f"finetune step {step}/{total}: loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
            loss_sum += loss.item() * len(idx)
            n += len(idx)
        dev_acc = (predict(model, dev_x).argmax(-1) == dev_y).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / n, 4), "dev_accuracy": round(dev_acc, 4)})
        log(f"finetune epoch {epoch + 1}/{ft_cfg['epochs']}: loss {loss_sum / n:.3f} dev acc {dev_acc:.4f} "
            f"({time.time() - t0:.0f}s)")
        if best is None or dev_acc > best[0]:
            best = (dev_acc, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model, history, best[1]


# ---------------------------------------------------------------------------
# Metrics and bag-of-words baselines


def metrics(pred, gold, n_labels):
    pred = np.asarray(pred)
    gold = np.asarray(gold)
    acc = float((pred == gold).mean())
    f1s = []
    per_label = []
    for c in range(n_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        f1s.append(f)
        per_label.append({"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": tp + fn})
    return {"accuracy": round(acc, 4), "macro_f1": round(float(np.mean(f1s)), 4)}, per_label


def bow_features(texts, vocab_index):
    rows = []
    for t in texts:
        c = collections.Counter(vocab_index[w] for w in basic_tokenize(t) if w in vocab_index)
        rows.append(c)
    return rows


def naive_bayes(train_rows, train_y, n_labels, n_feats, alpha):
    counts = np.zeros((n_labels, n_feats))
    for row, y in zip(train_rows, train_y):
        for j, c in row.items():
            counts[y, j] += c
    prior = np.log(np.bincount(train_y, minlength=n_labels) / len(train_y))
    loglik = np.log((counts + alpha) / (counts + alpha).sum(1, keepdims=True))

    def predict_rows(rows):
        out = []
        for row in rows:
            s = prior.copy()
            for j, c in row.items():
                s += c * loglik[:, j]
            out.append(int(s.argmax()))
        return out

    return predict_rows


def logistic_regression(train_rows, train_y, n_labels, n_feats, weight_decay, epochs, seed):
    """Multinomial logistic regression on word counts (Adam, L2 penalty), trained with torch."""
    torch.manual_seed(seed)
    bag = nn.EmbeddingBag(n_feats, n_labels, mode="sum")
    nn.init.zeros_(bag.weight)
    bias = nn.Parameter(torch.zeros(n_labels))
    opt = torch.optim.Adam(list(bag.parameters()) + [bias], lr=0.02)
    rng = random.Random(seed)

    def flat(rows):
        idx, w, offs = [], [], []
        for row in rows:
            offs.append(len(idx))
            for j, c in sorted(row.items()):
                idx.append(j)
                w.append(float(c))
        return torch.tensor(idx, dtype=torch.long), torch.tensor(w), torch.tensor(offs, dtype=torch.long)

    order = list(range(len(train_rows)))
    y_all = torch.tensor(train_y)
    for _ in range(epochs):
        rng.shuffle(order)
        for b in range(0, len(order), 256):
            idx = order[b : b + 256]
            i, w, o = flat([train_rows[k] for k in idx])
            logits = bag(i, o, per_sample_weights=w) + bias
            loss = F.cross_entropy(logits, y_all[idx]) + weight_decay * bag.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def predict_rows(rows):
        with torch.no_grad():
            i, w, o = flat(rows)
            return (bag(i, o, per_sample_weights=w) + bias).argmax(-1).tolist()

    return predict_rows


def run_baselines(settings, train, dev, test, n_labels):
    cfg = settings["baselines"]
    t0 = time.time()
    word_counts = collections.Counter()
    for r in train:
        word_counts.update(set(basic_tokenize(r["text"])))
    words = sorted(w for w, c in word_counts.items() if c >= cfg["min_word_count"])
    index = {w: i for i, w in enumerate(words)}
    tr, dv, te = (bow_features([r["text"] for r in rs], index) for rs in (train, dev, test))
    ytr, ydv, yte = ([r["label"] for r in rs] for rs in (train, dev, test))
    out = {}

    majority = collections.Counter(ytr).most_common(1)[0][0]
    out["majority_class"] = metrics([majority] * len(yte), yte, n_labels)[0]

    def pick(name, make, grid):
        # Each baseline gets its regularisation chosen on the dev split, as the
        # BERT classifier gets its epoch, so the comparison is fair.
        scored = []
        for g in grid:
            p = make(g)
            scored.append((metrics(p(dv), ydv, n_labels)[0]["accuracy"], g, p))
        dev_acc, g, p = max(scored, key=lambda s: s[0])
        res = metrics(p(te), yte, n_labels)[0]
        res.update({"chosen": g, "dev_accuracy": dev_acc})
        out[name] = res
        log(f"baseline {name}: {res}")

    pick("naive_bayes", lambda a: naive_bayes(tr, ytr, n_labels, len(words), a), cfg["nb_alpha_grid"])
    pick(
        "logistic_regression",
        lambda wd: logistic_regression(tr, ytr, n_labels, len(words), wd, cfg["lr_epochs"], settings["seed"]),
        cfg["lr_weight_decay_grid"],
    )
    return out, len(words), time.time() - t0


# ---------------------------------------------------------------------------
# Export


def hf_config(model_cfg, labels):
    cfg = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": model_cfg["vocab_size"],
        "hidden_size": model_cfg["hidden_size"],
        "num_hidden_layers": model_cfg["num_hidden_layers"],
        "num_attention_heads": model_cfg["num_attention_heads"],
        "intermediate_size": model_cfg["intermediate_size"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": model_cfg["hidden_dropout_prob"],
        "attention_probs_dropout_prob": model_cfg["attention_probs_dropout_prob"],
        "max_position_embeddings": model_cfg["max_position_embeddings"],
        "type_vocab_size": model_cfg["type_vocab_size"],
        "initializer_range": model_cfg["initializer_range"],
        "layer_norm_eps": model_cfg["layer_norm_eps"],
        "pad_token_id": model_cfg["pad_token_id"],
        "position_embedding_type": "absolute",
        "problem_type": "single_label_classification",
        "torch_dtype": "float32",
        "id2label": {str(i): l for i, l in enumerate(labels)},
        "label2id": {l: i for i, l in enumerate(labels)},
    }
    return cfg


def export(model, model_cfg, labels, vocab, out_dir, max_len):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    tensors = {k: v for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model_cfg, labels), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        for tok in vocab:
            f.write(tok + "\n")
    tok_cfg = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "do_basic_tokenize": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": max_len,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
        "special_token_ids": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")
    return tensors


def load_exported(out_dir):
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["num_labels"] = len(cfg["id2label"])
    model = BertForSequenceClassification(cfg)
    model.load_state_dict(read_safetensors(os.path.join(out_dir, "model.safetensors")), strict=True)
    model.eval()
    return model


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_samples(test, labels, n, min_words, seed):
    """A seeded, label-stratified draw of held-out texts (round-robin over the sections)."""
    rng = random.Random(seed)
    by_label = collections.defaultdict(list)
    for r in sorted(test, key=lambda r: r["package"]):
        if len(r["text"].split()) >= min_words:
            by_label[r["label"]].append(r)
    for lst in by_label.values():
        rng.shuffle(lst)
    out = []
    k = 0
    while len(out) < n:
        for c in range(len(labels)):
            if k < len(by_label[c]) and len(out) < n:
                out.append(by_label[c][k])
        k += 1
    rng.shuffle(out)
    return out


def write_results_md(path, res):
    b = res["baselines"]
    lines = [
        "# Demo model: Debian package topic classifier",
        "",
        "A small BERT, pre-trained with masked-LM on Debian package descriptions and fine-tuned to",
        "predict the package's `Section`. Everything here is written by `demo/train.py`; remake with:",
        "",
        "```",
        res["command"],
        "```",
        "",
        "## Held-out test set",
        "",
        f"{res['sizes']['test']} descriptions whose source packages hash into the test split "
        f"(no source package has binaries on both sides).",
        "",
        "| model | accuracy | macro-F1 |",
        "| --- | --- | --- |",
        f"| majority class (`{res['majority_label']}`) | {b['majority_class']['accuracy']:.4f} | {b['majority_class']['macro_f1']:.4f} |",
        f"| multinomial naive Bayes, word counts (alpha {b['naive_bayes']['chosen']}) | {b['naive_bayes']['accuracy']:.4f} | {b['naive_bayes']['macro_f1']:.4f} |",
        f"| logistic regression, word counts (L2 {b['logistic_regression']['chosen']}) | {b['logistic_regression']['accuracy']:.4f} | {b['logistic_regression']['macro_f1']:.4f} |",
        f"| **BERT (this model, exported weights)** | **{res['bert']['test']['accuracy']:.4f}** | **{res['bert']['test']['macro_f1']:.4f}** |",
        "",
        f"BERT without pre-training is not trained here; the MLM stage reached masked-token accuracy "
        f"{res['bert']['pretrain_history'][-1]['mlm_acc']:.3f} (loss {res['bert']['pretrain_history'][-1]['mlm_loss']:.3f}).",
        "",
        "Per section (BERT, test):",
        "",
        "| section | train | test | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for lab, pl in zip(res["labels"], res["bert"]["per_label"]):
        lines.append(
            f"| {lab} | {res['label_counts']['train'][lab]} | {pl['support']} | {pl['precision']:.3f} | {pl['recall']:.3f} | {pl['f1']:.3f} |"
        )
    s = res["sizes"]
    w = res["wall_seconds"]
    m = res["model"]
    lines += [
        "",
        "## Data",
        "",
        f"- Corpus: {', '.join(os.path.basename(f['path']) for f in res['corpus_files'])} "
        f"({res['corpus']['packages']} packages).",
        f"- Text: the `Description` field. {res['corpus']['with_long_description']} of these indexes' records carry a long "
        "description: Debian ships the long texts in separate `Translation-en` files that this machine's apt does not "
        "download, so in practice the text is the one-line synopsis (about 7 words).",
        f"- Deduplicated by lower-cased text: {res['corpus']['unique_texts']} unique texts "
        f"({res['corpus']['repeats_dropped']} repeats dropped; {res['corpus']['repeats_with_other_section']} of them "
        "had another section and keep the first package's, in package-name order).",
        f"- Labels: the {len(res['labels'])} sections with the most unique descriptions (each has over "
        f"{min(res['label_counts']['all'].values())}); the smaller sections are left out of the classifier, "
        "since most have too few examples to learn or test (games is next, then x11, text, sound, misc).",
        "  Section prefixes `contrib/` and `non-free/` are stripped.",
        f"- Split by SHA-256 of the source package name: train {s['train']}, dev {s['dev']}, test {s['test']} "
        "labelled texts. The dev split chooses the fine-tuning epoch and the baselines' regularisation.",
        f"- Masked-LM pre-training uses the train split of every section ({s['pretrain_texts']} texts), never dev or test.",
        "",
        "## Model and training",
        "",
        f"- WordPiece vocabulary of {m['vocab_size']} tokens learnt from the training texts (uncased, "
        "Hugging Face BertTokenizer rules; `[PAD]`,`[UNK]`,`[CLS]`,`[SEP]`,`[MASK]` = ids 0-4).",
        f"- BERT: {m['num_hidden_layers']} layers, hidden {m['hidden_size']}, {m['num_attention_heads']} heads, "
        f"intermediate {m['intermediate_size']}, {m['max_position_embeddings']} positions: {m['parameters']} parameters, "
        f"`model.safetensors` {m['safetensors_bytes']} bytes (F32).",
        f"- Pre-training: {res['settings']['pretrain']['epochs']} epochs of masked LM (15%, 80/10/10) over packed "
        f"sequences of up to {res['settings']['pretrain']['max_len']} tokens; fine-tuning: "
        f"{res['settings']['finetune']['epochs']} epochs, best dev epoch {res['bert']['best_epoch']} kept.",
        f"- Wall time on {res['threads']} CPU threads ({res['machine']}): data and vocabulary {w['data_and_vocab']:.0f} s, "
        f"pre-training {w['pretrain']:.0f} s, fine-tuning {w['finetune']:.0f} s, baselines {w['baselines']:.0f} s, "
        f"total {w['total']:.0f} s ({w['total'] / 60:.1f} min).",
        f"- Exported weights reloaded from `model.safetensors` reproduce the in-memory logits to "
        f"{res['export_max_abs_diff']:.2e}.",
        "",
        "## Samples",
        "",
        f"`samples.jsonl` holds {res['samples']['count']} held-out descriptions (a seeded draw, round-robin over the "
        f"sections, at least {res['settings']['samples']['min_words']} words); the model gets "
        f"{res['samples']['correct']} of them right. `samples_reference.json` has the input ids and logits of the "
        "first 8 for parity checks of the Go engine.",
        "",
        "| package | section | predicted | text |",
        "| --- | --- | --- | --- |",
    ]
    for sp in res["samples"]["predictions"]:
        lines.append(f"| {sp['package']} | {sp['section']} | {sp['predicted']} | {sp['text']} |")
    lines += [
        "",
        "The Packages index changes with Debian point releases; `results.json` records the SHA-256 of each "
        "decompressed index used, so a remake on another snapshot is seen to differ.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", required=True, help="JSON file with every hyper-parameter and seed")
    ap.add_argument("--out", required=True, help="model directory to write (replaced)")
    ap.add_argument("--report-dir", help="where samples and results go (default: the settings file's directory)")
    args = ap.parse_args()
    t_start = time.time()
    with open(args.settings) as f:
        settings = json.load(f)
    report_dir = args.report_dir or os.path.dirname(os.path.abspath(args.settings))
    torch.set_num_threads(settings["threads"])
    torch.use_deterministic_algorithms(True)
    seed = settings["seed"]
    random.seed(seed)
    np.random.seed(seed)

    records, files, with_long = load_corpus(settings)
    unique, repeats, conflicts = dedup_and_split(records, settings)
    labels = settings["sections"]
    label_id = {l: i for i, l in enumerate(labels)}
    all_counts = collections.Counter(r["section"] for r in unique)
    for l in labels:
        if all_counts[l] < settings["min_section_count"]:
            raise SetupError(f"section {l} has {all_counts[l]} unique descriptions, under min_section_count")
    for r in unique:
        r["label"] = label_id.get(r["section"])
    split = {s: [r for r in unique if r["split"] == s and r["label"] is not None] for s in ("train", "dev", "test")}
    pre_texts = [r["text"] for r in unique if r["split"] == "train"]
    log(f"labelled: train {len(split['train'])}, dev {len(split['dev'])}, test {len(split['test'])}; "
        f"pre-training texts {len(pre_texts)}")

    vocab, n_alpha = train_wordpiece(pre_texts, settings["tokenizer"]["vocab_size"], settings["tokenizer"]["min_char_count"])
    tok = WordPieceTokenizer(vocab)
    model_cfg = dict(settings["model"])
    model_cfg["vocab_size"] = len(vocab)
    model_cfg["num_labels"] = len(labels)
    max_len = model_cfg["max_position_embeddings"]
    docs = [tok.encode(t, max_len)[1:-1] for t in pre_texts]
    n_tokens = sum(len(d) for d in docs)
    n_unk = sum(d.count(UNK_ID) for d in docs)
    log(f"vocabulary {len(vocab)} tokens ({n_alpha} characters); {n_tokens} pre-training tokens, {n_unk} [UNK]")
    enc = {s: [(tok.encode(r["text"], max_len), r["label"]) for r in rs] for s, rs in split.items()}
    t_data = time.time() - t_start

    t0 = time.time()
    mlm, pre_hist, pre_steps = pretrain(model_cfg, settings["pretrain"], docs, seed)
    t_pre = time.time() - t0
    bert_state = mlm.bert.state_dict()
    bert_state = {k: v for k, v in bert_state.items() if not k.startswith("pooler.")}

    t0 = time.time()
    clf, ft_hist, best_epoch = finetune(model_cfg, settings["finetune"], bert_state, enc["train"], enc["dev"], seed)
    t_ft = time.time() - t0

    t0 = time.time()
    baselines, bow_vocab, _ = run_baselines(settings, split["train"], split["dev"], split["test"], len(labels))
    t_base = time.time() - t0

    clf.eval()
    tensors = export(clf, model_cfg, labels, vocab, args.out, max_len)
    reloaded = load_exported(args.out)
    test_x = [x for x, _ in enc["test"]]
    test_y = [y for _, y in enc["test"]]
    logits_mem = predict(clf, test_x)
    logits = predict(reloaded, test_x)
    export_diff = float((logits - logits_mem).abs().max())
    bert_test, per_label = metrics(logits.argmax(-1).tolist(), test_y, len(labels))
    bert_dev = metrics(predict(reloaded, [x for x, _ in enc["dev"]]).argmax(-1).tolist(), [y for _, y in enc["dev"]], len(labels))[0]
    log(f"BERT test: {bert_test} (export max abs diff {export_diff:.2e})")

    scfg = settings["samples"]
    samples = pick_samples(split["test"], labels, scfg["count"], scfg["min_words"], seed)
    sample_rows, sample_preds, reference = [], [], []
    with torch.no_grad():
        for n, r in enumerate(samples):
            ids = tok.encode(r["text"], max_len)
            ids_t = torch.tensor([ids])
            mask = torch.ones_like(ids_t)
            lg = reloaded(ids_t, mask, torch.zeros_like(ids_t))[0]
            pred = labels[int(lg.argmax())]
            sid = f"demo-{n + 1:02d}"
            sample_rows.append({"id": sid, "package": r["package"], "section": r["section"], "text": r["text"]})
            sample_preds.append({"id": sid, "package": r["package"], "section": r["section"], "predicted": pred, "text": r["text"]})
            if n < scfg["reference_count"]:
                probs = torch.softmax(lg, -1)
                reference.append({
                    "id": sid,
                    "text": r["text"],
                    "tokens": tok.tokenize(r["text"]),
                    "input_ids": ids,
                    "token_type_ids": [0] * len(ids),
                    "attention_mask": [1] * len(ids),
                    "logits": [float(x) for x in lg],
                    "label": pred,
                    "score": float(probs.max()),
                })
    with open(os.path.join(report_dir, "samples.jsonl"), "w") as f:
        for row in sample_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(report_dir, "samples_reference.json"), "w") as f:
        json.dump({
            "model": os.path.relpath(os.path.abspath(args.out), os.path.dirname(report_dir)),
            "note": "single unpadded sequences, [CLS] text [SEP]; logits of the exported model.safetensors in F32",
            "tolerance_logits": 1e-3,
            "cases": reference,
        }, f, indent=1, ensure_ascii=False)
        f.write("\n")
    correct = sum(p["section"] == p["predicted"] for p in sample_preds)
    log(f"samples: {correct}/{len(sample_preds)} correct")

    t_total = time.time() - t_start
    st_path = os.path.join(args.out, "model.safetensors")
    res = {
        "command": "/usr/bin/python3 demo/train.py --settings demo/settings.json --out demo/model",
        "labels": labels,
        "majority_label": labels[collections.Counter(r["label"] for r in split["train"]).most_common(1)[0][0]],
        "sizes": {
            "train": len(split["train"]), "dev": len(split["dev"]), "test": len(split["test"]),
            "pretrain_texts": len(pre_texts), "pretrain_tokens": n_tokens, "pretrain_steps": pre_steps,
            "bow_vocabulary": bow_vocab,
        },
        "label_counts": {
            "all": {l: all_counts[l] for l in labels},
            **{s: {l: sum(1 for r in split[s] if r["section"] == l) for l in labels} for s in split},
        },
        "corpus": {
            "packages": len(records), "unique_texts": len(unique), "repeats_dropped": repeats,
            "repeats_with_other_section": conflicts, "with_long_description": with_long,
            "sections_by_unique_texts": dict(all_counts.most_common()),
        },
        "corpus_files": files,
        "baselines": baselines,
        "bert": {
            "test": bert_test, "dev": bert_dev, "per_label": per_label, "best_epoch": best_epoch,
            "pretrain_history": pre_hist, "finetune_history": ft_hist,
        },
        "model": {
            **{k: model_cfg[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size", "max_position_embeddings")},
            "parameters": int(sum(t.numel() for t in tensors.values())),
            "safetensors_bytes": os.path.getsize(st_path),
            "safetensors_sha256": sha256_file(st_path),
        },
        "export_max_abs_diff": export_diff,
        "samples": {"count": len(sample_preds), "correct": correct, "predictions": sample_preds},
        "wall_seconds": {
            "data_and_vocab": round(t_data, 1), "pretrain": round(t_pre, 1), "finetune": round(t_ft, 1),
            "baselines": round(t_base, 1), "total": round(t_total, 1),
        },
        "threads": settings["threads"],
        "machine": f"{os.cpu_count()} CPUs visible, torch {torch.__version__}",
        "settings": settings,
    }
    with open(os.path.join(report_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_results_md(os.path.join(report_dir, "RESULTS.md"), res)
    log(f"done in {t_total:.0f}s; wrote {args.out} and results in {report_dir}")


if __name__ == "__main__":
    try:
        main()
    except SetupError as e:
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(1)
