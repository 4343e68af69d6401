"""``xlm-ds-demo``: the README's main job on the shipped Tatoeba sample —
prepare (shared sentencepiece vocabulary), pretrain a small XLM (CLM by
default, ``--objectives`` for MLM/TLM mixes), fine-tune German→English
translation from it and, for the same
budget, from a random initialisation of the same shape; translate the test
set with fairseq-generate and print both sacreBLEUs side by side (with
chrF and the best validation loss, which show the pretrained model's head
start more steadily than BLEU at a few BLEU points).

Every step is the same command a user would type (printed before it runs),
so the demo doubles as the user's path through the tools. A step already
done by the same command is skipped, so an interrupted demo resumes; one
done by another command (other updates, seed, architecture) is an error
rather than a result silently reused.
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import time

from ..models.xlm_transformer import OUTPUT_LAYERS
from ..reliability.atomic import atomic_write
from .precision import add_argument as add_precision_argument
from .precision import resolve as resolve_precision
from .precision import train_flags

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_corpus")
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def threads() -> int:
    """The demo's CPU threads: OMP_NUM_THREADS (``make demo`` sets 2), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, os.cpu_count() or 1)


def run(cmd, log_path=None, n_threads=None):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(n_threads or threads())
    t0 = time.time()
    if log_path:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if proc.returncode:
            tail = open(log_path).read()[-3000:]
            sys.exit(f"step failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    else:
        subprocess.run(cmd, check=True, env=env)
    seconds = time.time() - t0
    print(f"  ({seconds:.0f}s)", flush=True)
    return seconds


def done(run_dir, cmd):
    """Whether ``run_dir`` holds a finished run of ``cmd``: a demo rerun with
    other settings (updates, arch, seed) must not silently reuse it."""
    path = os.path.join(run_dir, "done")
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            was = json.load(f).get("command")
    except ValueError:  # an empty marker of a demo before 2026-12-03
        was = None
    if was != cmd[1:]:  # the interpreter's path may differ
        sys.exit(f"{run_dir} was trained by another command; use another --out or delete it.\n"
                 f"  was: {shlex.join(was or [])}\n  now: {shlex.join(cmd[1:])}")
    return True


def mark_done(run_dir, cmd, seconds):
    """``done`` records the command and its wall time (the peer runs of
    benchmarks/demo_seeds.py train for the same time)."""
    atomic_write(os.path.join(run_dir, "done"),
                 lambda f: f.write(json.dumps({"command": cmd[1:], "seconds": round(seconds, 1)}).encode()),
                 marker=False)


def step_seconds(run_dir):
    with open(os.path.join(run_dir, "done")) as f:
        return json.load(f)["seconds"]


def fairseq(tool):
    return [sys.executable, "-m", f"fairseq_cli.{tool}"]


def main(argv=None):
    p = argparse.ArgumentParser(prog="xlm-ds-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="working directory (default: demo_out)")
    p.add_argument("--arch", default="xlm_small",
                   help="pretraining architecture; the translation model is its xlm_transformer_* "
                   "(default: xlm_small, 256 dim: per minute it translates far better than xlm_mini, "
                   "docs/results.md)")
    p.add_argument("--objectives", default="clm",
                   help="the xlm task's --objectives for pretraining (default: clm, every token a "
                   "target, so that 4 minutes of pretraining leave the unigram level that MLM's "
                   "15%% masked targets are still near; 'mlm tlm' is XLM's MT recipe at scale)")
    p.add_argument("--output-layer", default="tied-linear", choices=OUTPUT_LAYERS,
                   help="decoder output layer of both fine-tunings (default: tied-linear, the bare "
                   "projection tied to the embeddings; lm-head reloads the pretrained LM head as XLM "
                   "does, worse on every seed measured: docs/results.md)")
    p.add_argument("--vocab-size", type=int, default=6000)
    p.add_argument("--pretrain-updates", type=int, default=500)
    p.add_argument("--finetune-updates", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3, help="pretraining peak learning rate")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning peak learning rate")
    p.add_argument("--warmup-updates", type=int, default=200, help="pretraining warm-up updates")
    p.add_argument("--finetune-warmup-updates", type=int, default=100,
                   help="fine-tuning warm-up updates (default 100: a third of the default budget; "
                   "seed runs and the budget search behind the defaults: docs/results.md)")
    p.add_argument("--tokens-per-sample", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="streams per objective per update")
    p.add_argument("--max-tokens", type=int, default=2500, help="fine-tuning tokens per batch")
    p.add_argument("--source-lang", default="de")
    p.add_argument("--target-lang", default="en")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2, choices=(1, 2),
                   help="fine-tunings run at once, the threads split between them (default 2: a model "
                   "this small trains ~1.5x faster on 2 threads than on 1, so two 1-thread runs side by "
                   "side finish sooner than two 2-thread runs in turn)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--finetune-seed", type=int, default=None,
                   help="seed of the two fine-tuning runs (default: --seed); other values measure "
                   "the seed noise against the same pretrained model (benchmarks/demo_seeds.py)")
    add_precision_argument(p)
    args = p.parse_args(argv)
    if args.finetune_seed is None:
        args.finetune_seed = args.seed
    precision, why = resolve_precision(args.precision)
    print(f"precision: {precision} ({why})", flush=True)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    pre_dir = os.path.join(out, "pretrain")
    src, tgt = args.source_lang, args.target_lang
    pair = "-".join(sorted([src, tgt]))

    print("== 1/5 prepare: one sentencepiece vocabulary for en, de, fr; binarize", flush=True)
    if not os.path.exists(os.path.join(data, "manifest.json")):
        run([sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus", os.path.join(SAMPLE, "corpus.yaml"),
             "--out", data, "--vocab-size", str(args.vocab_size), "--seed", str(args.seed)])

    # --data-buffer-size 0: no prefetch thread; fairseq's daemon prefetch
    # thread can abort the interpreter at exit (docs/stack.md)
    common = ["--user-dir", USER_DIR, "--log-format", "simple",
              "--log-interval", "100", "--no-epoch-checkpoints", "--cpu", "--data-buffer-size", "0",
              # the same optimisation for pretraining and fine-tuning
              "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
              "--lr-scheduler", "inverse_sqrt", "--clip-norm", "1.0",
              # validate and save every N updates (an interrupted step resumes
              # from there), not at every epoch's end: a fine-tuning epoch is
              # ~55 updates, and each validation + save costs a few seconds
              "--validate-interval", "1000", "--save-interval", "1000",
              *train_flags(precision)]

    print(f"== 2/5 pretrain {args.arch} with --objectives '{args.objectives}' (every language or pair "
          "of the sample that an objective reads)", flush=True)
    pretrained = os.path.join(pre_dir, "checkpoint_best.pt")
    cmd = fairseq("train") + [
        data, "--task", "xlm", "--arch", args.arch, "--criterion", "xlm_lm",
        "--objectives", args.objectives, "--tokens-per-sample", str(args.tokens_per_sample),
        "--batch-size", str(args.batch_size), "--max-update", str(args.pretrain_updates),
        "--save-dir", pre_dir, "--tensorboard-logdir", os.path.join(out, "tb", "pretrain"),
        "--seed", str(args.seed), "--lr", str(args.lr), "--warmup-updates", str(args.warmup_updates),
        "--validate-interval-updates", "500", "--save-interval-updates", "500",
    ] + common
    if not done(pre_dir, cmd):
        mark_done(pre_dir, cmd, run(cmd, os.path.join(out, "pretrain.log")))

    # the same fine-tuning twice, once from a random initialisation of the
    # same shape: what pretraining buys at this budget
    mt_arch = "xlm_transformer_" + args.arch[len("xlm_"):]
    runs = (("random", None), ("pretrained", pretrained))
    n_threads = max(1, threads() // args.jobs)
    print(f"== 3/5 fine-tune {src}->{tgt} translation for {args.finetune_updates} updates, twice "
          f"({args.jobs} at once, {n_threads} thread(s) each): random initialisation of the same shape "
          f"(the baseline); encoder and decoder from the pretrained XLM (output layer: {args.output_layer})",
          flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {name: pool.submit(finetune, out, data, name, init, mt_arch, args, common, n_threads)
                   for name, init in runs}
        run_dirs = {name: f.result() for name, f in futures.items()}
    print("== 4/5 translate the test set with fairseq-generate and score", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {name: pool.submit(translate_and_score, out, data, name, run_dirs[name], args, n_threads)
                   for name, _ in runs}
        results = {name: f.result() for name, f in futures.items()}

    print(f"== 5/5 {src}->{tgt} on the {pair} test set ({results['pretrained']['sentences']} sentences), "
          f"beam {args.beam}, {args.finetune_updates} fine-tuning updates each", flush=True)
    print(f"{'initialisation':<16}{'BLEU':>8}{'chrF':>8}{'valid loss (bits)':>20}")
    for name, r in results.items():
        print(f"{name:<16}{r['bleu']:>8.2f}{r['chrf']:>8.2f}{r['valid_loss']:>20.3f}")
    pre, rnd = results["pretrained"], results["random"]
    loss_gap = rnd["valid_loss"] - pre["valid_loss"]
    print(f"pretraining buys {pre['bleu'] - rnd['bleu']:+.2f} BLEU and {pre['chrf'] - rnd['chrf']:+.2f} chrF at "
          f"this budget, validation loss {abs(loss_gap):.3f} bits {'lower' if loss_gap >= 0 else 'higher'} "
          "(fine-tuning seed noise: docs/results.md)")
    print(f"sacreBLEU {results['pretrained']['bleu_signature']}")
    summary = {"source_lang": src, "target_lang": tgt, "beam": args.beam,
               "finetune_updates": args.finetune_updates, "finetune_jobs": args.jobs, "pretrain_seconds": step_seconds(pre_dir),
               "pretrain_seed": args.seed, "finetune_seed": args.finetune_seed, **results}
    atomic_write(os.path.join(out, f"results-seed{args.finetune_seed}.json"),
                 lambda f: f.write(json.dumps(summary, indent=1).encode()), marker=False)
    print(f"TensorBoard: tensorboard --logdir {os.path.join(out, 'tb')}")
    print(json.dumps(summary))
    return 0


def finetune(out, data, name, init, mt_arch, args, common, n_threads):
    """Fine-tunes ``xlm_transformer`` (from ``init``, or random when None)
    unless the same command already did; returns its save directory."""
    src, tgt = args.source_lang, args.target_lang
    name = f"{name}-seed{args.finetune_seed}"
    run_dir = os.path.join(out, f"mt-{name}")
    init_flags = ["--init-encoder", init, "--init-decoder", init] if init else []
    cmd = fairseq("train") + [
        data, "--task", "xlm_translation", "-s", src, "-t", tgt, "--arch", mt_arch, *init_flags,
        "--output-layer", args.output_layer,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--max-tokens", str(args.max_tokens), "--max-update", str(args.finetune_updates),
        "--save-dir", run_dir, "--tensorboard-logdir", os.path.join(out, "tb", f"mt-{name}"),
        "--seed", str(args.finetune_seed), "--lr", str(args.finetune_lr),
        "--warmup-updates", str(args.finetune_warmup_updates),
        "--validate-interval-updates", "200", "--save-interval-updates", "200",
    ] + common
    if not done(run_dir, cmd):
        mark_done(run_dir, cmd, run(cmd, os.path.join(out, f"finetune-{name}.log"), n_threads))
    return run_dir


def translate_and_score(out, data, name, run_dir, args, n_threads):
    """Translates the test set with fairseq-generate (skipped when done)
    and scores it (always); returns xlm-ds-score's JSON plus the
    fine-tuning wall time and best validation loss."""
    src, tgt = args.source_lang, args.target_lang
    pair = "-".join(sorted([src, tgt]))
    name = f"{name}-seed{args.finetune_seed}"
    gen_out = os.path.join(run_dir, f"generate.{src}-{tgt}.txt")
    if not os.path.exists(gen_out):
        gen_dir = os.path.join(run_dir, "generate")
        run(fairseq("generate") + [
            data, "--user-dir", USER_DIR, "--task", "xlm_translation", "-s", src, "-t", tgt,
            "--gen-subset", "test", "--path", os.path.join(run_dir, "checkpoint_best.pt"),
            "--beam", str(args.beam), "--batch-size", "64", "--post-process", "sentencepiece", "--cpu",
            "--results-path", gen_dir, "--data-buffer-size", "0",
        ], os.path.join(out, f"generate-{name}.log"), n_threads)
        os.replace(os.path.join(gen_dir, "generate-test.txt"), gen_out)
    ref = os.path.join(SAMPLE, f"test.{pair}.{tgt}.gz")
    score_log = os.path.join(out, f"score-{name}.log")
    run([sys.executable, "-m", "xlm_ds.cli.score_mt", gen_out, "--ref", ref], score_log, 1)
    lines = open(score_log).read().strip().splitlines()
    print(f"  {name}: {lines[-2]}", flush=True)
    return {**json.loads(lines[-1]), "finetune_seconds": step_seconds(run_dir),
            "valid_loss": best_valid_loss(run_dir)}


def best_valid_loss(run_dir):
    """The fine-tuning's best validation loss (label-smoothed, bits), as
    fairseq stored it in checkpoint_best.pt: at 1-3 BLEU a few sentences
    move BLEU, and the loss shows the head start more steadily."""
    import torch

    # our own checkpoint, just written; fairseq pickles its configs in it
    state = torch.load(os.path.join(run_dir, "checkpoint_best.pt"), map_location="cpu", weights_only=False)
    return round(float(state["extra_state"]["val_loss"]), 3)


if __name__ == "__main__":
    sys.exit(main())
