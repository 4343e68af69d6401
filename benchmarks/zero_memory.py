"""Per-rank memory of model states under ZeRO stages 0-3, measured, next to
the ZeRO paper's model (Rajbhandari et al. 2020, §3.1/Fig. 1): mixed-precision
Adam holds 2Ψ bytes of 16-bit parameters, 2Ψ of 16-bit gradients and 12Ψ of
fp32 optimizer state (master weights, momentum, variance) for Ψ parameters:

    stage 0 (data parallel)      16Ψ
    stage 1 (optimizer states)   4Ψ + 12Ψ/N
    stage 2 (+ gradients)        2Ψ + 14Ψ/N
    stage 3 (+ parameters)       16Ψ/N

Measured: an ``xlm_small``-shaped xlm_lm model (6 layers, 512 dim, 8k
vocabulary, Ψ≈23M) under DeepSpeed with bf16 (= fp16 bytes) and
torch.optim.AdamW, on CPU with gloo, at N = 1, 2 and 4 ranks. After one full
step (optimizer state allocated) the next micro-batch's forward and backward
run, and every tensor reachable from the module's parameters and DeepSpeed's
optimizer wrapper is listed with the attribute that holds it, deduplicated by
storage (ZeRO's flat buffers hold the parameters as views) and classified:
gradients (``.grad``, ``averaged_gradients``, ``grad_partitions_flat_buffer``,
reduce buckets), optimizer state (fp32 master partitions, exp_avg,
exp_avg_sq), parameters (16-bit parameters or ZeRO-3 partitions). For
stage 1, whose gradients are reduced only after the whole backward, the
snapshot is taken just before that reduction, when all 16-bit gradients are
alive (the peak); for the other stages after backward, before the step.
Not counted (as in the paper's model): activations, temporary buffers and
the fp32 gradient copy some optimizers make inside ``step``.

    python benchmarks/zero_memory.py            # ~1-2 min on 2 cores
    python benchmarks/zero_memory.py --ranks 1 2

prints the table and writes benchmarks/out/zero_memory.json.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

ARCH = dict(layers=6, dim=512, ffn=2048, heads=8, vocab=8000, langs=3)


def theory(stage: int, n: int) -> dict:
    """ZeRO paper, bytes per parameter per rank, by category."""
    params = 2 if stage < 3 else 2 / n
    grads = 2 if stage < 2 else 2 / n
    optim = 12 if stage < 1 else 12 / n
    return {"params": params, "grads": grads, "optim": optim, "total": params + grads + optim}


# --------------------------------------------------------------------------
# worker (one rank)
# --------------------------------------------------------------------------
def _classify(path: str) -> str:
    if re.search(r"grad|ipg", path) and "_global_grad_norm" not in path:
        return "grads"
    if path.startswith("opt.") and re.search(r"optimizer\.state|fp32|single_partition|master|param_groups", path):
        return "optim"
    if path.startswith("module.") or "bit16" in path or "fp16" in path or "ds_tensor" in path:
        return "params"
    return "other"


def snapshot(engine) -> dict:
    import torch

    seen = {}

    def walk(obj, path, depth=0):
        if depth > 7:
            return
        if torch.is_tensor(obj):
            if obj.device.type == "meta":
                return
            storage = obj.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in seen:
                seen[storage.data_ptr()] = (path, storage.nbytes())
            if hasattr(obj, "ds_tensor"):
                walk(obj.ds_tensor, path + ".ds_tensor", depth + 1)
            if obj.grad is not None:
                walk(obj.grad, path + ".grad", depth + 1)
            return
        if isinstance(obj, dict):
            for k, v in list(obj.items()):
                walk(v, f"{path}[{k if not torch.is_tensor(k) else 't'}]", depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, f"{path}[]", depth + 1)
        elif isinstance(obj, torch.optim.Optimizer):
            walk(obj.state, path + ".state", depth + 1)
            walk(obj.param_groups, path + ".param_groups", depth + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("deepspeed"):
            for k, v in vars(obj).items():
                walk(v, f"{path}.{k}", depth + 1)

    for name, p in engine.module.named_parameters():
        walk(p, "module." + name)
    walk(engine.optimizer, "opt")
    out = {"params": 0, "grads": 0, "optim": 0, "other": 0}
    holders = {}
    for path, nbytes in seen.values():
        cat = _classify(path)
        out[cat] += nbytes
        key = f"{cat}: " + re.sub(r"\[[^\]]*\]", "[]", re.sub(r"module\..*", "module.<param>", path))
        holders[key] = holders.get(key, 0) + nbytes
    out["total"] = out["params"] + out["grads"] + out["optim"]
    out["holders"] = holders
    return out


def worker(out_path: str) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    import xlm_ds  # noqa: F401
    from xlm_ds.engine.deepspeed_setup import import_deepspeed, init_distributed
    from xlm_ds.models.xlm_encoder import XLMEncoder
    from xlm_ds.models.xlm_model import XLMConfig, XLMModel

    deepspeed = import_deepspeed()
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()

    class Vocab:
        def __len__(self):
            return ARCH["vocab"]

        def pad(self):
            return 1

    results = {}
    for stage in (0, 1, 2, 3):
        torch.manual_seed(0)
        cfg = OmegaConf.structured(XLMConfig(
            encoder_layers=ARCH["layers"], encoder_embed_dim=ARCH["dim"], encoder_ffn_embed_dim=ARCH["ffn"],
            encoder_attention_heads=ARCH["heads"], dropout=0.0, attention_dropout=0.0, max_positions=128,
            languages="de,en,fr",
        ))
        model = XLMModel(cfg, XLMEncoder(cfg, Vocab(), ARCH["langs"]))
        psi = sum(p.numel() for p in model.parameters())
        config = {
            "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
            "bf16": {"enabled": True},
            "zero_optimization": {
                "stage": stage, "contiguous_gradients": True, "overlap_comm": False,
                "reduce_bucket_size": 200_000, "allgather_bucket_size": 200_000,
                "stage3_prefetch_bucket_size": 200_000, "stage3_param_persistence_threshold": 0,
                "stage3_max_live_parameters": 1_000_000, "sub_group_size": 10**9,
            },
        }
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config, dist_init_required=False)
        snaps = []
        if stage == 1 and hasattr(engine.optimizer, "reduce_gradients"):
            plain = engine.optimizer.reduce_gradients

            def reduce_gradients(*a, **k):
                snaps.append(snapshot(engine))
                return plain(*a, **k)

            engine.optimizer.reduce_gradients = reduce_gradients
        g = torch.Generator().manual_seed(rank)
        tokens = torch.randint(4, ARCH["vocab"], (2, 64), generator=g)
        target = torch.where(torch.rand(2, 64, generator=g) < 0.15, tokens, torch.ones_like(tokens))
        for step in range(2):
            logits, _ = engine(tokens, src_langs=torch.zeros_like(tokens), masked_tokens=target.ne(1))
            loss = torch.nn.functional.cross_entropy(logits.float(), target[target.ne(1)])
            engine.backward(loss)
            if step == 0:
                engine.step()
                snaps.clear()
        snaps.append(snapshot(engine))
        peak = max(snaps, key=lambda s: s["total"])
        peak["psi"] = psi
        gathered = [None] * world
        dist.all_gather_object(gathered, peak)
        results[stage] = gathered
        del engine, optimizer, model
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"world": world, "stages": results}, f)
    dist.barrier()
    dist.destroy_process_group()


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(n: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), os.path.abspath(__file__), "--worker", out]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
            raise SystemExit(f"{n} ranks: worker failed")
        with open(out) as f:
            return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--out", default=os.path.join(HERE, "out", "zero_memory.json"))
    p.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    rows = []
    for n in args.ranks:
        print(f"measuring {n} rank(s) ...", flush=True)
        res = measure(n)
        for stage, per_rank in sorted(res["stages"].items(), key=lambda kv: int(kv[0])):
            stage = int(stage)
            psi = per_rank[0]["psi"]
            th = theory(stage, n)
            worst = max(per_rank, key=lambda r: r["total"])  # the fullest rank
            rows.append({
                "stage": stage, "ranks": n, "psi": psi,
                "measured_bytes": {k: worst[k] for k in ("params", "grads", "optim", "total")},
                "measured_per_param": {k: worst[k] / psi for k in ("params", "grads", "optim", "total")},
                "theory_per_param": th,
                "ratio": worst["total"] / (th["total"] * psi),
                "per_rank_total_bytes": [r["total"] for r in per_rank],
                "other_bytes": worst["other"],
                "holders": worst["holders"],
            })
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"arch": ARCH, "precision": "bf16 params/grads, fp32 AdamW states", "rows": rows}, f, indent=2)
    psi = rows[0]["psi"]
    print(f"\nPsi = {psi:,} parameters; bytes per parameter per rank (fullest rank), measured / ZeRO paper")
    header = f"{'stage':>5} {'N':>3} | {'params':>13} | {'grads':>13} | {'optimizer':>13} | {'total':>13} | " \
             f"{'MiB/rank':>8} | {'meas/theory':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        m, t = r["measured_per_param"], r["theory_per_param"]
        cells = " | ".join(f"{m[k]:5.2f} / {t[k]:5.2f}" for k in ("params", "grads", "optim", "total"))
        print(f"{r['stage']:>5} {r['ranks']:>3} | {cells} | {r['measured_bytes']['total'] / 2**20:8.1f} | "
              f"{r['ratio']:11.3f}")
    bad = [r for r in rows if abs(r["ratio"] - 1) > 0.10]
    print(f"\nwrote {args.out}; " + ("all within 10% of theory" if not bad else
                                     f"{len(bad)} row(s) outside 10% of theory"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
