"""Write demo/heldout.jsonl: the demo model's held-out test set, as train.py splits it.

One line per labelled test description: its text, its section (the gold label)
and the label PyTorch predicts with the exported model (demo/model), so that
Go tests can compute the accuracy and macro-F1 of results.json with the
bertstream engine (loader's TestDemoHeldOut) without the Debian index or
torch. Needs the Packages index train.py read (its SHA-256 is checked
against results.json) and python3-torch.

    /usr/bin/python3 demo/export_heldout.py
"""

import hashlib
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import train  # noqa: E402


def main():
    with open(os.path.join(here, "settings.json")) as f:
        settings = json.load(f)
    with open(os.path.join(here, "results.json")) as f:
        results = json.load(f)
    records, files, _ = train.load_corpus(settings)
    want = {f["path"]: f["sha256"] for f in results["corpus_files"]}
    for f in files:
        if want.get(f["path"]) != f["sha256"]:
            sys.exit(f"{f['path']}: SHA-256 {f['sha256']} is not the index the model was trained on ({want})")
    unique, _, _ = train.dedup_and_split(records, settings)
    labels = settings["sections"]
    label_id = {l: i for i, l in enumerate(labels)}
    test = [r for r in unique if r["split"] == "test" and r["section"] in label_id]
    model_dir = os.path.join(here, "model")
    with open(os.path.join(model_dir, "vocab.txt")) as f:
        vocab = [line.rstrip("\n") for line in f]
    tok = train.WordPieceTokenizer(vocab)
    max_len = settings["model"]["max_position_embeddings"]
    model = train.load_exported(model_dir)
    pred = train.predict(model, [tok.encode(r["text"], max_len) for r in test]).argmax(-1).tolist()
    metrics = train.metrics(pred, [label_id[r["section"]] for r in test], len(labels))[0]
    if metrics != results["bert"]["test"]:
        sys.exit(f"PyTorch on the exported model gives {metrics}, results.json {results['bert']['test']}")
    with open(os.path.join(here, "heldout.jsonl"), "w") as f:
        for r, p in zip(test, pred):
            f.write(json.dumps({"text": r["text"], "section": r["section"], "torch_label": labels[p]}) + "\n")
    print(f"{len(test)} held-out texts, PyTorch {metrics}")


if __name__ == "__main__":
    main()
