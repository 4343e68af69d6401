"""``xlm-ds-demo``: the README's main job on the shipped Tatoeba sample —
prepare (shared sentencepiece vocabulary), pretrain a small XLM with
MLM+TLM, fine-tune German→English translation from it, translate the test
set with fairseq-generate and print sacreBLEU.

Every step is the same command a user would type (printed before it runs),
so the demo doubles as the user's path through the tools. Steps whose
output already exists are skipped, so an interrupted demo resumes.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time

from .precision import add_argument as add_precision_argument
from .precision import resolve as resolve_precision
from .precision import train_flags

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_corpus")
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, log_path=None):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1))))
    t0 = time.time()
    if log_path:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if proc.returncode:
            tail = open(log_path).read()[-3000:]
            sys.exit(f"step failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    else:
        subprocess.run(cmd, check=True, env=env)
    print(f"  ({time.time() - t0:.0f}s)", flush=True)


def fairseq(tool):
    return [sys.executable, "-m", f"fairseq_cli.{tool}"]


def main(argv=None):
    p = argparse.ArgumentParser(prog="xlm-ds-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="working directory (default: demo_out)")
    p.add_argument("--arch", default="xlm_mini", help="pretraining architecture (default: xlm_mini)")
    p.add_argument("--vocab-size", type=int, default=6000)
    p.add_argument("--pretrain-updates", type=int, default=800)
    p.add_argument("--finetune-updates", type=int, default=700)
    p.add_argument("--tokens-per-sample", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="streams per objective per update")
    p.add_argument("--max-tokens", type=int, default=2500, help="fine-tuning tokens per batch")
    p.add_argument("--source-lang", default="de")
    p.add_argument("--target-lang", default="en")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    add_precision_argument(p)
    args = p.parse_args(argv)
    precision, why = resolve_precision(args.precision)
    print(f"precision: {precision} ({why})", flush=True)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    pre_dir = os.path.join(out, "pretrain")
    mt_dir = os.path.join(out, "mt")
    src, tgt = args.source_lang, args.target_lang
    pair = "-".join(sorted([src, tgt]))

    print("== 1/4 prepare: one sentencepiece vocabulary for en, de, fr; binarize", flush=True)
    if not os.path.exists(os.path.join(data, "manifest.json")):
        run([sys.executable, "-m", "xlm_ds.cli.prepare", "--corpus", os.path.join(SAMPLE, "corpus.yaml"),
             "--out", data, "--vocab-size", str(args.vocab_size), "--seed", str(args.seed)])

    # --data-buffer-size 0: no prefetch thread; fairseq's daemon prefetch
    # thread can abort the interpreter at exit (docs/stack.md)
    common = ["--user-dir", USER_DIR, "--seed", str(args.seed), "--log-format", "simple",
              "--log-interval", "100", "--no-epoch-checkpoints", "--cpu", "--data-buffer-size", "0",
              # the same optimisation for pretraining and fine-tuning
              "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "5e-4",
              "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--clip-norm", "1.0",
              "--validate-interval-updates", "500", "--save-interval-updates", "500",
              *train_flags(precision)]

    print("== 2/4 pretrain: MLM on en/de/fr + TLM on de-en/en-fr", flush=True)
    pretrained = os.path.join(pre_dir, "checkpoint_best.pt")
    if not os.path.exists(os.path.join(pre_dir, "done")):
        run(fairseq("train") + [
            data, "--task", "xlm", "--arch", args.arch, "--criterion", "xlm_lm",
            "--objectives", "mlm tlm", "--tokens-per-sample", str(args.tokens_per_sample),
            "--batch-size", str(args.batch_size), "--max-update", str(args.pretrain_updates),
            "--save-dir", pre_dir, "--tensorboard-logdir", os.path.join(out, "tb", "pretrain"),
        ] + common, os.path.join(out, "pretrain.log"))
        open(os.path.join(pre_dir, "done"), "w").close()

    print(f"== 3/4 fine-tune {src}->{tgt} translation, encoder and decoder from the pretrained XLM", flush=True)
    finetuned = os.path.join(mt_dir, "checkpoint_best.pt")
    if not os.path.exists(os.path.join(mt_dir, "done")):
        run(fairseq("train") + [
            data, "--task", "xlm_translation", "-s", src, "-t", tgt, "--arch", "xlm_transformer",
            "--init-encoder", pretrained, "--init-decoder", pretrained,
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", str(args.max_tokens), "--max-update", str(args.finetune_updates),
            "--save-dir", mt_dir, "--tensorboard-logdir", os.path.join(out, "tb", "mt"),
        ] + common, os.path.join(out, "finetune.log"))
        open(os.path.join(mt_dir, "done"), "w").close()

    print(f"== 4/4 translate the {pair} test set and score", flush=True)
    gen_out = os.path.join(out, f"generate.{src}-{tgt}.txt")
    run(fairseq("generate") + [
        data, "--user-dir", USER_DIR, "--task", "xlm_translation", "-s", src, "-t", tgt,
        "--gen-subset", "test", "--path", finetuned, "--beam", str(args.beam), "--batch-size", "64",
        "--post-process", "sentencepiece", "--cpu", "--results-path", out, "--data-buffer-size", "0",
    ], os.path.join(out, "generate.log"))
    os.replace(os.path.join(out, "generate-test.txt"), gen_out)
    ref = os.path.join(SAMPLE, f"test.{pair}.{tgt}.gz")
    run([sys.executable, "-m", "xlm_ds.cli.score_mt", gen_out, "--ref", ref])
    print(f"TensorBoard: tensorboard --logdir {os.path.join(out, 'tb')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
