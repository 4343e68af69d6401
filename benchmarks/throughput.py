"""Training throughput of ``--task xlm`` (MLM) against fairseq's own
``masked_lm`` task + ``roberta`` model of the same size, on the same data
and batch, in one run; plus model FLOP/s as a fraction of this machine's
dense fp32 matmul FLOP/s measured in the same run (MFU).

    python benchmarks/throughput.py --updates 30 --json benchmarks/out/throughput.json

Defaults: 6 layers, 512 dim, 8 heads, FFN 2048, 8k vocabulary, batch 8x256,
2 threads. Data: the shipped sample's English side prepared with an 8k
vocabulary (made on the fly in a temporary directory).
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


def matmul_peak_flops(threads: int, n: int = 2048, repeat: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0)


def prepare(tmp, vocab):
    data = os.path.join(tmp, "data")
    mono = []
    for split in ("train", "valid"):
        mono += ["--mono", f"{split}:en={SAMPLE}/{split}.en.gz",
                 "--mono", f"{split}:en={SAMPLE}/{split}.de-en.en.gz",
                 "--mono", f"{split}:en={SAMPLE}/{split}.en-fr.en.gz"]
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", *mono, "--out", data,
                    "--vocab-size", str(vocab)], check=True, capture_output=True)
    # fairseq's masked_lm reads DATA/{split}.bin with DATA/dict.txt
    ml = os.path.join(tmp, "masked_lm")
    os.makedirs(ml)
    os.symlink(os.path.join(data, "dict.txt"), os.path.join(ml, "dict.txt"))
    for split in ("train", "valid"):
        for ext in ("bin", "idx"):
            os.symlink(os.path.join(data, f"{split}.en.{ext}"), os.path.join(ml, f"{split}.{ext}"))
    return data, ml


def train(args_list, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args_list],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    wps = [float(x) for x in re.findall(r"train_inner .*? wps=([0-9.]+)", out.stdout + out.stderr)]
    return wps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="also run xlm with --autocast-bf16")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "throughput.json"))
    a = p.parse_args(argv)

    size = ["--encoder-layers", a.layers, "--encoder-embed-dim", a.dim,
            "--encoder-attention-heads", a.heads, "--encoder-ffn-embed-dim", a.ffn]
    common = ["--optimizer", "adam", "--lr", "1e-4", "--max-update", a.updates, "--cpu",
              "--no-save", "--disable-validation", "--log-format", "simple", "--log-interval", 5,
              "--batch-size", a.batch, "--tokens-per-sample", a.tokens, "--seed", 1,
              "--dropout", 0.1, "--attention-dropout", 0.1, "--num-workers", 0]
    with tempfile.TemporaryDirectory() as tmp:
        data, ml = prepare(tmp, a.vocab)
        runs = {
            "fairseq masked_lm (roberta)": [ml, "--task", "masked_lm", "--criterion", "masked_lm",
                                            "--arch", "roberta_base", "--max-positions", a.tokens,
                                            "--sample-break-mode", "none", *size, *common],
            "xlm_ds xlm (mlm)": [data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm",
                                 "--criterion", "xlm_lm", "--arch", "xlm_tiny", "--objectives", "mlm:en",
                                 *size, *common],
        }
        if a.bf16:
            runs["xlm_ds xlm (mlm, bf16 autocast)"] = runs["xlm_ds xlm (mlm)"] + ["--autocast-bf16"]
        # best of several, before and after the runs: a busy moment only
        # lowers a measurement, never raises it
        peak = max(matmul_peak_flops(a.threads) for _ in range(3))
        # FLOPs per token: 6 * (non-embedding params) for forward+backward of
        # the blocks, attention scores 12*L*T*d, LM head on the 15% masked
        # positions (dense d*d + vocabulary d*V), as in Kaplan et al. 2020.
        n_block = a.layers * (4 * a.dim * a.dim + 2 * a.dim * a.ffn)
        flops_per_token = 6 * n_block + 12 * a.layers * a.tokens * a.dim + 0.15 * 6 * (a.dim * a.dim + a.dim * a.vocab)
        results = {}
        for name, argv_ in runs.items():
            wps = train([str(x) for x in argv_], a.threads)
            steady = wps[1:] or wps  # the first interval includes warm-up
            tok_s = statistics.median(steady)
            results[name] = {"tokens_per_s": tok_s}
        peak = max([peak] + [matmul_peak_flops(a.threads) for _ in range(3)])
        for r in results.values():
            r["mfu"] = r["tokens_per_s"] * flops_per_token / peak
    base = results["fairseq masked_lm (roberta)"]["tokens_per_s"]
    print(f"matmul peak (fp32, {a.threads} threads): {peak / 1e9:.1f} GFLOP/s; model: {flops_per_token / 1e6:.1f} MFLOP/token")
    print(f"{'run':36s} {'tokens/s':>10s} {'vs fairseq':>10s} {'MFU':>6s}")
    for name, r in results.items():
        r["ratio_vs_fairseq"] = r["tokens_per_s"] / base
        print(f"{name:36s} {r['tokens_per_s']:10.0f} {r['ratio_vs_fairseq']:10.2f} {r['mfu']:6.1%}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"config": vars(a), "matmul_peak_flops": peak, "flops_per_token": flops_per_token,
                   "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
