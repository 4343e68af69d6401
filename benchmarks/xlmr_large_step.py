"""One training step of ``xlmr_large`` (24 layers, 1024 dim, 250k vocabulary,
~560M parameters) under ZeRO-3 with 2 ranks on one CPU machine: peak
resident memory per rank and step time.

What runs is what ``xlm-ds-train --arch xlmr_large --deepspeed-config
ds_configs/zero3.json`` (or zero3_bf16.json) runs: every rank builds the
full model (no ``zero.Init``: the encoder's own initialisation needs full
tensors), DeepSpeed partitions it at ``initialize``, the client optimizer is
torch.optim.AdamW, the loss is the xlm_lm criterion's on an MLM batch
(15% of positions scored by the tied LM head).

    python benchmarks/xlmr_large_step.py                     # bf16, 2 ranks
    python benchmarks/xlmr_large_step.py --precision fp32 --steps 2

Writes benchmarks/out/xlmr_large_step.json. Needs ~8 GiB per rank.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VOCAB = 250_002


def _rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker(args) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    import torch.distributed as dist
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from omegaconf import OmegaConf

    import xlm_ds  # noqa: F401
    from xlm_ds.criterions.xlm_lm_loss import XLMLMCriterion
    from xlm_ds.engine import ds_config
    from xlm_ds.engine.deepspeed_setup import import_deepspeed, init_distributed
    from xlm_ds.models.xlm_encoder import XLMEncoder
    from xlm_ds.models.xlm_model import XLMConfig, XLMModel

    deepspeed = import_deepspeed()
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    phases = {"start": _rss_gib()}
    peaks = {"start": _peak_gib()}  # peak RSS so far, at the end of each phase

    def log(msg):
        if rank == 0:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    class Dictionary:
        def __len__(self):
            return VOCAB

        def pad(self):
            return 1

    class Task:  # what the criterion reads
        languages = []
        target_dictionary = Dictionary()
        source_dictionary = target_dictionary

    ns = argparse.Namespace()
    ARCH_CONFIG_REGISTRY["xlmr_large"](ns)
    cfg = OmegaConf.structured(XLMConfig(**{k: v for k, v in vars(ns).items() if k in XLMConfig.__dataclass_fields__}))
    torch.manual_seed(1)
    t0 = time.time()
    model = XLMModel(cfg, XLMEncoder(cfg, Dictionary(), 0))
    psi = sum(p.numel() for p in model.parameters())
    phases["model_built"], peaks["model_built"] = _rss_gib(), _peak_gib()
    log(f"built xlmr_large: {psi / 1e6:.1f}M parameters in {time.time() - t0:.1f}s "
        f"(rss {phases['model_built']:.2f} GiB)")
    name = "zero3_bf16.json" if args.precision == "bf16" else "zero3.json"
    ds = ds_config.load_and_validate(os.path.join(REPO, "ds_configs", name), world,
                                     batch_size=args.batch_size, client_optimizer="adam")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    t0 = time.time()
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds.config, dist_init_required=False)
    phases["engine_initialized"], peaks["engine_initialized"] = _rss_gib(), _peak_gib()
    init_s = time.time() - t0
    log(f"deepspeed.initialize (ZeRO-3, {args.precision}): {init_s:.1f}s (rss {phases['engine_initialized']:.2f} GiB)")
    criterion = XLMLMCriterion(Task())
    g = torch.Generator().manual_seed(rank)
    steps = []
    for step in range(args.steps):
        tokens = torch.randint(4, VOCAB, (args.batch_size, args.tokens), generator=g)
        target = torch.where(torch.rand(tokens.shape, generator=g) < 0.15, tokens, torch.ones_like(tokens))
        sample = {
            "net_input": {"src_tokens": tokens, "src_lengths": torch.full((args.batch_size,), args.tokens)},
            "target": target, "ntokens": tokens.numel(), "nsentences": args.batch_size, "objective": "mlm",
        }
        dist.barrier()
        t0 = time.time()
        engine.train()
        loss, n_pred, _ = criterion(engine, sample)
        t_fwd = time.time()
        peaks[f"step_{step + 1}_forward"] = _peak_gib()
        engine.backward(loss / max(n_pred, 1))
        t_bwd = time.time()
        peaks[f"step_{step + 1}_backward"] = _peak_gib()
        engine.step()
        t_step = time.time()
        peaks[f"step_{step + 1}_optimizer"] = _peak_gib()
        dist.barrier()
        steps.append({
            "forward_s": t_fwd - t0, "backward_s": t_bwd - t_fwd, "optimizer_s": t_step - t_bwd,
            "total_s": time.time() - t0, "loss": float(loss) / max(n_pred, 1),
            "gnorm": None if engine.get_global_grad_norm() is None else float(engine.get_global_grad_norm()),
        })
        phases[f"after_step_{step + 1}"] = _rss_gib()
        log(f"step {step + 1}: {steps[-1]['total_s']:.1f}s (forward {steps[-1]['forward_s']:.1f}, backward "
            f"{steps[-1]['backward_s']:.1f}, optimizer {steps[-1]['optimizer_s']:.1f}), loss "
            f"{steps[-1]['loss']:.3f}, rss {phases[f'after_step_{step + 1}']:.2f} GiB")
    mine = {"rank": rank, "peak_rss_gib": _peak_gib(), "phases_rss_gib": phases, "peak_so_far_gib": peaks,
            "steps": steps}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        with open(args.worker, "w") as f:
            json.dump({"psi": psi, "vocab": VOCAB, "init_s": init_s, "ranks": gathered}, f)
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4, help="sentences per rank")
    p.add_argument("--tokens", type=int, default=128, help="tokens per sentence")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "out", "xlmr_large_step.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"), PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), os.path.abspath(__file__),
               "--worker", out, "--precision", args.precision, "--batch-size", str(args.batch_size),
               "--tokens", str(args.tokens), "--steps", str(args.steps)]
        start = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.time() - start
        for line in proc.stdout.splitlines():
            if line.startswith("["):
                print(line)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-6000:])
            return proc.returncode
        with open(out) as f:
            res = json.load(f)
    res.update(precision=args.precision, batch_size=args.batch_size, tokens=args.tokens,
               omp_num_threads=env["OMP_NUM_THREADS"], wall_s=wall, cpu_count=os.cpu_count())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nxlmr_large: {res['psi'] / 1e6:.1f}M parameters, ZeRO-3 {args.precision}, {args.ranks} ranks, "
          f"{args.batch_size}x{args.tokens} tokens per rank")
    for r in res["ranks"]:
        s = r["steps"][0]
        print(f"  rank {r['rank']}: peak RSS {r['peak_rss_gib']:.2f} GiB; step 1 {s['total_s']:.1f}s "
              f"(forward {s['forward_s']:.1f}, backward {s['backward_s']:.1f}, optimizer {s['optimizer_s']:.1f})"
              + "".join(f"; step {i + 1} {x['total_s']:.1f}s" for i, x in enumerate(r["steps"][1:], 1)))
    print("  peak RSS so far (rank 0): " + ", ".join(f"{k} {v:.2f}" for k, v in res["ranks"][0]["peak_so_far_gib"].items()))
    print(f"  deepspeed.initialize {res['init_s']:.1f}s; whole run {wall:.0f}s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
