"""Training throughput of ``--task xlm`` (MLM) in fp32 and bf16 against
fairseq's own ``masked_lm`` task + ``roberta`` model of the same size (fp32:
fairseq's ``--bf16`` does not run on a CPU), on the same data and batch, in
one run; MFU against this machine's dense matmul peak of the run's
precision, measured in the same run.

    python benchmarks/throughput.py --bf16 --json benchmarks/out/throughput.json

Shapes (``--shapes``, default all three): P = 6 layers × 512, FFN 2048, batch
8 × 256 (the reference shape of docs/benchmarks.md); xlm_mini = 4 × 128,
FFN 512, batch 16 × 128 (``make demo``); xlm_small = 4 × 256, FFN 1024,
batch 16 × 128 (the reproductions). 8k vocabulary, dropout and attention
dropout 0.1, fairseq ``adam``, 2 threads, one process each. Data: the
shipped sample's English side, prepared on the fly.

Each run is a real ``fairseq-train``; tokens/s is the median of its logged
intervals after the first. The runs of a shape are repeated ``--rounds``
times, interleaved, and each keeps its best round (another job on the
machine only ever slows a run down). bf16 runs are divided by the bf16
matmul peak, fp32 runs by the fp32 one (both the best of several 2048³
products before and after the runs).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")

# layers, dim, heads, ffn, batch, tokens
SHAPES = {
    "P": (6, 512, 8, 2048, 8, 256),
    "xlm_mini": (4, 128, 4, 512, 16, 128),
    "xlm_small": (4, 256, 4, 1024, 16, 128),
}


def matmul_peak_flops(threads: int, dtype=torch.float32, n: int = 2048, repeat: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0)


def peaks(threads):
    return {"fp32": max(matmul_peak_flops(threads) for _ in range(3)),
            "bf16": max(matmul_peak_flops(threads, torch.bfloat16) for _ in range(3))}


def prepare(tmp, vocab):
    data = os.path.join(tmp, "data")
    mono = []
    for split in ("train", "valid"):
        mono += ["--mono", f"{split}:en={SAMPLE}/{split}.en.gz",
                 "--mono", f"{split}:en={SAMPLE}/{split}.de-en.en.gz",
                 "--mono", f"{split}:en={SAMPLE}/{split}.en-fr.en.gz"]
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", *mono, "--out", data,
                    "--vocab-size", str(vocab)], check=True, capture_output=True)
    return data, masked_lm_view(data, os.path.join(tmp, "masked_lm"))


def masked_lm_view(data, ml, lang="en"):
    """fairseq's masked_lm reads DATA/{split}.bin with DATA/dict.txt: links
    to one language of an xlm data directory."""
    os.makedirs(ml)
    os.symlink(os.path.join(data, "dict.txt"), os.path.join(ml, "dict.txt"))
    for split in ("train", "valid"):
        for ext in ("bin", "idx"):
            os.symlink(os.path.join(data, f"{split}.{lang}.{ext}"), os.path.join(ml, f"{split}.{ext}"))
    return ml


def write_json(path, obj):
    """Atomically (temp file + rename), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def train(args_list, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args_list],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return wps_of(out.stdout + out.stderr)


def wps_of(log: str) -> float:
    """Median words (tokens)/s of a fairseq-train log's intervals after the
    first (which includes the warm-up)."""
    wps = [float(x) for x in re.findall(r"train_inner .*? wps=([0-9.]+)", log)]
    if not wps:
        raise RuntimeError("no train_inner interval with wps in the log: " + log[-1500:])
    return statistics.median(wps[1:] or wps)


def flops_per_token(layers, dim, ffn, tokens, vocab):
    """6 × (block parameters) for forward + backward, attention scores
    12 L T d, the LM head on the 15% masked positions (dense d² + d V), as
    in Kaplan et al. 2020."""
    n_block = layers * (4 * dim * dim + 2 * dim * ffn)
    return 6 * n_block + 12 * layers * tokens * dim + 0.15 * 6 * (dim * dim + dim * vocab)


def runs_for(shape, data, ml, a):
    layers, dim, heads, ffn, batch, tokens = SHAPES[shape]
    size = ["--encoder-layers", layers, "--encoder-embed-dim", dim,
            "--encoder-attention-heads", heads, "--encoder-ffn-embed-dim", ffn]
    common = ["--optimizer", "adam", "--lr", "1e-4", "--max-update", a.updates, "--cpu",
              "--no-save", "--disable-validation", "--log-format", "simple", "--log-interval", 5,
              "--batch-size", batch, "--tokens-per-sample", tokens, "--seed", 1,
              "--dropout", 0.1, "--attention-dropout", 0.1, "--num-workers", 0]
    xlm = [data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--criterion", "xlm_lm",
           "--arch", "xlm_tiny", "--objectives", "mlm:en", *size, *common]
    runs = {
        "fairseq masked_lm (roberta), fp32": ("fp32", [ml, "--task", "masked_lm", "--criterion", "masked_lm",
                                                       "--arch", "roberta_base", "--max-positions", tokens,
                                                       "--sample-break-mode", "none", *size, *common]),
        "xlm_ds xlm (mlm), fp32": ("fp32", xlm),
    }
    if a.bf16:
        runs["xlm_ds xlm (mlm), bf16 autocast"] = ("bf16", xlm + ["--autocast-bf16"])
    return runs, flops_per_token(layers, dim, ffn, tokens, a.vocab)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="P,xlm_mini,xlm_small", help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; each run keeps its best")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="also run xlm with --autocast-bf16")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "throughput.json"))
    a = p.parse_args(argv)
    shapes = [s for s in a.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"--shapes: unknown {', '.join(unknown)}; expected some of {', '.join(SHAPES)}")
    peak = peaks(a.threads)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        data, ml = prepare(tmp, a.vocab)
        for shape in shapes:
            runs, fpt = runs_for(shape, data, ml, a)
            best = {name: 0.0 for name in runs}
            for _ in range(a.rounds):
                for name, (_, args_list) in runs.items():
                    best[name] = max(best[name], train([str(x) for x in args_list], a.threads))
            report[shape] = {"flops_per_token": fpt, "shape": dict(zip(
                ("layers", "dim", "heads", "ffn", "batch", "tokens"), SHAPES[shape])), "runs": {}}
            for name, (precision, _) in runs.items():
                report[shape]["runs"][name] = {"precision": precision, "tokens_per_s": best[name]}
    after = peaks(a.threads)
    peak = {k: max(peak[k], after[k]) for k in peak}
    print(f"matmul peak, {a.threads} threads: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")
    for shape, r in report.items():
        base = next(iter(r["runs"].values()))["tokens_per_s"]
        print(f"\n{shape}: {r['shape']}, model {r['flops_per_token'] / 1e6:.1f} MFLOP/token")
        print(f"{'run':38s} {'tokens/s':>10s} {'vs fairseq':>10s} {'MFU':>6s}  (of the run's precision's peak)")
        for name, run in r["runs"].items():
            run["ratio_vs_fairseq"] = run["tokens_per_s"] / base
            run["mfu"] = run["tokens_per_s"] * r["flops_per_token"] / peak[run["precision"]]
            print(f"{name:38s} {run['tokens_per_s']:10.0f} {run['ratio_vs_fairseq']:10.2f} {run['mfu']:6.1%}")
    write_json(a.json, {"config": vars(a), "matmul_peak_flops": peak, "shapes": report})


if __name__ == "__main__":
    main()
