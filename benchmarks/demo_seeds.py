"""What `make demo` shows, measured over fine-tuning seeds, with the peer a
user would pick instead.

    python benchmarks/demo_seeds.py                    # seeds 1,2,3 + stock fairseq peer
    python benchmarks/demo_seeds.py --seeds 1 --no-peer
    python benchmarks/demo_seeds.py -- --finetune-updates 400   # after --: xlm-ds-demo flags

Runs ``xlm-ds-demo --finetune-seed S`` for each seed in one output
directory (prepare and pretraining run once, seed 1; each seed fine-tunes
the random and the pretrained initialisation); per seed, the pretrained
fine-tuning again with the other ``--output-layer`` (the pretrained LM
head against fairseq's bare tied projection); then the peer: stock
fairseq (``--task translation --arch transformer``, 3+3 layers, 256 dim,
shared embeddings, lr 1e-3: what a user trains from scratch instead) on the
demo's own data directory, for the demo's fine-tuning wall time and for its
whole training time (pretraining + fine-tuning), stopped by
``--stop-time-hours``. Prints a table and writes
``benchmarks/out/demo_seeds/demo_seeds.json``. Resumable: every finished
step is skipped when rerun.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "repro"))
import common as C  # noqa: E402

PEER = ["--task", "translation", "--arch", "transformer", "--share-all-embeddings",
        "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
        "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "200", "--clip-norm", "1.0", "--max-tokens", "2500"]


# --peer-rows name: the row's label
PEER_ROWS = {"finetune-time": "stock fairseq, fine-tuning time",
             "demo-time": "stock fairseq, pretraining + fine-tuning time"}


def run_demo(steps, out, seed, demo_args):
    steps.run(os.path.join(out, f"demo-seed{seed}.json"),
              C.module("xlm_ds.cli.demo") + ["--out", out, "--finetune-seed", str(seed), *demo_args],
              parse=C.last_json_line)
    return C.read_json(os.path.join(out, f"results-seed{seed}.json"))


def run_peer(steps, data, out, name, seconds, src, tgt, beam):
    """Stock fairseq from scratch for ``seconds`` of training; BLEU of its
    best validated checkpoint, scored as the demo scores."""
    save = os.path.join(out, f"peer-{name}")
    train = C.module("fairseq_cli.train") + [
        data, "-s", src, "-t", tgt, *PEER, "--seed", "1", "--cpu", "--data-buffer-size", "0",
        "--max-update", "1000000", "--stop-time-hours", f"{seconds / 3600:.6f}", "--save-dir", save,
        "--no-epoch-checkpoints", "--validate-interval-updates", "500", "--save-interval-updates", "500",
        "--log-format", "simple", "--log-interval", "100"]
    steps.run(os.path.join(save, "train.json"), train, parse=C._train_summary)
    return {**generate_and_score(steps, data, save, "translation", src, tgt, beam),
            "train_seconds": round(seconds, 1)}


def run_other_output_layer(steps, out, seed, src, tgt, beam):
    """The pretrained fine-tuning of ``seed`` again with the other decoder
    output layer (the pretrained LM head, as XLM reloads it, against
    fairseq's bare tied projection): returns its name and scores."""
    with open(os.path.join(out, f"mt-pretrained-seed{seed}", "done")) as f:
        cmd = [sys.executable] + json.load(f)["command"]  # the demo's own fine-tuning command
    at = cmd.index("--output-layer") + 1
    other = "lm-head" if cmd[at] == "tied-linear" else "tied-linear"
    save = os.path.join(out, f"mt-pretrained-{other}-seed{seed}")
    cmd[at] = other
    cmd[cmd.index("--save-dir") + 1] = save
    cmd[cmd.index("--tensorboard-logdir") + 1] = os.path.join(save, "tb")
    steps.run(os.path.join(save, "train.json"), cmd, parse=C._train_summary)
    return other, generate_and_score(steps, os.path.join(out, "data"), save, "xlm_translation", src, tgt, beam)


def generate_and_score(steps, data, save, task, src, tgt, beam):
    gen = os.path.join(save, "generate-test.txt")
    user_dir = ["--user-dir", C.USER_DIR] if task.startswith("xlm") else []
    stock = [] if user_dir else C.STOCK_ENV  # what a user of stock fairseq sets (C.STOCK_ENV, C.EVERY_SENTENCE)
    steps.run(os.path.join(save, "generate.json"), stock + C.module("fairseq_cli.generate") + [
        data, *user_dir, "--task", task, "-s", src, "-t", tgt, "--gen-subset", "test",
        "--path", os.path.join(save, "checkpoint_best.pt"), "--beam", str(beam), "--batch-size", "64",
        "--post-process", "sentencepiece", "--cpu", "--data-buffer-size", "0", "--results-path", save,
        *([] if user_dir else C.EVERY_SENTENCE)])
    pair = "-".join(sorted([src, tgt]))
    ref = os.path.join(C.USER_DIR, "sample_corpus", f"test.{pair}.{tgt}.gz")
    score = steps.run(os.path.join(save, "score.json"), C.module("xlm_ds.cli.score_mt") + [gen, "--ref", ref],
                      parse=C.last_json_line)
    return {"bleu": score["bleu"], "chrf": score["chrf"], "bleu_signature": score["bleu_signature"]}


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    demo_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(C.REPO, "benchmarks", "out", "demo_seeds"))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--no-peer", action="store_true", help="skip the stock fairseq rows")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the pretrained runs with the other decoder output layer (the LM head "
                   "when the demo uses the bare tied projection, and the reverse)")
    p.add_argument("--peer-seconds", default=None, metavar="FT,TOTAL",
                   help="the peer's two training times (default: this run's mean fine-tuning time, and "
                   "that plus its pretraining time); e.g. a fresh-clone `make demo`'s, when this run shared "
                   "the machine")
    p.add_argument("--peer-rows", default=",".join(PEER_ROWS),
                   help="which peer rows to run (default: both; e.g. demo-time alone)")
    args = p.parse_args(argv)
    wanted = args.peer_rows.split(",")
    unknown = sorted(set(wanted) - set(PEER_ROWS))
    if unknown:
        p.error(f"--peer-rows: unknown row(s) {', '.join(unknown)}; expected {' and/or '.join(PEER_ROWS)}")
    t0, steps = time.time(), C.Steps()
    out = os.path.abspath(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {seed: run_demo(steps, out, seed, demo_args) for seed in seeds}
    rows = {name: [runs[s][name]["bleu"] for s in seeds] for name in ("random", "pretrained")}
    gains = [round(p - r, 2) for p, r in zip(rows["pretrained"], rows["random"])]
    noise = max(spread(rows["random"]), spread(rows["pretrained"]))
    first = runs[seeds[0]]
    finetune_s = statistics.mean(runs[s]["pretrained"]["finetune_seconds"] for s in seeds)
    src, tgt, beam = first["source_lang"], first["target_lang"], first["beam"]
    if not args.no_ablation:
        other = [run_other_output_layer(steps, out, s, src, tgt, beam) for s in seeds]
        rows[f"pretrained, {other[0][0]} output layer"] = [r["bleu"] for _, r in other]
    peers = {}
    if not args.no_peer:
        data = os.path.join(out, "data")
        ft_s, total_s = finetune_s, finetune_s + first["pretrain_seconds"]
        if args.peer_seconds:
            ft_s, total_s = (float(x) for x in args.peer_seconds.split(","))
        for name, seconds in (("finetune-time", ft_s), ("demo-time", total_s)):
            if name in wanted:
                peers[PEER_ROWS[name]] = run_peer(steps, data, out, name, seconds, src, tgt, beam)

    print(f"\nde->en, sample test set, {first['finetune_updates']} fine-tuning updates, "
          f"fine-tuning seeds {args.seeds} (one pretrained model)")
    w = 56  # the longest label: the whole-time peer row with its seconds
    print(f"{'row':<{w}}{'BLEU mean':>10}{'sd':>6}  per seed")
    for name, values in rows.items():
        print(f"{'xlm-ds ' + name:<{w}}{statistics.mean(values):>10.2f}{spread(values):>6.2f}  "
              + " ".join(f"{v:.2f}" for v in values))
    print(f"{'gain (pretrained - random)':<{w}}{statistics.mean(gains):>10.2f}{spread(gains):>6.2f}  "
          + " ".join(f"{v:+.2f}" for v in gains))
    for name, r in peers.items():
        label = f"{name} ({r['train_seconds']:.0f} s)"
        print(f"{label:<{w}}{r['bleu']:>10.2f}{'':>6}  seed 1")
    # the rule: better on every seed, and by more than a row's seed noise on average
    wins = min(gains) > 0 and statistics.mean(gains) > noise
    print(f"seed noise (largest sd of a row): {noise:.2f} BLEU; mean gain {statistics.mean(gains):.2f} = "
          f"{statistics.mean(gains) / noise if noise else float('inf'):.1f}x the noise; pretrained better on "
          f"every seed and by more than the noise: {wins}")
    result = {"seeds": seeds, "runs": {str(s): runs[s] for s in seeds}, "bleu": rows, "gain": gains,
              "noise_sd": round(noise, 3), "wins_beyond_noise": wins, "peers": peers,
              "finetune_seconds_mean": round(finetune_s, 1), "demo_args": demo_args,
              "command": "python benchmarks/demo_seeds.py " + " ".join(sys.argv[1:]),
              "wall_s": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    C.write_json(os.path.join(out, "demo_seeds.json"), result)
    print(json.dumps({k: result[k] for k in ("bleu", "gain", "noise_sd", "wins_beyond_noise")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
