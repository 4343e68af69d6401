"""Does our MLM learn from context, and how fast? The same masked-LM run
against stock fairseq RoBERTa on a corpus whose every masked piece is
determined by its neighbours.

    python benchmarks/mlm_plateau.py                  # 2,000 updates per row, ~23 min on one core
    python benchmarks/mlm_plateau.py --updates 500    # quicker, plateau only
    python benchmarks/mlm_plateau.py --dropout 0 --out benchmarks/out/mlm_plateau-dropout0
    python benchmarks/mlm_plateau.py --seed 2          # another seed, same corpus

Why: experiment 1's MLM pretraining (docs/results.md) sat at the unigram
level for 8,000 updates, and every MLM encoder of findings 2-5 stopped at
7.9-9.3 bits. A plugin bug that kept MLM from using context (attention,
positions, masks out of line with targets) would look the same as a slow
optimisation. This tells them apart with the peer a user would trust: stock
fairseq's ``--task masked_lm --arch roberta_base`` at ``xlm_mini``'s sizes,
same batch, optimiser and schedule as the reproductions, on the same
binarized data. CLM on the same data is the control: it can predict from
the current input alone, without attention, so it falls at once.

The corpus: sentences of NATO alphabet words in cyclic order from a random
start (``alpha bravo charlie ...``), one language; a vocabulary of 60
sentencepiece pieces makes it nearly character level, so a masked piece is
given by its neighbours and a model that attends to them goes far below the
unigram entropy (printed as the plateau's level). Prints a table of the
training loss (bits) by update and writes
``benchmarks/out/mlm_plateau/mlm_plateau.json`` (``mlm_plateau-seedN.json``
for another ``--seed``, whose runs go to ``run-seedN/`` beside seed 1's);
finished runs are skipped when rerun (benchmarks/repro/steps.py).
"""
import argparse
import math
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "repro"))
import common as C  # noqa: E402

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]
SHARED = ["--tokens-per-sample", "128", "--batch-size", "16"]


def write_corpus(path: str, sentences: int, seed: int) -> str:
    if not os.path.exists(path):
        rng = random.Random(seed)
        lines = []
        for _ in range(sentences):
            start, length = rng.randrange(len(WORDS)), rng.randint(8, 25)
            lines.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(length)))
        C.atomic_write(path, "\n".join(lines) + "\n")
    return path


def stock_data_dir(data: str, out: str) -> str:
    """fairseq's masked_lm reads DIR/train.{bin,idx} and DIR/dict.txt: links
    to the English side of the prepared directory."""
    os.makedirs(out, exist_ok=True)
    for name, target in [("dict.txt", "dict.txt")] + [(f"{s}.{e}", f"{s}.en.{e}")
                                                      for s in ("train", "valid") for e in ("bin", "idx")]:
        link = os.path.join(out, name)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(os.path.join(data, target), out), link)
    return out


def unigram_bits(data: str) -> float:
    """Entropy (bits) of the piece distribution of the train stream."""
    import numpy as np
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    ds = MMapIndexedDataset(os.path.join(data, "train.en"))
    counts = np.bincount(np.concatenate([ds[i].numpy() for i in range(len(ds))]))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def loss_curve(log_path: str) -> dict:
    """update -> training loss (bits) of the last attempt in a step's fairseq log."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = C.last_attempt(f.read())
    return {int(n): float(loss) for loss, n in
            re.findall(r"\| train_inner \|.* loss=([0-9.]+),.*num_updates=(\d+)", text)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=2000, help="updates per run (default: 2000)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, as the reproductions (default: 1e-3)")
    p.add_argument("--seed", type=int, default=1, help="training seed (the corpus is the same)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout and attention dropout of every run (default: each architecture's own, 0.1)")
    p.add_argument("--out", default=os.path.join(C.REPO, "benchmarks", "out", "mlm_plateau"))
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    steps = C.Steps()
    text = os.path.join(out, "text")
    mono = {"train": {"en": write_corpus(os.path.join(text, "train.en"), 20000, 1)},
            "valid": {"en": write_corpus(os.path.join(text, "valid.en"), 300, 2)}}
    data = C.prepare(steps, os.path.join(out, "data"), mono, {}, 60)
    layers, dim, ffn, heads, _pre_ln, _lang = C.xlm_architectures()["xlm_mini"]
    rows = {
        "xlm_ds MLM (xlm_mini)": (data, ["--task", "xlm", "--arch", "xlm_mini", "--criterion", "xlm_lm",
                                         "--objectives", "mlm:en"]),
        "stock fairseq RoBERTa MLM (same sizes)": (
            stock_data_dir(data, os.path.join(out, "stock-data")),
            ["--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base", "--sample-break-mode",
             "none", "--encoder-layers", str(layers), "--encoder-embed-dim", str(dim),
             "--encoder-ffn-embed-dim", str(ffn), "--encoder-attention-heads", str(heads)]),
        "xlm_ds CLM (control)": (data, ["--task", "xlm", "--arch", "xlm_mini", "--criterion", "xlm_lm",
                                        "--objectives", "clm:en"]),
    }
    shared = SHARED + ([] if args.dropout is None else
                       ["--dropout", str(args.dropout), "--attention-dropout", str(args.dropout)])
    curves = {}
    # seed 1's runs keep the directory they were first measured in
    runs = os.path.join(out, "run" if args.seed == 1 else f"run-seed{args.seed}")
    for i, (name, (row_data, row_args)) in enumerate(rows.items()):
        save = os.path.join(runs, f"{i}-{name.split(' (')[0].replace(' ', '-')}")
        C.train(steps, row_data, save, args.seed, args.updates, row_args + shared, lr=args.lr)
        curves[name] = loss_curve(os.path.join(save, "train.log"))
    unigram = unigram_bits(data)
    marks = sorted({u for c in curves.values() for u in c if u % max(50, args.updates // 8) == 0})
    header = "| run | " + " | ".join(str(u) for u in marks) + " |"
    lines = [f"Training loss (bits) by update; unigram entropy of the stream {unigram:.2f} bits", "",
             header, "|---" * (len(marks) + 1) + "|"]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{c[u]:.2f}" if u in c else "-" for u in marks) + " |")
    table = "\n".join(lines)
    cmd = "python benchmarks/mlm_plateau.py" + "".join(
        f" --{k} {v}" for k, v in (("updates", args.updates), ("lr", args.lr), ("seed", args.seed),
                                   ("dropout", args.dropout), ("out", args.out))
        if v != p.get_default(k))
    print("\n" + table + f"\n\nregenerate: {cmd}")
    name = "mlm_plateau" + ("" if args.seed == 1 else f"-seed{args.seed}")
    C.write_json(os.path.join(out, f"{name}.json"),
                 {"command": cmd, "seed": args.seed, "unigram_bits": round(unigram, 3), "updates": args.updates,
                  "lr": args.lr, "flags": shared, "dropout": args.dropout,
                  "curves": {k: {str(u): v for u, v in c.items()} for k, c in curves.items()},
                  "table_markdown": table})
    return 0 if all(curves.values()) and not math.isnan(unigram) else 1


if __name__ == "__main__":
    sys.exit(main())
