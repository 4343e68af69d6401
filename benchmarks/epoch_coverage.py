"""How much of each language's data MLM pretraining actually trains on:
distinct MLM blocks seen per language after each epoch of a real
``fairseq-train --task xlm`` run on the shipped sample, beside the
with-replacement expectation (the theory the run should follow) and the
share of samples that are an exact repeat (same block, same mask) of one
seen in an earlier epoch.

    python benchmarks/epoch_coverage.py --json benchmarks/out/epoch_coverage.json
    # the same measurement of another checkout's code (e.g. before a fix):
    git worktree add /tmp/before COMMIT
    python benchmarks/epoch_coverage.py --code /tmp/before --json benchmarks/out/epoch_coverage_before.json

Every training sample is recorded where fairseq-train hands it to the
trainer (tests/faults/sample_recorder.py through tests/faults/fairseq_probe.py,
copied next to the run, so ``--code`` may be an older checkout). Data: the
shipped sample prepared as ``make demo`` prepares it (6,000 pieces);
objectives (``--objectives``) and batch as the demo's pretraining (MLM
en/de/fr + TLM, 128 tokens, 16 per batch); model ``xlm_tiny`` (the data path does not
depend on the model); 3 epochs.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")
PROBE_FILES = ("fairseq_probe.py", "sample_recorder.py", "nan_injection.py")
LANGS = ("de", "en", "fr")


def run(code, tmp, epochs, tps, batch, alpha, objectives):
    data = os.path.join(tmp, "data")
    env = dict(os.environ, PYTHONPATH=code, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus", os.path.join(SAMPLE, "corpus.yaml"),
                    "--out", data, "--vocab-size", "6000", "--quiet"], check=True, env=env, cwd=code)
    probe = os.path.join(tmp, "probe")
    os.makedirs(probe)
    for name in PROBE_FILES:
        shutil.copy(os.path.join(REPO, "tests", "faults", name), probe)
    samples = os.path.join(tmp, "samples")
    cmd = [sys.executable, os.path.join(probe, "fairseq_probe.py"), data, "--user-dir", os.path.join(code, "xlm_ds"),
           "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
           "--objectives", objectives, "--lang-sampling-alpha", str(alpha),
           "--tokens-per-sample", str(tps), "--batch-size", str(batch), "--optimizer", "adam", "--lr", "1e-3",
           "--max-epoch", str(epochs), "--no-save", "--disable-validation", "--cpu", "--seed", "1",
           "--log-format", "simple", "--log-interval", "1000", "--data-buffer-size", "0"]
    proc = subprocess.run(cmd, env=dict(env, FAULT_SAMPLES=samples), cwd=code, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"fairseq-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in open(samples + ".0")]
    return data, [r for r in rows if r["stream"] == "mlm"]


def block_counts(code, data, tps):
    sys.path.insert(0, code)
    from fairseq.data import Dictionary, data_utils

    from xlm_ds.data.stream_datasets import token_blocks

    d = Dictionary.load(os.path.join(data, "dict.txt"))
    out = {}
    for lang in LANGS:
        mono = data_utils.load_indexed_dataset(os.path.join(data, f"train.{lang}"), d, "mmap")
        out[lang] = len(token_blocks(mono, tps - 1, d.pad(), d.eos()))
    return out


def measure(rows, blocks, epochs):
    table = {}
    for i, lang in enumerate(LANGS):
        n = blocks[lang]
        mine = [r for r in rows if r["lang"] == i]
        draws = collections.Counter(r["epoch"] for r in mine)
        seen, seen_samples, per_epoch = set(), set(), []
        repeats = 0
        for e in range(1, epochs + 1):
            for r in mine:
                if r["epoch"] == e:
                    seen.add(r["id"])
                    key = (r["id"], tuple(r["source"]))
                    repeats += e > 1 and key in seen_samples
            seen_samples |= {(r["id"], tuple(r["source"])) for r in mine if r["epoch"] == e}
            total_draws = sum(draws[k] for k in range(1, e + 1))
            per_epoch.append({"epoch": e, "seen": len(seen) / n,
                              "expected": 1 - (1 - 1 / n) ** total_draws})
        later = sum(draws[e] for e in range(2, epochs + 1))
        table[lang] = {"blocks": n, "draws_per_epoch": [draws[e] for e in range(1, epochs + 1)],
                       "coverage": per_epoch, "exact_repeats_after_epoch_1": repeats / later if later else 0.0}
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", default=REPO, help="checkout whose xlm_ds is measured (default: this one)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--tokens-per-sample", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--objectives", default="mlm:en,de,fr tlm:de-en,en-fr",
                   help="default: the demo's; 'mlm:en,de,fr' alone has no longer stream to wrap around")
    p.add_argument("--json", help="write the table here")
    args = p.parse_args()
    code = os.path.abspath(args.code)
    commit = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        data, rows = run(code, tmp, args.epochs, args.tokens_per_sample, args.batch_size, args.alpha,
                         args.objectives)
        blocks = block_counts(code, data, args.tokens_per_sample)
    table = measure(rows, blocks, args.epochs)
    print(f"code {code} ({commit}), --objectives {args.objectives!r}; distinct MLM blocks seen / blocks "
          "(expected if every draw were a fresh draw with replacement)")
    print(f"{'lang':4} {'blocks':>6} {'draws/epoch':>12} " + " ".join(f"{'epoch ' + str(e):>16}"
                                                                     for e in range(1, args.epochs + 1))
          + f" {'exact repeats':>14}")
    for lang, t in table.items():
        cells = " ".join(f"{c['seen']:7.1%} ({c['expected']:5.1%})" for c in t["coverage"])
        print(f"{lang:4} {t['blocks']:6d} {str(t['draws_per_epoch'][0]):>12} {cells} "
              f"{t['exact_repeats_after_epoch_1']:14.1%}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"code": code, "commit": commit, "args": vars(args), "languages": table}, f, indent=1)


if __name__ == "__main__":
    main()
