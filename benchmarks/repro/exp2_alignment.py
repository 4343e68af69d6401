"""Experiment 2 (alignment): sentence-retrieval P@1, both directions, on
FLORES-200 devtest, Tatoeba-Challenge test and Multi30k test_2016_flickr,
de-en and fr-en (never trained on), for a random model,
MLM only, MLM+TLM, and each of the two followed by post-pretraining
alignment (Pan et al. 2021: TLM + MoCo contrastive sentence alignment,
``--task xlm_align``; Pan et al. align an MLM-only model, XLM-R).

    python benchmarks/repro/exp2_alignment.py            # default preset
    python benchmarks/repro/exp2_alignment.py --smoke    # 1-3 min, proves only that it runs

Data: en/de/fr monolingual from disjoint thirds of Multi30k train + WMT
news 2008-2013, de-en and en-fr pairs from all of it (common.multilingual_text).
``--set data=varied`` adds later WMT news sets and the Tatoeba-Challenge
pairs that share no sentence with any test set, so that fewer of the
parallel pairs are image captions.
Each seed repeats the whole pipeline (pretraining seed = seed). The
alignment stages add ``align_updates`` updates (at ``align_lr``) on top
of MLM's or MLM+TLM's; ``lr`` is the pretraining learning rate.

Besides exp2_alignment.json/png (plain cosine retrieval, as in XTREME), it
writes exp2_alignment_centred.json/png: the same P@1 after subtracting each
language's mean vector (Libovický et al. 2020), taken over the test file
itself, and for FLORES also over 2,000 lines of that language's training
text; and exp2_language_offset.json/png: the cosine between the two
languages' mean vectors, which tells a language offset apart from a worse
language-neutral part when raw P@1 falls.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

PRESETS = {
    "smoke": dict(arch="xlm_tiny", vocab_size=1000, mono_limit=400, para_limit=400, valid_limit=100,
                  tokens_per_sample=64, batch_size=8, pretrain_updates=30, lr=5e-4, align_updates=20, align_lr=1e-3,
                  align_queue=64, retrieval_layers=[2], retrieval_max=100, tlm_double=0, data="base", seeds="1"),
    "default": dict(arch="xlm_mini", vocab_size=8000, mono_limit=0, para_limit=0, valid_limit=1000,
                    tokens_per_sample=128, batch_size=16, pretrain_updates=1000, lr=5e-4,
                    align_updates=1000, align_lr=1e-3, align_queue=1024, retrieval_layers=[2, 4], retrieval_max=0,
                    tlm_double=0, data="base", seeds="1,2,3"),
}
MLM = "mlm:" + ",".join(C.XL_LANGS)
TLM = "tlm:" + ",".join(C.XL_PAIRS)
# One MLM+TLM update steps on the sum of both objectives' losses, so its MLM
# part learns more slowly per update than MLM-only (3,000 updates at lr 1e-3:
# MLM loss 8.4 vs 8.0 bits). --set tlm_double=1 adds MLM+TLM at twice the
# updates, which brings its MLM loss to MLM-only's (docs/results.md).
TLM_2X = "MLM+TLM 2x upd."


def align(steps, data, save_dir, seed, start, cfg):
    """Post-pretraining alignment (``xlm_align``: TLM + MoCo InfoNCE on
    the parallel pairs, input shuffling) for ``align_updates`` more updates
    from the checkpoint ``start``."""
    return C.pretrain(
        steps, data, save_dir, seed, cfg["align_updates"], "tlm", dict(cfg, lr=cfg["align_lr"]), task="xlm_align",
        extra=["--finetune-from-model", start, "--align-weight", "1", "--align-temperature", "0.1",
               "--align-queue-size", str(cfg["align_queue"]), "--align-momentum", "0.99",
               "--align-shuffle-rate", "0.2", "--align-pooling", "mean"])


def main(argv=None):
    args = C.parse_args(__doc__, PRESETS, argv)
    cfg, out, t0 = args.cfg, C.out_dir(args, "exp2_alignment"), time.time()
    steps = C.Steps()
    mono, para = C.multilingual_text(out, cfg)  # mono train text also gives FLORES' second centring its means
    data = C.prepare(steps, os.path.join(out, "data"), mono, para, cfg["vocab_size"])
    names = ["random", "MLM", "MLM+align", "MLM+TLM", "MLM+TLM+align"] + [TLM_2X] * bool(cfg["tlm_double"])
    rows = {name: {} for name in names}
    centred = {name: {} for name in names}
    offsets = {name: {} for name in names}
    for seed in args.seed_list:
        run = lambda name: os.path.join(out, "runs", name, f"seed{seed}")  # noqa: E731
        ckpts = {
            "random": C.random_checkpoint(steps, data, run("random"), seed, MLM, cfg),
            "MLM": C.pretrain(steps, data, run("MLM"), seed, cfg["pretrain_updates"], MLM, cfg),
            "MLM+TLM": C.pretrain(steps, data, run("MLM+TLM"), seed, cfg["pretrain_updates"], f"{MLM} {TLM}", cfg),
        }
        for start in ("MLM+TLM", "MLM"):
            ckpts[start + "+align"] = align(steps, data, run(start + "+align"), seed, ckpts[start], cfg)
        if cfg["tlm_double"]:
            ckpts[TLM_2X] = C.pretrain(steps, data, run("MLM+TLM-2x"), seed, 2 * cfg["pretrain_updates"],
                                       f"{MLM} {TLM}", cfg)
        for name, ckpt in ckpts.items():
            C.eval_retrieval(steps, ckpt, run(name), cfg, rows[name], out)
            C.eval_retrieval(steps, ckpt, run(name), cfg, centred[name], out, center="self", cosines=offsets[name])
            C.eval_retrieval(steps, ckpt, run(name), cfg, centred[name], out, center=mono["train"], only=("FLORES",))
    C.report("exp2_alignment", "exp2_alignment.py", args, out, "Retrieval P@1 (%)", "P@1 (%)",
             C.retrieval_groups(cfg), rows, t0=t0, steps=steps,
             extra={"retrieval_sentences": cfg["retrieval_max"] or "FLORES 1012, Tatoeba 1000",
                    "note": "X+align = X's checkpoint then align_updates more updates (xlm_align, TLM + InfoNCE)"})
    groups = C.retrieval_groups(cfg)
    for layer in cfg["retrieval_layers"]:
        groups[f"FLORES layer {layer}, training-text means"] = [
            c + C.TEXT_MEANS for c in groups[f"FLORES layer {layer}"]]
    C.report("exp2_alignment_centred", "exp2_alignment.py", args, out, "Retrieval P@1 (%), language-centred",
             "P@1 (%)", groups, centred, extra={
                 "centring": "each language's mean vector subtracted (Libovický et al. 2020): the mean over the "
                 "test file's own sentences; in the 'training-text means' groups the mean over 2,000 evenly "
                 "spread lines of that language's monolingual training text"})
    C.report("exp2_language_offset", "exp2_alignment.py", args, out,
             "Cosine between the two languages' mean vectors", "cosine", C.language_offset_groups(cfg), offsets,
             digits=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
