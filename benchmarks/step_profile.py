"""Where a ``--task xlm`` MLM training step spends its time on this CPU, and
what each speed lever buys, measured in one run (the evidence behind the
levers table of docs/benchmarks.md).

    python benchmarks/step_profile.py --json benchmarks/out/step_profile.json
    python benchmarks/step_profile.py --shape xlm_mini --json benchmarks/out/step_profile_mini.json

Model and batch as benchmarks/throughput.py (``--shape``: P = 6 × 512, FFN
2048, batch 8 × 256; xlm_mini; xlm_small), dropout and attention dropout
0.1, fairseq ``adam``, 2 threads, fairseq's own ``Trainer``, built
in-process on the shipped sample's English side:

1. the torch profiler's self time of a bf16 (autocast) step and of an fp32
   step, by op family;
2. levers, each A/B on the same trainer with the steps interleaved: the
   current code against the previous implementation of one piece, put back
   for the A side only (dropout masks drawn with ``F.dropout``; attention
   through SDPA's unfused dropout path; fairseq's fp32 GELU; three q/k/v
   projections; one autocast region per objective), and options not taken
   (``torch.compile`` of every block; attention without dropout, which
   changes the model; torch's fused AdamW step against fairseq's adam);
3. the share of padding in TLM and MLM batches of ``make demo``'s data.
"""
import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import SHAPES, write_json  # noqa: E402

SAMPLE = os.path.join(REPO, "xlm_ds", "sample_corpus")

FAMILIES = {
    "GEMM (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "dropout RNG (bernoulli_, random_)": ("aten::bernoulli_", "aten::random_"),
    "dtype casts (copy_)": ("aten::copy_",),
    "softmax fwd/bwd": ("aten::_softmax", "aten::_softmax_backward_data"),
    "GELU fwd/bwd": ("aten::gelu", "aten::gelu_backward"),
    "layer norm fwd/bwd": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "vocabulary log-softmax fwd/bwd": ("aten::_log_softmax", "aten::_log_softmax_backward_data"),
}


def build(data, shape, threads, bf16, objectives="mlm:en"):
    import xlm_ds  # noqa: F401
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    layers, dim, heads, ffn, batch, tokens = SHAPES[shape]
    torch.set_num_threads(threads)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm", "--criterion", "xlm_lm",
        "--arch", "xlm_tiny", "--objectives", objectives, "--encoder-layers", str(layers),
        "--encoder-embed-dim", str(dim), "--encoder-attention-heads", str(heads),
        "--encoder-ffn-embed-dim", str(ffn), "--batch-size", str(batch), "--tokens-per-sample", str(tokens),
        "--optimizer", "adam", "--lr", "1e-4", "--cpu", "--dropout", "0.1", "--attention-dropout", "0.1",
        "--max-update", "100000", "--seed", "1", *(["--autocast-bf16"] if bf16 else []),
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    itr = trainer.get_train_iterator(1).next_epoch_itr(shuffle=True)
    batches = [next(itr) for _ in range(8)]
    return trainer, batches


def profile_step(trainer, batches):
    from torch.profiler import ProfilerActivity, profile

    for b in batches[:2]:
        trainer.train_step([b])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:5]:
            trainer.train_step([b])
    self_us = defaultdict(float)
    total = optim = 0.0
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


# ---- the previous implementation of each piece, put back for an A side ----
@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def torch_dropout(x, p, training):
    return F.dropout(x, p, training)


@contextlib.contextmanager
def bernoulli_dropout():
    from xlm_ds.models import attention, transformer_layer, xlm_encoder

    with contextlib.ExitStack() as stack:
        for mod in (attention, transformer_layer, xlm_encoder):
            stack.enter_context(patched(mod, "dropout", torch_dropout))
        yield


@contextlib.contextmanager
def sdpa_dropout_path():
    from xlm_ds.models.attention import SelfAttention

    def sdpa(self, q, k, v, attn_mask, causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout,
                                              is_causal=causal and attn_mask is None)

    with patched(SelfAttention, "_attention_with_cheap_dropout", sdpa):
        yield


@contextlib.contextmanager
def patched_all(objs, name, value):
    """``patched`` for every object of ``objs``."""
    with contextlib.ExitStack() as stack:
        for obj in objs:
            stack.enter_context(patched(obj, name, value))
        yield


def no_attention_dropout(model):
    return patched_all([layer.self_attn for layer in model.encoder.layers], "dropout", 0.0)


def fairseq_gelu(model):
    from fairseq import utils

    return patched_all(model.encoder.layers, "activation_fn", utils.get_activation_fn("gelu"))


@contextlib.contextmanager
def separate_qkv():
    from xlm_ds.models.attention import SelfAttention

    def forward(self, x, key_padding_mask=None, causal=False):
        bsz, t, _ = x.shape
        shape = (bsz, t, self.num_heads, self.head_dim)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        if self.training and self.dropout > 0:
            out = self._attention_with_cheap_dropout(q, k, v, attn_mask, causal)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, t, self.embed_dim))

    with patched(SelfAttention, "forward", forward):
        yield


@contextlib.contextmanager
def autocast_per_objective():
    import xlm_ds.tasks.xlm_task as T

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        log, total = self._empty_log(), 0.0
        for obj in self.objectives:
            sub = sample.get(obj.kind) if sample else None
            if not sub:
                continue
            with self._autocast():
                loss, n_pred, sub_log = criterion(model, sub)
            scaled = loss * (obj.weight / max(int(n_pred), 1))
            optimizer.backward(scaled)
            total += float(scaled.detach())
            self._merge(log, sub_log, obj.weight, int(n_pred))
        self._finish(log)
        return total, 1, log

    with patched(T.XLMTask, "train_step", train_step):
        yield


def lever(trainer, batches, before, repeat, after=contextlib.nullcontext):
    """(seconds per step with ``before``, with ``after``), interleaved."""
    def step(ctx):
        with ctx():
            trainer.train_step([batches[5]])

    r = interleaved({"before": lambda: step(before), "after": lambda: step(after)}, repeat)
    return r["before"], r["after"]


def optimizer_lever(model, repeat):
    from fairseq.optim.adam import Adam

    def make(kind):
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        return Adam(params, lr=1e-4) if kind == "fairseq" else torch.optim.AdamW(params, lr=1e-4, fused=True)

    fs, fused = make("fairseq"), make("fused")
    r = interleaved({"fairseq": fs.step, "fused": fused.step}, repeat)
    return r["fairseq"], r["fused"]


def padding_share(tmp, tokens=128, batch=16):
    """Pad positions / positions in the TLM and MLM batches of one epoch of
    ``make demo``'s data and objectives (MLM en/de/fr + TLM de-en, en-fr)."""
    import xlm_ds  # noqa: F401
    from xlm_ds.tasks.xlm_task import XLMTask, XLMTaskConfig

    data = os.path.join(tmp, "demo_data")
    subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus", os.path.join(SAMPLE, "corpus.yaml"),
                    "--out", data, "--vocab-size", "6000"], check=True, capture_output=True)
    task = XLMTask.setup_task(XLMTaskConfig(data=data, objectives="mlm tlm", tokens_per_sample=tokens, seed=1))
    task.load_dataset("train")
    ds = task.dataset("train")
    itr = task.get_batch_iterator(ds, max_sentences=batch, seed=1).next_epoch_itr(shuffle=True)
    pads = defaultdict(int)
    total = defaultdict(int)
    for sample in itr:
        for kind, sub in sample.items():
            src = sub["net_input"]["src_tokens"]
            pads[kind] += int(src.eq(task.dictionary.pad()).sum())
            total[kind] += src.numel()
    return {k: pads[k] / total[k] for k in total}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="P", choices=sorted(SHAPES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="interleaved steps per side of each A/B")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "out", "step_profile.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    result = {"shape": a.shape, "threads": a.threads}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        mono = [x for s in ("train", "valid") for x in ("--mono", f"{s}:en={SAMPLE}/{s}.en.gz",
                                                        "--mono", f"{s}:en={SAMPLE}/{s}.de-en.en.gz")]
        subprocess.run([sys.executable, "-m", "xlm_ds.cli.prepare", *mono, "--out", data,
                        "--vocab-size", "8000"], check=True, capture_output=True)
        result["breakdown"] = {}
        for precision in ("bf16", "fp32"):
            trainer, batches = build(data, a.shape, a.threads, precision == "bf16")
            result["breakdown"][precision] = profile_step(trainer, batches)
            if precision == "fp32":
                result["fp32_step_s"] = interleaved({"s": lambda: trainer.train_step([batches[5]])}, a.steps)["s"]
        trainer, batches = build(data, a.shape, a.threads, True)
        model = trainer.model
        levers = {
            "dropout masks: 16-bit draws vs F.dropout's bernoulli_": lever(trainer, batches, bernoulli_dropout,
                                                                           a.steps),
            "attention with dropout: math path + cheap mask vs SDPA's unfused path": lever(
                trainer, batches, sdpa_dropout_path, a.steps),
            "GELU: torch's bf16 vs fairseq's fp32": lever(trainer, batches, lambda: fairseq_gelu(model), a.steps),
            "q/k/v: one projection vs three": lever(trainer, batches, separate_qkv, a.steps),
            "(not taken) attention dropout 0: SDPA's fused kernel (changes the model)": lever(
                trainer, batches, contextlib.nullcontext, a.steps, after=lambda: no_attention_dropout(model)),
        }
        compiled, cbatches = build(data, a.shape, a.threads, True)
        for layer in compiled.model.encoder.layers:
            layer.compile(dynamic=False)
        t0 = time.time()
        for b in cbatches[:3]:
            compiled.train_step([b])
        result["compile_warmup_s"] = time.time() - t0
        pair = interleaved({"eager": lambda: trainer.train_step([batches[5]]),
                            "compiled": lambda: compiled.train_step([cbatches[5]])}, a.steps)
        levers["(not taken) torch.compile of every block"] = (pair["eager"], pair["compiled"])
        two, tbatches = build(data, a.shape, a.threads, True, objectives="mlm:en clm:en")
        levers["two objectives (mlm clm): one autocast region vs one per objective"] = lever(
            two, tbatches, autocast_per_objective, a.steps)
        levers["(not taken) optimizer step alone: torch fused AdamW vs fairseq adam"] = optimizer_lever(
            model, max(a.steps, 10))
        result["bf16_step_s"] = pair["eager"]
        result["padding_share_demo_batches"] = padding_share(tmp)
    for precision, rows in result["breakdown"].items():
        print(f"\n{precision} xlm MLM step ({a.shape}), share of profiled CPU time")
        print("| op family | share |\n|---|---|")
        for k, v in rows.items():
            print(f"| {k} | {100 * v:.1f}% |")
    print(f"\nlevers ({a.shape}; interleaved A/B, seconds per step; speed-up = before / after)")
    print("| lever | before | after | speed-up |\n|---|---|---|---|")
    for k, (before, after) in levers.items():
        print(f"| {k} | {before:.4f} | {after:.4f} | {before / after:.2f} |")
    print(f"\ntorch.compile warm-up: {result['compile_warmup_s']:.0f} s for the first 3 steps; "
          f"bf16 step {result['bf16_step_s']:.4f} s, fp32 step {result['fp32_step_s']:.4f} s")
    print("padding share of the demo's batches (pad positions / positions):",
          ", ".join(f"{k} {v:.1%}" for k, v in result["padding_share_demo_batches"].items()))
    result["levers"] = {k: {"before_s": b, "after_s": l, "speedup": b / l} for k, (b, l) in levers.items()}
    write_json(a.json, result)


if __name__ == "__main__":
    main()
