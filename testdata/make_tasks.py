#!/usr/bin/python3
"""Generate testdata/tasks: model directories laid out as they are found on
the Hub (a one-label cross-encoder, a multi-label classifier, a CoNLL token
classifier, two sentence-transformers exports), with random weights, a small
WordPiece vocabulary and the outputs of Hugging Face's BERT on texts written
for each task.

Run with Debian's PyTorch (no transformers needed):

    /usr/bin/python3 testdata/make_tasks.py

The forward pass is make_shapes.py's, which first checks itself against
Hugging Face's outputs in testdata/bert-tiny/reference.safetensors. The
tokenizer here is Hugging Face's BertTokenizerFast on a vocab.txt, restated:
BertNormalizer (clean text, CJK spacing, lowercase, strip accents) with the
alignment of every normalised character to the original one, BertPreTokenizer
(whitespace, punctuation), WordPiece (greedy longest match, "##"). The
token-classification expectations follow transformers' TokenClassificationPipeline
(postprocess, gather_pre_entities, aggregate, group_entities) step for step.
Seeds are fixed: running it twice gives the same files.
"""

import collections
import json
import math
import os
import sys
import unicodedata

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_shapes  # noqa: E402

OUT = os.path.join(HERE, "tasks")

# ------------------------------------------------------------------ vocabulary

WORDS = """
the a an of in on at to is are was and or for with from by near said says met
works opened lives live living capital city country river sea mountain what
which who how many people population million big small old new cat dog sat
mat barked flows flow into north south paris berlin rome france germany italy
japan tokyo angela emmanuel taro jean luc zoe cafe united nations new york
louvre model reads text bert sentence search query answer best good bad
""".split()
PIECES = """
mer ##kel mac ##ron mu ##ller sie ##mens mun ##chen yam ##ada head ##quarters
lum ##iere ##tan ##bul an ##kara tu ##rk ##iye ##s ##ed ##ing
""".split()
CJK = list("東京日本人")
PUNCT = list(".,;:!?-'\"()")


def make_vocab():
    v = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for w in PUNCT + list("0123456789") + CJK + WORDS + PIECES:
        if w not in v:
            v.append(w)
    for c in "abcdefghijklmnopqrstuvwxyz":
        for w in (c, "##" + c):
            if w not in v:
                v.append(w)
    return v


# ------------------------------------------- BertTokenizerFast, with offsets


def is_control(c):
    if c in "\t\n\r":
        return False
    return unicodedata.category(c).startswith("C")


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_punct(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(c):
    cp = ord(c)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class Tokenizer:
    def __init__(self, vocab, lowercase=True):
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.inv = vocab
        self.lowercase = lowercase

    def normalise(self, text):
        """BertNormalizer: (char, index of the original char) pairs."""
        out = []
        for i, c in enumerate(text):
            if ord(c) == 0 or c == "\ufffd" or is_control(c):
                continue
            if is_whitespace(c):
                out.append((" ", i))
                continue
            if is_cjk(c):
                out += [(" ", i), (c, i), (" ", i)]
                continue
            out.append((c, i))
        res = []
        for c, i in out:
            s = c.lower() if self.lowercase else c
            if self.lowercase:  # strip_accents follows lowercase
                s = "".join(ch for ch in unicodedata.normalize("NFD", s) if unicodedata.category(ch) != "Mn")
            res += [(ch, i) for ch in s]
        return res

    def words(self, norm):
        words, cur = [], []
        for c, i in norm:
            if c == " ":
                if cur:
                    words.append(cur)
                cur = []
            elif is_punct(c):
                if cur:
                    words.append(cur)
                words.append([(c, i)])
                cur = []
            else:
                cur.append((c, i))
        if cur:
            words.append(cur)
        return words

    def tokenize(self, text):
        """[(token, id, start, end)] with start/end offsets into text."""
        toks = []
        for w in self.words(self.normalise(text)):
            s = "".join(c for c, _ in w)
            span = (w[0][1], w[-1][1] + 1)
            if len(s) > 100:
                toks.append(("[UNK]", self.vocab["[UNK]"]) + span)
                continue
            pieces, start, bad = [], 0, False
            while start < len(s):
                end, found = len(s), None
                while start < end:
                    sub = s[start:end] if start == 0 else "##" + s[start:end]
                    if sub in self.vocab:
                        found = sub
                        break
                    end -= 1
                if found is None:
                    bad = True
                    break
                pieces.append((found, self.vocab[found], w[start][1], w[end - 1][1] + 1))
                start = end
            if bad:
                toks.append(("[UNK]", self.vocab["[UNK]"]) + span)
            else:
                toks += pieces
        return toks

    def encode(self, a, b=None, max_len=None):
        """[CLS] a [SEP] (b [SEP]), longest-first truncation to max_len."""
        ta = [t[1] for t in self.tokenize(a)]
        tb = [t[1] for t in self.tokenize(b)] if b is not None else None
        if max_len is not None:
            n_special = 2 if tb is None else 3
            while len(ta) + (len(tb) if tb else 0) + n_special > max_len:
                if tb is None or len(ta) > len(tb):
                    ta = ta[:-1]
                else:
                    tb = tb[:-1]
        ids = [self.vocab["[CLS]"]] + ta + [self.vocab["[SEP]"]]
        types = [0] * len(ids)
        if tb is not None:
            ids += tb + [self.vocab["[SEP]"]]
            types += [1] * (len(tb) + 1)
        return ids, types


def batch(rows):
    """Pads (ids, types) rows into [B,T] tensors."""
    T = max(len(r[0]) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    types = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, (i, t) in enumerate(rows):
        ids[b, :len(i)] = torch.tensor(i)
        types[b, :len(t)] = torch.tensor(t)
        mask[b, :len(i)] = 1
    return ids, types, mask


# -------------------------------------------------------------- the models

BASE = {"hidden": 32, "layers": 2, "heads": 4, "inter": 64, "act": "gelu", "max_pos": 64,
        "type_vocab": 2, "eps": 1e-12, "format": "safetensors"}


def write_model(name, m, seed, vocab, extra_cfg=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    m = dict(BASE, **m)
    m["vocab"] = len(vocab)
    cfg = make_shapes.make_config(m)
    if extra_cfg:
        cfg.update(extra_cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    g = torch.Generator().manual_seed(seed)
    sd = make_shapes.make_weights(m, g)
    if m["arch"] == "BertModel":
        H = m["hidden"]
        sd["bert.pooler.dense.weight"] = torch.randn(H, H, generator=g) / math.sqrt(H)
        sd["bert.pooler.dense.bias"] = torch.randn(H, generator=g) * 0.1
    if m["arch"] == "BertForSequenceClassification" and len(m["labels"]) == 1:
        # A reranker's logit spreads over a few units, as trained ones do.
        sd["classifier.weight"] = sd["classifier.weight"] * 3
    if m["arch"] == "BertModel":
        # sentence-transformers saves the bare encoder without the prefix.
        sd = collections.OrderedDict((k[len("bert."):], v) for k, v in sd.items())
    make_shapes.st_write(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    back = make_shapes.st_read(os.path.join(d, "model.safetensors"))
    return d, cfg, back


def forward(cfg, sd, rows):
    ids, types, mask = batch(rows)
    with torch.no_grad():
        out = make_shapes.bert_forward(cfg, sd, ids, types, mask)
    return out, mask


def fl(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def dump(d, obj):
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------- rerank

QUERIES = [
    ("what is the capital of france", [
        "paris is the capital of france",
        "berlin is the capital of germany",
        "the cat sat on the mat",
        "rome is a big old city in italy",
        "many people live in paris",
        "france is a country",
    ]),
    ("how many people live in tokyo", [
        "tokyo is the capital of japan",
        "the population of tokyo is many million",
        "a dog barked",
        "people live near the sea",
    ]),
]


def make_cross_encoder(vocab):
    tok = Tokenizer(vocab)
    d, cfg, sd = write_model("cross-encoder", {"arch": "BertForSequenceClassification", "labels": ["LABEL_0"]}, 1101, vocab)
    ref = {"queries": []}
    for q, passages in QUERIES:
        out, _ = forward(cfg, sd, [tok.encode(q, p) for p in passages])
        logits = fl(out["logits"])
        s = sorted(logits, reverse=True)
        assert min(a - b for a, b in zip(s, s[1:])) > 1e-3, "near tie in %r" % q
        assert s[0] - s[-1] > 1.0, "logits barely differ"
        ref["queries"].append({"query": q, "passages": passages, "logits": logits,
                               "order": sorted(range(len(logits)), key=lambda i: -logits[i])})
    dump(d, ref)


def make_multilabel(vocab):
    tok = Tokenizer(vocab)
    labels = ["sports", "politics", "travel"]
    d, cfg, sd = write_model("multi-label", {"arch": "BertForSequenceClassification", "labels": labels}, 1203, vocab,
                             {"problem_type": "multi_label_classification"})
    texts = ["angela merkel met emmanuel macron in paris", "the dog sat on the mat", "rome is a big city"]
    out, _ = forward(cfg, sd, [tok.encode(t) for t in texts])
    dump(d, {"labels": labels, "texts": texts, "logits": [fl(r) for r in out["logits"]]})


# ------------------------------------------------------------------- NER

CONLL = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
NER_TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris.",
    "  Zoë   Müller works at Siemens in München  .",
    "東京 is the capital of Japan 😀 says Taro Yamada",
    "The United Nations headquarters is in New York City",
    "Café Lumière opened near the Louvre, said Jean-Luc.",
    "\u0130stanbul\u00a0and\tAnkara\n\nare in T\u00fcrkiye",
]


def decode(tokens):
    """tokenizers' WordPiece decoder with cleanup, as convert_tokens_to_string."""
    out = []
    for i, t in enumerate(tokens):
        if i != 0:
            t = t[2:] if t.startswith("##") else " " + t
        for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            t = t.replace(a, b)
        out.append(t)
    return "".join(out)


def softmax(x):
    x = x.double()
    return torch.softmax(x, -1)


def pre_entities(text, toks, scores):
    """gather_pre_entities: the [CLS]/[SEP] rows are not in toks."""
    pre = []
    for k, (word, tid, start, end) in enumerate(toks):
        ref = text[start:end]
        is_sub = len(word) != len(ref)
        if word == "[UNK]":
            word, is_sub = ref, False
        pre.append({"word": word, "scores": scores[k + 1], "start": start, "end": end, "index": k + 1, "is_subword": is_sub})
    return pre


def aggregate_word(ents, how):
    word = decode([e["word"] for e in ents])
    if how == "first":
        sc = ents[0]["scores"]
    elif how == "max":
        sc = max(ents, key=lambda e: e["scores"].max())["scores"]
    else:
        sc = torch.stack([e["scores"] for e in ents]).mean(0)
    i = int(sc.argmax())
    return {"entity": CONLL[i], "score": float(sc[i]), "word": word, "start": ents[0]["start"], "end": ents[-1]["end"]}


def get_tag(name):
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def group(ents):
    groups, cur = [], []

    def close():
        tag = cur[0]["entity"].split("-", 1)[-1]
        groups.append({"entity_group": tag, "score": sum(e["score"] for e in cur) / len(cur),
                       "word": decode([e["word"] for e in cur]), "start": cur[0]["start"], "end": cur[-1]["end"]})

    for e in ents:
        if not cur:
            cur = [e]
            continue
        bi, tag = get_tag(e["entity"])
        _, last = get_tag(cur[-1]["entity"])
        if tag == last and bi != "B":
            cur.append(e)
        else:
            close()
            cur = [e]
    if cur:
        close()
    return groups


def ner_outputs(text, toks, scores):
    pre = pre_entities(text, toks, scores)
    res = {}
    tokens = []
    for p in pre:
        i = int(p["scores"].argmax())
        tokens.append({"entity": CONLL[i], "score": float(p["scores"][i]), "index": p["index"], "word": p["word"],
                       "start": p["start"], "end": p["end"]})
    res["none"] = [e for e in tokens if e["entity"] != "O"]
    res["simple"] = [g for g in group(tokens) if g["entity_group"] != "O"]
    for how in ("first", "average", "max"):
        words, cur = [], None
        for p in pre:
            if cur is None:
                cur = [p]
            elif p["is_subword"]:
                cur.append(p)
            else:
                words.append(aggregate_word(cur, how))
                cur = [p]
        if cur is not None:
            words.append(aggregate_word(cur, how))
        res[how] = [g for g in group(words) if g["entity_group"] != "O"]
    return res


# The entities of NER_TEXTS, as a tagger would be trained to find them.
NER_GOLD = [
    [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")],
    [("Zoë   Müller", "PER"), ("Siemens", "ORG"), ("München", "LOC")],
    [("東京", "LOC"), ("Japan", "LOC"), ("Taro Yamada", "PER")],
    [("United Nations", "ORG"), ("New York City", "LOC")],
    [("Café Lumière", "ORG"), ("Louvre", "LOC"), ("Jean-Luc", "PER")],
    [("\u0130stanbul", "LOC"), ("Ankara", "LOC"), ("T\u00fcrkiye", "LOC")],
]


def gold_tags(text, toks, spans):
    tags = ["O"] * len(toks)
    for sub, typ in spans:
        lo = text.index(sub)
        hi = lo + len(sub)
        first = True
        for k, t in enumerate(toks):
            if lo <= t[2] < hi:
                tags[k] = ("B-" if first else "I-") + typ
                first = False
    return tags


def make_ner(vocab):
    tok = Tokenizer(vocab)
    d, cfg, sd = write_model("ner", {"arch": "BertForTokenClassification", "labels": CONLL}, 1307, vocab)
    # Random weights tag at random. The head is fitted instead (least
    # squares on the encoder's outputs for these texts) towards NER_GOLD, so
    # that the answers hold entities of several tokens among O tokens, as a
    # trained tagger's do; whatever it then computes is the reference.
    xs, ys = [], []
    for text, spans in zip(NER_TEXTS, NER_GOLD):
        toks = tok.tokenize(text)
        ids = [tok.vocab["[CLS]"]] + [t[1] for t in toks] + [tok.vocab["[SEP]"]]
        out, _ = forward(cfg, sd, [(ids, [0] * len(ids))])
        h = out["hidden.%d" % (cfg["num_hidden_layers"] - 1)][0]
        for k, tag in enumerate(["O"] + gold_tags(text, toks, spans) + ["O"]):
            xs.append(torch.cat([h[k], torch.ones(1)]))
            y = torch.full((len(CONLL),), -2.0)
            y[CONLL.index(tag)] = 2.0
            ys.append(y)
    X, Y = torch.stack(xs).double(), torch.stack(ys).double()
    # Ridge, not plain least squares: the hidden states are nearly
    # collinear, and an unregularised fit has weights so large that the
    # logits become differences of huge terms, all F32 rounding.
    A = X.t() @ X + 1.0 * torch.eye(X.shape[1], dtype=X.dtype)
    W = torch.linalg.solve(A, X.t() @ Y).float()  # [H+1, labels]
    assert W.abs().max() < 20, "classifier weights up to %g" % W.abs().max()
    sd["classifier.weight"] = W[:-1].t().contiguous()
    sd["classifier.bias"] = W[-1].contiguous()
    make_shapes.st_write(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    sd = make_shapes.st_read(os.path.join(d, "model.safetensors"))
    cases = []
    for text in NER_TEXTS:
        toks = tok.tokenize(text)
        ids = [tok.vocab["[CLS]"]] + [t[1] for t in toks] + [tok.vocab["[SEP]"]]
        out, _ = forward(cfg, sd, [(ids, [0] * len(ids))])
        logits = out["token_logits"][0]
        scores = softmax(logits)
        top2 = torch.topk(scores, 2, -1).values
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4, "near tie in %r" % text
        c = {"text": text, "tokens": [t[0] for t in toks], "ids": ids,
             "offsets": [[t[2], t[3]] for t in toks], "token_logits": [fl(r) for r in logits]}
        c.update(ner_outputs(text, toks, scores))
        cases.append(c)
    n = sum(len(c["none"]) for c in cases)
    g = sum(len(c["simple"]) for c in cases)
    multi = sum(1 for c in cases for e in c["simple"] if " " in e["word"] or e["end"] - e["start"] > 6)
    assert n >= 8 and g >= 5 and multi >= 2, "too few entities to test grouping: %d tokens, %d groups" % (n, g)
    dump(d, {"labels": CONLL, "cases": cases})


# ------------------------------------------------------ sentence-transformers

ST_TEXTS = [
    "The cat sat on the mat",
    "A dog barked near the river",
    "Paris is the capital of France and a big old city with many people living in it",
    "What is the best model for sentence search",
]


def make_st(vocab, name, seed, pooling, normalize, max_seq, st_lower, tok_lower):
    d, cfg, sd = write_model(name, {"arch": "BertModel"}, seed, vocab)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        os.makedirs(os.path.join(d, "2_Normalize"), exist_ok=True)
    with open(os.path.join(d, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": max_seq, "do_lower_case": st_lower}, f, indent=2)
        f.write("\n")
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    pc = collections.OrderedDict([("word_embedding_dimension", BASE["hidden"]),
                                  ("pooling_mode_cls_token", pooling == "cls"),
                                  ("pooling_mode_mean_tokens", pooling == "mean"),
                                  ("pooling_mode_max_tokens", pooling == "max"),
                                  ("pooling_mode_mean_sqrt_len_tokens", pooling == "mean_sqrt_len_tokens"),
                                  ("pooling_mode_weightedmean_tokens", pooling == "weightedmean"),
                                  ("pooling_mode_lasttoken", pooling == "lasttoken"),
                                  ("include_prompt", True)])
    with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
        json.dump(pc, f, indent=2)
        f.write("\n")
    if not tok_lower:
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": False, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}, f, indent=2)
            f.write("\n")
    tok = Tokenizer(vocab, lowercase=tok_lower)
    rows = [tok.encode(t.lower() if st_lower else t, max_len=max_seq) for t in ST_TEXTS]
    canon = collections.OrderedDict(("bert." + k, v) for k, v in sd.items())
    out, mask = forward(cfg, canon, rows)
    x = out["hidden.%d" % (cfg["num_hidden_layers"] - 1)].double()
    m = mask.double().unsqueeze(-1)
    n = m.sum(1)
    pooled = {
        "cls": x[:, 0],
        "mean": (x * m).sum(1) / n,
        "max": (x + (m - 1) * 1e9).max(1).values,
        "mean_sqrt_len_tokens": (x * m).sum(1) / n.sqrt(),
    }
    emb = pooled[pooling]
    if normalize:
        emb = emb / emb.norm(dim=-1, keepdim=True)
    dump(d, {"texts": ST_TEXTS, "lengths": [len(r[0]) for r in rows], "embeddings": [fl(r) for r in emb.float()],
             "mean": [fl(r) for r in pooled["mean"].float()], "cls": [fl(r) for r in pooled["cls"].float()],
             "max": [fl(r) for r in pooled["max"].float()]})


def main():
    torch.set_num_threads(1)
    make_shapes.validate()
    os.makedirs(OUT, exist_ok=True)
    vocab = make_vocab()
    make_cross_encoder(vocab)
    make_multilabel(vocab)
    make_ner(vocab)
    # all-MiniLM's layout: mean pooling, Normalize, max_seq_length 256.
    make_st(vocab, "st-mean", 1409, "mean", True, 256, False, True)
    # bge's: CLS pooling and Normalize; here also a short max_seq_length and
    # sentence-transformers lower-casing in front of a cased tokenizer.
    make_st(vocab, "st-cls", 1511, "cls", True, 12, True, False)
    for root, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            p = os.path.join(root, f)
            print("  %-48s %8d bytes" % (os.path.relpath(p, OUT), os.path.getsize(p)))


if __name__ == "__main__":
    main()
