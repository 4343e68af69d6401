"""Where an fp32 ``--task xlm`` MLM step spends its time on this CPU, and
what the remaining speed levers buy, measured in one run (the evidence
behind docs/benchmarks.md's "fp32 target not met").

    python benchmarks/step_profile.py --json benchmarks/out/step_profile.json

Same model and batch as benchmarks/throughput.py (6 layers, 512 dim, 8
heads, FFN 2048, batch 8x256, dropout and attention dropout 0.1, fairseq
adam, 2 threads), built in-process on the shipped sample's English side:

1. the torch profiler's self time of one training step, by op family
   (GEMMs, dropout RNG, attention softmax, element-wise, optimizer);
2. levers, each A/B in the same process with the steps interleaved:
   ``torch.compile`` of every block vs eager; one fused QKV projection vs
   three; attention with vs without its dropout (SDPA's fused CPU kernel
   has no dropout, so attention dropout takes the unfused path).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")

FAMILIES = {
    "GEMM (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "dropout RNG (bernoulli_)": ("aten::bernoulli_",),
    "softmax fwd/bwd": ("aten::_softmax", "aten::_softmax_backward_data"),
    "GELU fwd/bwd": ("aten::gelu", "aten::gelu_backward"),
    "layer norm fwd/bwd": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
}


def build_trainers(data, names, threads):
    import xlm_ds  # noqa: F401
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    torch.set_num_threads(threads)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--criterion", "xlm_lm",
        "--arch", "xlm_tiny", "--objectives", "mlm:en", "--encoder-layers", "6",
        "--encoder-embed-dim", "512", "--encoder-attention-heads", "8", "--encoder-ffn-embed-dim", "2048",
        "--batch-size", "8", "--tokens-per-sample", "256", "--optimizer", "adam", "--lr", "1e-4",
        "--cpu", "--dropout", "0.1", "--attention-dropout", "0.1", "--max-update", "1000", "--seed", "1",
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    trainers = {}
    for name in names:
        model = task.build_model(cfg.model)
        if name == "compiled":
            for layer in model.encoder.layers:
                layer.compile(dynamic=False)
        trainers[name] = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    itr = next(iter(trainers.values())).get_train_iterator(1).next_epoch_itr(shuffle=True)
    return trainers, itr


def profile_step(trainer, batches):
    from torch.profiler import ProfilerActivity, profile

    for b in batches[:2]:
        trainer.train_step([b])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:5]:
            trainer.train_step([b])
    self_us = defaultdict(float)
    total = 0.0
    optim = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        self_us[e.key] += e.self_cpu_time_total
        if e.key.startswith("Optimizer.step"):
            optim = e.cpu_time_total
    rows = {fam: sum(self_us[k] for k in keys) / total for fam, keys in FAMILIES.items()}
    rows["optimizer step (total)"] = optim / total
    rows["everything else"] = 1 - sum(v for k, v in rows.items() if k != "optimizer step (total)")
    return rows


def interleaved(fns, repeat):
    for f in fns.values():
        f()
    tot = {k: 0.0 for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            tot[k] += time.perf_counter() - t0
    return {k: v / repeat for k, v in tot.items()}


def attention_lever(repeat):
    q, k, v = (torch.randn(8, 8, 256, 64, requires_grad=True) for _ in range(3))

    def run(p):
        F.scaled_dot_product_attention(q, k, v, dropout_p=p).sum().backward()

    return interleaved({"with dropout 0.1": lambda: run(0.1), "without dropout": lambda: run(0.0)}, repeat)


def qkv_lever(repeat):
    x = torch.randn(2048, 512)
    w = torch.randn(1536, 512, requires_grad=True)
    b = torch.randn(1536, requires_grad=True)
    ws = [torch.randn(512, 512, requires_grad=True) for _ in range(3)]
    bs = [torch.randn(512, requires_grad=True) for _ in range(3)]

    def fused():
        F.linear(x, w, b).sum().backward()

    def separate():
        sum(F.linear(x, wi, bi).sum() for wi, bi in zip(ws, bs)).backward()

    return interleaved({"fused (one 512x1536)": fused, "separate (three 512x512)": separate}, repeat)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="interleaved steps per variant in the compile A/B")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "step_profile.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        mono = [x for s in ("train", "valid") for x in ("--mono", f"{s}:en={SAMPLE}/{s}.en.gz",
                                                        "--mono", f"{s}:en={SAMPLE}/{s}.de-en.en.gz")]
        subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", *mono, "--out", data,
                        "--vocab-size", "8000"], check=True, capture_output=True)
        trainers, itr = build_trainers(data, ["eager", "compiled"], a.threads)
        batches = [next(itr) for _ in range(a.steps + 8)]
        breakdown = profile_step(trainers["eager"], batches)
        t0 = time.time()
        for b in batches[:3]:
            trainers["compiled"].train_step([b])
        compile_s = time.time() - t0
        pair = interleaved({
            name: (lambda t=t: t.train_step([batches[5]])) for name, t in trainers.items()
        }, a.steps)
    attn = attention_lever(10)
    qkv = qkv_lever(10)

    print("\n1. fp32 xlm MLM step, share of profiled CPU time")
    print("| op family | share |\n|---|---|")
    for k, v in breakdown.items():
        print(f"| {k} | {100 * v:.1f}% |")
    print("\n2. levers (interleaved A/B, seconds per call; ratio = baseline / lever)")
    print("| lever | baseline | with lever | ratio |\n|---|---|---|---|")
    levers = {
        "torch.compile of every block (training step)": (pair["eager"], pair["compiled"]),
        "fused QKV projection (fwd+bwd, 2048 tokens)": (qkv["separate (three 512x512)"], qkv["fused (one 512x1536)"]),
        "attention without its dropout (fwd+bwd, one layer)": (attn["with dropout 0.1"], attn["without dropout"]),
    }
    for k, (base, lever) in levers.items():
        print(f"| {k} | {base:.4f} | {lever:.4f} | {base / lever:.2f} |")
    print(f"\n(torch.compile warm-up: {compile_s:.0f} s for the first 3 steps)")
    result = {"threads": a.threads, "breakdown": breakdown, "compile_warmup_s": compile_s,
              "levers": {k: {"baseline_s": b, "lever_s": l, "ratio": b / l} for k, (b, l) in levers.items()},
              "eager_step_s": pair["eager"], "eager_tokens_per_s": 2048 / pair["eager"]}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    tmp_json = a.json + ".tmp"
    with open(tmp_json, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp_json, a.json)


if __name__ == "__main__":
    main()
