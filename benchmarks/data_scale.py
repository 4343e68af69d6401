#!/usr/bin/env python3
"""Training start-up against corpus size: per-rank peak RSS and start-up
time of ``fairseq-train --task xlm`` as the corpus grows, one directory vs
fixed-size shards (``xlm-ds-prepare --num-shards``), and the extrapolation
to a CC-100 language.

    python benchmarks/data_scale.py --json benchmarks/out/data_scale.json

Data: synthetic token ids (one language, sentences of 5-45 tokens, a
2,000-piece dictionary made by xlm-ds-prepare from the shipped sample), of
``--tokens`` tokens: once as one prepared directory, once as a sharded
directory of ``--shard-tokens``-token shards (the layout that
``xlm-ds-prepare --num-shards`` writes: OUT/manifest.json lists OUT/shardI).
Each run: ``fairseq-train DIR --task xlm --objectives mlm --arch xlm_tiny
--max-update 3`` in a fresh process; peak RSS is the process's maximum
resident set (``getrusage`` in a small wrapper process), start-up the wall time of the run (three tiny
updates are a fraction of a second of it). Peer: fairseq's own
``--task masked_lm`` (``--sample-break-mode none``) on the same one-directory
data, the task a user would otherwise pick.

What grows with the corpus is what every data load builds over the whole
split: TokenBlockDataset's block index (int64 per sentence and per block),
the epoch's resampling indices, the size-ordered indices and the batch
list. A sharded run loads one shard per epoch, so all of it is bounded by
the shard: the memory bound of docs/prepare.md holds when the sharded RSS
stays within 10% while the corpus grows 16x.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus", "corpus.yaml")
# XLM-R (Conneau et al. 2020), appendix table of CC-100: English, the largest language
CC100_EN_TOKENS = 55_608e6


def make_base(tmp):
    """A real prepared directory (dictionary, spm, manifest) of the sample's English."""
    base = os.path.join(tmp, "base")
    sample_dir = os.path.dirname(SAMPLE)
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", "--mono", f"train:en={sample_dir}/train.en.gz",
                    "--out", base, "--vocab-size", "2000", "--quiet"], check=True)
    return base


def write_synthetic(prefix, tokens, vocab, seed):
    """``tokens`` ids in sentences of 5-45 ids + </s>, as an mmap dataset."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 47, size=int(tokens / 25.5) + 1).astype(np.int32)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), tokens) + 1]
    ids = rng.integers(4, vocab, size=int(sizes.sum()), dtype=np.uint16)
    ids[np.cumsum(sizes) - 1] = 2  # </s>
    ids.tofile(prefix + ".bin")
    with MMapIndexedDataset.Index.writer(prefix + ".idx", np.uint16) as w:
        w.write(sizes)
    return len(sizes), int(sizes.sum())


def make_directory(base, out, tokens, vocab, seed):
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("train.*"))
    lines, n = write_synthetic(os.path.join(out, "train.en"), tokens, vocab, seed)
    path = os.path.join(out, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["splits"]["train"]["en"].update(lines=lines, tokens=n)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return n


def make_sharded(base, out, tokens, shard_tokens, vocab):
    n = max(1, round(tokens / shard_tokens))
    os.makedirs(out)
    for i in range(n):
        make_directory(base, os.path.join(out, f"shard{i}"), tokens / n, vocab, seed=i)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"shards": [f"shard{i}" for i in range(n)]}, f)
    return n


# Peak RSS is read in a small wrapper process: Linux counts the high-water
# mark of the memory a child was forked from (this script, which held the
# synthetic corpus a moment ago) in the child's ru_maxrss, so measuring the
# training process as our own child reported this script's peak instead.
WRAPPER = """import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if p.returncode:
    sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
sys.stderr.write(f"\\nmaxrss_kb {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(p.returncode)"""


def run(cmd, tmp):
    os.makedirs(tmp, exist_ok=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, cwd=tmp,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.time() - t0
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, int(proc.stderr.rsplit("maxrss_kb ", 1)[1]) / 1024  # MB


TRAIN = ["--arch", "xlm_tiny", "--tokens-per-sample", "256", "--batch-size", "8", "--optimizer", "adam",
         "--lr", "1e-4", "--max-update", "3", "--cpu", "--no-save", "--disable-validation", "--seed", "1",
         "--num-workers", "0", "--data-buffer-size", "0", "--log-interval", "100"]


def ours(data, tmp):
    return run([sys.executable, "-m", "fairseq_cli.train", data, "--user-dir", os.path.join(REPO, "xlm_ds"),
                "--task", "xlm", "--criterion", "xlm_lm", "--objectives", "mlm", "--save-dir", tmp, *TRAIN], tmp)


def fairseq_masked_lm(data, tmp):
    for ext in ("bin", "idx"):  # masked_lm reads DATA/train.{bin,idx}
        link = os.path.join(data, f"train.{ext}")
        if not os.path.exists(link):
            os.symlink(f"train.en.{ext}", link)
    args = ["roberta_base" if a == "xlm_tiny" else a for a in TRAIN]
    return run([sys.executable, "-m", "fairseq_cli.train", data, "--task", "masked_lm", "--criterion", "masked_lm",
                "--sample-break-mode", "none", "--encoder-layers", "2", "--encoder-embed-dim", "64",
                "--encoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--save-dir", tmp,
                *args], tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="10e6,40e6,160e6,640e6", help="corpus sizes (comma-separated)")
    ap.add_argument("--shard-tokens", type=float, default=10e6, help="tokens per shard of the sharded layout")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point (min time, median RSS)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--tmp", help="work directory (default: a temporary one; needs ~5 GB at 640M tokens)")
    a = ap.parse_args()
    sizes = [float(x) for x in a.tokens.split(",")]
    tmp = tempfile.mkdtemp(prefix="data_scale-", dir=a.tmp)
    rows = []
    try:
        base = make_base(tmp)
        with open(os.path.join(base, "dict.txt")) as f:
            vocab = 4 + sum(1 for _ in f)
        for tokens in sizes:
            one = os.path.join(tmp, f"one-{tokens:.0f}")
            n_tok = make_directory(base, one, tokens, vocab, seed=0)
            sharded = os.path.join(tmp, f"sharded-{tokens:.0f}")
            n_shards = make_sharded(base, sharded, tokens, a.shard_tokens, vocab)
            for layout, data, fn, shards in (("one directory", one, ours, 1),
                                            (f"{a.shard_tokens / 1e6:g}M-token shards", sharded, ours, n_shards),
                                            ("fairseq masked_lm, one directory", one, fairseq_masked_lm, 1)):
                runs = [fn(data, os.path.join(tmp, "save")) for _ in range(a.repeat)]
                row = dict(layout=layout, tokens=n_tok, shards=shards, startup_s=min(r[0] for r in runs),
                           peak_rss_mb=float(np.median([r[1] for r in runs])))
                rows.append(row)
                print(f"{layout:34s} {n_tok / 1e6:8.1f}M tokens {shards:4d} shards "
                      f"{row['startup_s']:7.1f} s {row['peak_rss_mb']:8.0f} MB", flush=True)
            shutil.rmtree(one)
            shutil.rmtree(sharded)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def series(layout):
        return [r for r in rows if r["layout"] == layout]

    one, sharded = series("one directory"), series(f"{a.shard_tokens / 1e6:g}M-token shards")
    peer = series("fairseq masked_lm, one directory")
    # bytes per token and seconds per token of the one-directory growth, by least squares
    t = np.array([r["tokens"] for r in one], dtype=float)
    rss_fit = np.polyfit(t, [r["peak_rss_mb"] * 2**20 for r in one], 1)
    time_fit = np.polyfit(t, [r["startup_s"] for r in one], 1)
    bound = max(r["peak_rss_mb"] for r in sharded) / min(r["peak_rss_mb"] for r in sharded) - 1
    growth = sharded[-1]["tokens"] / sharded[0]["tokens"]
    extrap = dict(language_tokens=CC100_EN_TOKENS, source="XLM-R appendix: CC-100 English, 55,608M tokens",
                  one_directory_rss_gb=float(np.polyval(rss_fit, CC100_EN_TOKENS)) / 2**30,
                  one_directory_startup_min=float(np.polyval(time_fit, CC100_EN_TOKENS)) / 60,
                  bytes_per_token=float(rss_fit[0]), startup_s_per_1e9_tokens=float(time_fit[0]) * 1e9,
                  sharded_rss_mb=max(r["peak_rss_mb"] for r in sharded),
                  sharded_startup_s=max(r["startup_s"] for r in sharded),
                  shards_of_language=int(np.ceil(CC100_EN_TOKENS / a.shard_tokens)))
    print()
    print(f"{'tokens':>10} | {'one dir: s':>10} {'MB':>7} | {'shards':>6} {'s':>6} {'MB':>7} | "
          f"{'masked_lm: s':>12} {'MB':>7} | RSS ours/masked_lm")
    for o, s, p in zip(one, sharded, peer):
        print(f"{o['tokens'] / 1e6:9.0f}M | {o['startup_s']:10.1f} {o['peak_rss_mb']:7.0f} | {s['shards']:6d} "
              f"{s['startup_s']:6.1f} {s['peak_rss_mb']:7.0f} | {p['startup_s']:12.1f} {p['peak_rss_mb']:7.0f} | "
              f"{o['peak_rss_mb'] / p['peak_rss_mb']:.2f}")
    print(f"\nsharded peak RSS varies by {bound:.1%} while the corpus grows {growth:.0f}x "
          f"({'holds' if bound <= 0.10 else 'DOES NOT hold'}: bound 10%)")
    print(f"one directory grows {extrap['bytes_per_token']:.3f} bytes/token and "
          f"{extrap['startup_s_per_1e9_tokens']:.1f} s per 1e9 tokens; a CC-100 English "
          f"({CC100_EN_TOKENS / 1e9:.1f}B tokens) in one directory: {extrap['one_directory_rss_gb']:.1f} GB per rank, "
          f"{extrap['one_directory_startup_min']:.1f} min per data load; as {extrap['shards_of_language']} "
          f"shards: {extrap['sharded_rss_mb']:.0f} MB, {extrap['sharded_startup_s']:.0f} s")
    result = dict(machine=platform.processor() or platform.machine(), cpu=_cpu_name(), args=vars(a), rows=rows,
                  sharded_rss_spread=bound, corpus_growth=growth, bound_holds=bound <= 0.10, cc100=extrap,
                  date=time.strftime("%Y-%m-%d"))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
