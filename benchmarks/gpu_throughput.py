"""GPU training throughput of ``--task xlm`` (MLM) at XLM-R sizes, beside
fairseq's ``masked_lm`` task with ``--fp16`` and transformers'
``XLMRobertaForMaskedLM`` in bf16, on the same GPU and batch; MFU against
the GPU's bf16 dense peak (from its name). Run by benchmarks/gpu_check.sh.

    python benchmarks/gpu_throughput.py --json benchmarks/out/gpu/gpu_throughput.json

Shapes: xlmr_base (12 × 768, FFN 3072, 12 heads) and xlmr_large (24 × 1024,
FFN 4096, 16 heads), 250,002-entry vocabulary, sequences of 512 tokens,
``--batch`` sequences per step. Data: random token ids binarized as
xlm-ds-prepare and fairseq's masked_lm read them (a data directory with a
manifest, and the same ``.bin/.idx`` behind masked_lm's layout): the ids do
not change the cost of a step.

fairseq runs are real ``fairseq-train`` runs (tokens/s: median of the logged
intervals after the first); transformers runs a plain loop (bf16 autocast,
fused AdamW, 15% of positions labelled) timed with CUDA synchronisation.
MFU uses one model FLOP count for all three (benchmarks/throughput.py's
``flops_per_token``, LM head on the masked positions): transformers'
head scores every position, which it pays for and which is not counted.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from throughput import flops_per_token, masked_lm_view, write_json, wps_of  # noqa: E402

VOCAB = 250_002
SHAPES = {  # layers, dim, heads, ffn
    "xlmr_base": (12, 768, 12, 3072),
    "xlmr_large": (24, 1024, 16, 4096),
}
# dense bf16 peaks (no sparsity), NVIDIA's data sheets
PEAKS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def gpu_peak(name: str):
    for key, value in sorted(PEAKS.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return value
    return None


def synthetic_data(root: str, tokens: int, seed: int = 1):
    """A one-language (en) xlm data directory and a masked_lm view of it."""
    from xlm_ds.data.binarize import make_builder
    from xlm_ds.data.manifest import write_manifest

    data = os.path.join(root, "data")
    os.makedirs(data)
    n_symbols = VOCAB - 5  # + bos, pad, eos, unk (fairseq) and <mask> (xlm / masked_lm)
    with open(os.path.join(data, "dict.txt"), "w") as f:
        f.writelines(f"w{i} 1\n" for i in range(n_symbols))
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", tokens), ("valid", 20_000)):
        sizes = np.full(n // 128, 128)
        flat = rng.integers(4, VOCAB - 1, size=int(sizes.sum()))
        flat[np.cumsum(sizes) - 1] = 2  # eos ends each sentence
        writer = make_builder(os.path.join(data, f"{split}.en"), VOCAB)
        writer.add_items(flat, sizes)
        writer.finalize()
        splits[split] = {"en": {"lines": int(len(sizes)), "tokens": int(sizes.sum()), "unk": 0,
                                "empty_skipped": 0, "files": ["synthetic"]}}
    write_manifest(data, {"languages": ["en"], "pairs": [], "splits": splits, "dict_size": VOCAB - 1})
    return data, masked_lm_view(data, os.path.join(root, "masked_lm"))


def fairseq_train(args_list):
    out = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *map(str, args_list)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return wps_of(out.stdout + out.stderr)


def hf_tokens_per_s(shape, batch, tokens, steps):
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    layers, dim, heads, ffn = shape
    config = XLMRobertaConfig(vocab_size=VOCAB, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=ffn, max_position_embeddings=tokens + 2)
    model = XLMRobertaForMaskedLM._from_config(config, attn_implementation="sdpa").cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    times = []
    for step in range(steps):
        ids = torch.randint(4, VOCAB - 1, (batch, tokens), device="cuda", generator=g)
        labels = torch.where(torch.rand(ids.shape, device="cuda", generator=g) < 0.15, ids, -100)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    del model, opt
    torch.cuda.empty_cache()
    return batch * tokens / statistics.median(times[2:] or times)


def runs_for(shape_name, data, ml, a):
    layers, dim, heads, ffn = SHAPES[shape_name]
    size = ["--encoder-layers", layers, "--encoder-embed-dim", dim, "--encoder-attention-heads", heads,
            "--encoder-ffn-embed-dim", ffn]
    common = ["--optimizer", "adam", "--lr", "1e-4", "--max-update", a.updates, "--no-save",
              "--disable-validation", "--log-format", "simple", "--log-interval", 5, "--batch-size", a.batch,
              "--tokens-per-sample", a.tokens, "--seed", 1, "--dropout", 0.1, "--attention-dropout", 0.1,
              "--num-workers", 0]
    xlm = [data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--criterion", "xlm_lm",
           "--arch", shape_name, "--objectives", "mlm:en", *common]
    return {
        "fairseq masked_lm (roberta), --fp16": lambda: fairseq_train(
            [ml, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base",
             "--max-positions", a.tokens, "--sample-break-mode", "none", *size, *common, "--fp16"]),
        "xlm_ds xlm (mlm), bf16 autocast": lambda: fairseq_train(xlm + ["--autocast-bf16"]),
        "transformers XLMRobertaForMaskedLM, bf16": lambda: hf_tokens_per_s(
            SHAPES[shape_name], a.batch, a.tokens, a.updates),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="xlmr_base,xlmr_large")
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--tokens", type=int, default=512, help="tokens per sequence")
    p.add_argument("--updates", type=int, default=30)
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "gpu", "gpu_throughput.json"))
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_throughput: no CUDA GPU visible to torch")
    name = torch.cuda.get_device_name()
    peak = gpu_peak(name)
    report = {"gpu": name, "bf16_peak_flops": peak, "config": vars(a), "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data, ml = synthetic_data(tmp, tokens=(a.updates + 2) * a.batch * a.tokens)
        for shape in [s for s in a.shapes.split(",") if s]:
            fpt = flops_per_token(*[SHAPES[shape][i] for i in (0, 1, 3)], a.tokens, VOCAB)
            rows = {}
            for run_name, run in runs_for(shape, data, ml, a).items():
                try:
                    tps = run()
                    rows[run_name] = {"tokens_per_s": tps, "mfu": tps * fpt / peak if peak else None}
                except Exception as e:  # noqa: BLE001 - one failed peer must not hide the others
                    rows[run_name] = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
            report["shapes"][shape] = {"flops_per_token": fpt, "runs": rows}
    print(f"GPU: {name}; bf16 dense peak {peak / 1e12:.0f} TFLOP/s" if peak else f"GPU: {name}; peak unknown")
    for shape, r in report["shapes"].items():
        print(f"\n{shape}, batch {a.batch} × {a.tokens}, {r['flops_per_token'] / 1e9:.2f} GFLOP/token")
        base = next(iter(r["runs"].values())).get("tokens_per_s")
        print(f"{'run':44s} {'tokens/s':>10s} {'vs fairseq':>10s} {'MFU':>6s}")
        for run_name, row in r["runs"].items():
            if "error" in row:
                print(f"{run_name:44s} failed: {row['error'][-200:]}")
                continue
            ratio = row["tokens_per_s"] / base if base else float("nan")
            mfu = f"{row['mfu']:6.1%}" if row["mfu"] is not None else "     -"
            print(f"{run_name:44s} {row['tokens_per_s']:10.0f} {ratio:10.2f} {mfu}")
    write_json(a.json, report)


if __name__ == "__main__":
    main()
